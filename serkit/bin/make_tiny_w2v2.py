"""Build a tiny random SSL encoder in save_pretrained layout, for offline tests and smoke runs.

Usage::

    python -m serkit.bin.make_tiny_w2v2 --out exp/tiny_w2v2 [--seed 0] [--type wav2vec2]

``--type``: wav2vec2 (default), hubert, wavlm, data2vec-audio or whisper. Point a config's
``encoder_source`` at the folder. Rerunning with the same seed and type does nothing.
"""
from __future__ import annotations

import argparse
import sys

from serkit.bin import one_line_errors, setup_logging
from serkit.errors import SerkitError

PROG = "make_tiny_w2v2"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Write a tiny randomly initialised SSL encoder "
                                     "(config.json, model.safetensors, preprocessor_config.json) to a folder.")
    parser.add_argument("--out", required=True, help="output folder (created; must not hold anything else)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default: 0)")
    parser.add_argument("--type", default="wav2vec2", dest="encoder_type",
                        help="encoder type: wav2vec2 (default), hubert, wavlm, data2vec-audio or whisper")
    return parser.parse_args(argv)


@one_line_errors(PROG, errors=(SerkitError, OSError))
def main(argv=None) -> int:
    setup_logging(timestamps=False)
    args = parse_args(argv)
    from serkit.model.tiny_w2v2 import build_tiny_w2v2  # imported here: transformers is slow to import

    path = build_tiny_w2v2(args.out, seed=args.seed, encoder_type=args.encoder_type)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
