"""Generate the synthetic mini IEMOCAP corpus (espeak-ng speech in the IEMOCAP_full_release layout).

Usage: python -m serkit.bin.make_mini_iemocap --out DIR [--seed 1] [--utts-per-speaker 24]
       [--others-per-speaker 4] [--dialogs-per-session 4] [--jobs N]

Writes DIR/IEMOCAP_full_release, DIR/manifest.tsv (ground truth) and DIR/.done; a rerun with the
same parameters does nothing. See serkit/synth/mini_iemocap.py for the corpus design.
"""
from __future__ import annotations

import argparse
import logging
import sys

from serkit.bin import one_line_errors, setup_logging

# serkit.synth.mini_iemocap (and with it torch) is imported inside main(): multiprocessing re-imports
# the __main__ module in every espeak-ng worker process, and workers must start fast.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serkit.bin.make_mini_iemocap",
        description="Write a small synthetic corpus in the exact IEMOCAP_full_release layout, spoken by espeak-ng.",
    )
    parser.add_argument("--out", required=True, help="output folder; receives IEMOCAP_full_release/ and manifest.tsv")
    parser.add_argument(
        "--seed", type=int, default=1, help="random seed; the same seed gives identical files (default 1)"
    )
    parser.add_argument(
        "--utts-per-speaker", type=int, default=24,
        help="four-class utterances per speaker, split evenly over neu/hap(+exc)/ang/sad (default 24)",
    )
    parser.add_argument(
        "--others-per-speaker", type=int, default=4,
        help="extra utterances per speaker with codes outside the four classes (fru, xxx, sur, ...; default 4)",
    )
    parser.add_argument(
        "--dialogs-per-session", type=int, default=4, help="dialogs in each of the 5 sessions (default 4)"
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="parallel synthesis processes (default: CPU count, max 8)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    return parser


@one_line_errors("make_mini_iemocap")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(logging.WARNING if args.quiet else logging.INFO)
    from serkit.synth.mini_iemocap import make_mini_iemocap

    root = make_mini_iemocap(
        args.out,
        seed=args.seed,
        utts_per_speaker=args.utts_per_speaker,
        others_per_speaker=args.others_per_speaker,
        dialogs_per_session=args.dialogs_per_session,
        jobs=args.jobs,
        progress=not args.quiet,
    )
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
