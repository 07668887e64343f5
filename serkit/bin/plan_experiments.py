"""Print the experiments a recipe runs in stages 3-5, one tab-separated line each (for ser.sh).

Usage::

    python -m serkit.bin.plan_experiments --models "w2v2_mtl tim_net" [--lambdas "0 0.1"] \\
        --class_map 4class --seed 1 [--seeds "1 2 3"] --conf_dir ../../conf --recipe_conf_dir conf [--overrides F] \\
        [--grid "OPTION=V1,V2 ..."] [--ctc_targets "K ..."] [--precision P] [--encoders "HUB_ID_OR_FOLDER ..."] \\
        [--lang data/lang]

Columns: ``tag  family  config  overrides-file-or-'-'  lang-dir-or-'-'  extra args...``: the lang dir is
the token inventory stage 1 made for the experiment's targets (``-``: it trains none that needs one).
Stage 1 itself is :mod:`serkit.bin.make_targets`, which takes the same options.
"""
from __future__ import annotations

import argparse
import sys

from serkit.bin import one_line_errors
from serkit.training.experiments import Experiment, PlanError, plan
from serkit.targets.registry import stage1_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serkit.bin.plan_experiments", description=__doc__.split("\n")[0])
    parser.add_argument("--models", required=True, help="space-separated family names")
    parser.add_argument("--lambdas", default="", help="space-separated CTC weights (default: each config's)")
    parser.add_argument("--class_map", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--seeds", default="", help="several training seeds, e.g. '1 2 3': one experiment each "
                                                    "(default: --seed)")
    parser.add_argument("--conf_dir", required=True, help="the shared configs (conf/<family>.yaml)")
    parser.add_argument("--recipe_conf_dir", required=True, help="the recipe's per-family override files")
    parser.add_argument("--overrides", help="one override file for every family (replaces the recipe's)")
    parser.add_argument("--grid", default="", help="space-separated OPTION=V1,V2,...: every combination of a family's "
                                                   "own options' values runs as one experiment (e.g. an ablation)")
    parser.add_argument("--ctc_targets", default="", help="CTC target kinds for experiments with a CTC head, "
                                                          "e.g. 'emophone char' (default: each config's)")
    parser.add_argument("--precision", default="", help="train every network in this precision (fp32, bf16, fp16, "
                                                        "auto), named in the experiment (default: each config's)")
    parser.add_argument("--encoders", default="", help="SSL encoders (hub ids or folders) for families with one: "
                                                       "one experiment each, named by the encoder's short name "
                                                       "(default: each config's encoder_source)")
    parser.add_argument("--lang", default="data/lang", help="the recipe's lang dir, under which stage 1 writes "
                                                           "token inventories (default data/lang)")
    return parser


def planned(args: argparse.Namespace) -> list[Experiment]:
    """The experiments the parsed options ask for."""
    seeds = [_seed(text) for text in args.seeds.split()] or args.seed
    return plan(args.models.split(), args.lambdas.split(), args.class_map, seeds, args.conf_dir,
                args.recipe_conf_dir, args.overrides or None, args.ctc_targets.split(), args.precision or None,
                args.grid.split(), args.encoders.split())


@one_line_errors("plan_experiments", exit_code=2)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for e in planned(args):
        lang_dir = stage1_options(e.stage1, args.lang).get("lang_dir", "-")
        print("\t".join([e.tag, e.family, e.config, e.overrides_file or "-", lang_dir, *e.args]))
    return 0


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise PlanError(f"--seeds: {text!r} is not a whole number") from None


if __name__ == "__main__":
    sys.exit(main())
