"""Stage 4: score an experiment and write its section of the recipe's RESULTS.md.

Usage::

    python -m serkit.bin.score --exp exp/w2v2_mtl_4class_lambda0.1_seed1/loso --results RESULTS.md \\
        [--config ../../conf/w2v2_mtl.yaml] [--overrides conf/w2v2_mtl.yaml] [--command "./run.sh ..."] \\
        [--folds data/folds/loso] [--data data/all] [--n_resamples 1000] [--classes ang,hap,sad,neu] \\
        [--allow-partial]

Writes ``<exp>/scores/`` (summary.json, confusion matrices, figures) and prints the score table.
With ``--data`` (the data directory, for its ``utt2spk``) the pooled WA and UA get 95 % confidence
intervals from a bootstrap over speakers (``--n_resamples``, default 1000).
"""
from __future__ import annotations

import argparse
import shlex
import sys

from serkit.bin import one_line_errors, setup_logging
from serkit.scoring.results_md import experiment_key, experiment_section, fold_table, update_results
from serkit.scoring.scoring import score_experiment
from serkit.scoring.stats import N_RESAMPLES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serkit.bin.score",
        description="Score exp/<tag>/<protocol> (all folds), write scores/ and a RESULTS.md section.")
    parser.add_argument("--exp", required=True, help="experiment folder exp/<tag>/<protocol> holding fold<NN>/")
    parser.add_argument("--results", required=True, help="the recipe's RESULTS.md (created if absent)")
    parser.add_argument("--config", help="training config file to record in RESULTS.md")
    parser.add_argument("--overrides", help="config overrides used for training: an override file (shown with its contents) or a string recorded as given")
    parser.add_argument("--command", help="the training command line, recorded as given")
    parser.add_argument("--folds", help="data/folds/<protocol>: the expected folds (default: the exp's fold folders)")
    parser.add_argument("--data", help="the data directory (data/all): its utt2spk gives the pooled figures "
                                       "speaker-bootstrap confidence intervals (default: no intervals)")
    parser.add_argument("--n_resamples", type=int, default=N_RESAMPLES,
                        help="bootstrap resamples of speakers (default %(default)s)")
    parser.add_argument("--classes", help="comma-separated class labels in index order "
                                          "(default: model_config.json, else the p_<class> columns)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="score even if some folds have no test_predictions.tsv (they are listed as missing)")
    return parser


@one_line_errors("score")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    classes = [c for c in args.classes.split(",") if c] if args.classes else None
    scored_with = shlex.join(["python", "-m", "serkit.bin.score", *(sys.argv[1:] if argv is None else argv)])
    summary = score_experiment(args.exp, classes=classes, allow_partial=args.allow_partial, folds_dir=args.folds,
                                 data_dir=args.data, n_resamples=args.n_resamples)
    section = experiment_section(summary, args.results, config=args.config, overrides=args.overrides,
                                 command=args.command, scored_with=scored_with)
    update_results(args.results, experiment_key(summary), section)
    print(f"## {experiment_key(summary)} (figures in %)\n")
    print(fold_table(summary))
    print(f"\nwrote {args.exp}/scores/ and the section '{experiment_key(summary)}' of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
