"""Stage 1: emotion-phoneme labels for a data directory.

Usage::

    python -m serkit.bin.make_emophones --data data/iemocap --lang data/lang

Writes ``utt2arpabet``, ``utt2phn`` and ``emophone_report.txt`` into the data dir and
``tokens.txt`` into the lang dir (docs/formats.md). Works offline; a rerun recomputes and rewrites
the same files.
"""
from __future__ import annotations

import argparse
import sys

from serkit.bin import one_line_errors, setup_logging
from serkit.targets.ctc import make_tokens

PROG = "python -m serkit.bin.make_emophones"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Transcripts -> ARPAbet (offline G2P) -> emotion-phoneme tokens.")
    parser.add_argument("--data", required=True, help="data dir with text, utt2emo and classes")
    parser.add_argument("--lang", required=True, help="lang dir that gets tokens.txt (e.g. data/lang)")
    return parser


@one_line_errors("make_emophones")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    print(make_tokens("emophone", args.data, args.lang))
    return 0


if __name__ == "__main__":
    sys.exit(main())
