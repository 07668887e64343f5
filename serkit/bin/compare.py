"""Compare scored experiments in one table (e.g. the lambda ablation) and add it to RESULTS.md.

Usage::

    python -m serkit.bin.compare --results RESULTS.md --title "lambda ablation" [--n_resamples 1000] \\
        exp/w2v2_mtl_4class_lambda0_seed1/loso exp/w2v2_mtl_4class_lambda0.1_seed1/loso ...

Each experiment must have been scored (``scores/summary.json``). Rows keep the families in the order
given and, within a family, go by increasing option value (e.g. the lambda in the experiments'
model_config.json), so an ablation reads top to bottom. Runs that
differ only in their seed (``..._seed1``, ``..._seed2``) are one row (mean ± std over seeds). Each row
is tested against the reference row (the eGeMAPS floor when present, else the first) with a paired
speaker-level permutation test, Holm-corrected, and marked ``*`` where p < 0.05 (serkit.scoring.comparison).
The section also shows the rows' pooled UA with their intervals and fold UAs as a picture,
``figures/<title as a slug>.png`` next to RESULTS.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serkit.bin import one_line_errors, setup_logging
from serkit.scoring.results_md import comparison_key, comparison_section, update_results
from serkit.scoring.scoring import load_summary
from serkit.scoring.stats import N_RESAMPLES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serkit.bin.compare",
        description="One comparison table of scored experiments, printed and written to RESULTS.md.")
    parser.add_argument("--results", required=True, help="the recipe's RESULTS.md (created if absent)")
    parser.add_argument("--title", required=True, help="section title, e.g. 'lambda ablation'")
    parser.add_argument("--n_resamples", type=int, default=N_RESAMPLES,
                        help="resamples of the paired permutation tests and of seed groups' bootstrap (default %(default)s)")
    parser.add_argument("exp_dirs", nargs="+", metavar="EXP_DIR", help="scored experiment folders exp/<tag>/<protocol>")
    return parser


@one_line_errors("compare")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    summaries = [load_summary(exp_dir) for exp_dir in args.exp_dirs]
    key = comparison_key(args.title)
    link = f"figures/{key.split(':', 1)[1]}.png"
    section = comparison_section(args.title, summaries, args.n_resamples,
                                 figure=(Path(args.results).parent / link, link))
    update_results(args.results, key, section)
    print(section)
    print(f"wrote the section '{key}' of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
