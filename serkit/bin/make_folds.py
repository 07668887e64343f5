"""Stage 2: cross-validation folds for a data directory.

Usage::

    python -m serkit.bin.make_folds --data data/iemocap --out data/folds
    python -m serkit.bin.make_folds --data data/iemocap --out data/folds --protocols loso --seed 1
    python -m serkit.bin.make_folds --data data/all --out data/folds --protocols speaker_kfold --k 5

Writes ``OUT/<protocol>/fold<NN>/{train,valid,test}``, ``OUT/<protocol>/folds.tsv``,
``protocol.json`` (what the folds are, for RESULTS.md) and ``leakage.txt`` (docs/formats.md),
then checks every fold for leakage. See :mod:`serkit.data.folds` for the protocols.
"""
from __future__ import annotations

import argparse
import sys

from serkit.bin import one_line_errors, setup_logging
from serkit.data.folds import PROTOCOLS, SESSION_PROTOCOLS, make_folds

PROG = "python -m serkit.bin.make_folds"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Write train/valid/test folds per protocol.")
    parser.add_argument("--data", required=True, help="data dir with utt2spk and utt2emo (and what the protocol "
                        "needs: utt2session, utt2split, utt2sentence)")
    parser.add_argument("--out", required=True, help="folds dir, e.g. data/folds")
    parser.add_argument("--protocols", default="default",
                        help=f"comma-separated list of {','.join(PROTOCOLS)}; 'default' = {','.join(SESSION_PROTOCOLS)} "
                             "when the data dir has utt2session (default: default)")
    parser.add_argument("--k", type=int, default=5, help="folds of the k-fold protocols (default 5)")
    parser.add_argument("--seed", type=int, default=1, help="seed for every random choice (default 1)")
    return parser


@one_line_errors("make_folds")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    built = make_folds(args.data, args.out, protocols, args.seed, k=args.k)
    for protocol, folds in built.items():
        print(f"{protocol}: {len(folds)} fold(s) in {args.out}/{protocol}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
