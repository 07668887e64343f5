"""Ensemble the seeds of each experiment: mean test posteriors, written as an experiment of its own.

Usage::

    python -m serkit.bin.ensemble exp/tim_net_8class_seed1/loso exp/tim_net_8class_seed2/loso ...

Runs whose tags differ only in ``_seed<N>`` are grouped; each group of two or more seeds becomes
``exp/<tag without the seed>_ens_seed1-2/<protocol>`` (serkit.scoring.ensemble), whose folder is printed,
one a line, for stage 4 to score. Other folders are ignored.
"""
from __future__ import annotations

import argparse
import logging
import sys

from serkit.bin import one_line_errors, setup_logging
from serkit.scoring.ensemble import ensemble_groups, write_ensemble

logger = logging.getLogger("serkit.scoring.ensemble")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serkit.bin.ensemble", description=__doc__.split("\n")[0])
    parser.add_argument("exp_dirs", nargs="+", metavar="EXP_DIR", help="experiment folders exp/<tag>/<protocol>")
    return parser


@one_line_errors("ensemble")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    for out_dir, seed_dirs in ensemble_groups(args.exp_dirs).items():
        folds = write_ensemble(seed_dirs, out_dir)
        print(out_dir)
        logger.info("%s: mean posterior of %d seeds over %d folds", out_dir, len(seed_dirs), len(folds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
