"""Stage 1: make what the planned experiments' targets need from the data directory.

Usage::

    python -m serkit.bin.make_targets --data data/all --lang data/lang [--bpe_units 128] \\
        --models "w2v2_mtl tim_net" [--lambdas "0 0.1"] --class_map 4class --seed 1 [--seeds "1 2 3"] \\
        --conf_dir ../../conf --recipe_conf_dir conf [--overrides F] [--ctc_targets "K ..."] [--precision P]

The plan options are :mod:`serkit.bin.plan_experiments`'. Each target that has a stage 1
(:meth:`serkit.targets.base.Target.make_stage1`) makes what the experiments need of it, once each,
in the order of the experiments, and says so in the log; a target no experiment needs is skipped with
its reason. A rerun recomputes and rewrites the same files.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from serkit.bin import one_line_errors, plan_experiments, setup_logging
from serkit.labels.ctc_targets import BPE_UNITS
from serkit.training.experiments import Experiment
from serkit.targets.registry import target_classes

PROG = "python -m serkit.bin.make_targets"


def build_parser():
    parser = plan_experiments.build_parser()
    parser.prog, parser.description = PROG, __doc__.split("\n")[0]
    parser.add_argument("--data", required=True, help="the data dir stage 0 made (data/all)")
    parser.add_argument("--bpe_units", type=int, default=BPE_UNITS, help="BPE vocabulary size of bpe CTC targets")
    return parser


def make_targets(experiments: list[Experiment], data_dir: str | Path, lang: str | Path, options: dict) -> None:
    """Run each target's stage 1 for what ``experiments`` need, logging each step as the recipe's stages do."""
    for cls in target_classes():
        if not cls.stage1_title:
            continue
        needs = dict.fromkeys(need for e in experiments for name, need in e.stage1 if name == cls.name)
        if not needs:
            log(f"Stage 1: {cls.stage1_title}: skipped ({cls.stage1_skipped})")
        for need in needs:
            log(f"Stage 1: {cls.stage1_title} ({need})")
            print(cls.make_stage1(need, Path(data_dir), Path(lang), options), flush=True)


def log(line: str) -> None:
    """A stage line with its time, as ser.sh's ``log`` writes it."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", flush=True)


@one_line_errors("make_targets")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    make_targets(plan_experiments.planned(args), args.data, args.lang, {"bpe_units": args.bpe_units})
    return 0


if __name__ == "__main__":
    sys.exit(main())
