"""Build a tiny random wav2vec 2.0 in save_pretrained layout, for offline tests and smoke runs.

Usage::

    python -m serkit.bin.make_tiny_w2v2 --out exp/tiny_w2v2 [--seed 0]

Point a config's ``encoder_source`` at the folder. Rerunning with the same seed does nothing.
"""
from __future__ import annotations

import argparse
import sys

from serkit.bin import one_line_errors, setup_logging
from serkit.errors import SerkitError

PROG = "make_tiny_w2v2"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Write a tiny randomly initialised wav2vec 2.0 "
                                     "(config.json, model.safetensors, preprocessor_config.json) to a folder.")
    parser.add_argument("--out", required=True, help="output folder (created; must not hold anything else)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default: 0)")
    return parser.parse_args(argv)


@one_line_errors(PROG, errors=(SerkitError, OSError))
def main(argv=None) -> int:
    setup_logging(timestamps=False)
    args = parse_args(argv)
    from serkit.model.tiny_w2v2 import build_tiny_w2v2  # imported here: transformers is slow to import

    path = build_tiny_w2v2(args.out, seed=args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
