"""Stage 1 for character / BPE CTC targets (``ctc_targets: char`` or ``bpe``).

Usage::

    python -m serkit.bin.make_ctc_targets --targets char --data data/all --lang data/lang_char
    python -m serkit.bin.make_ctc_targets --targets bpe --data data/all --lang data/lang_bpe [--bpe_units 128]

Writes ``utt2char``/``utt2bpe`` into the data dir and ``tokens.txt`` (and ``bpe.model``) into the lang
dir (docs/formats.md). Emotion-phoneme targets come from ``serkit.bin.make_emophones``.
"""
from __future__ import annotations

import argparse
import sys

from serkit.bin import one_line_errors, setup_logging
from serkit.labels.ctc_targets import BPE_UNITS, TRANSCRIPT_KINDS
from serkit.targets.ctc import make_tokens


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serkit.bin.make_ctc_targets",
                                     description="Transcripts -> character or BPE CTC targets.")
    parser.add_argument("--targets", required=True, choices=sorted(TRANSCRIPT_KINDS))
    parser.add_argument("--data", required=True, help="data dir with text (and a language file, default en)")
    parser.add_argument("--lang", required=True, help="lang dir that gets tokens.txt, e.g. data/lang_char")
    parser.add_argument("--bpe_units", type=int, default=BPE_UNITS, help="BPE vocabulary size (bpe only)")
    return parser


@one_line_errors("make_ctc_targets")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    print(make_tokens(args.targets, args.data, args.lang, args.bpe_units))
    return 0


if __name__ == "__main__":
    sys.exit(main())
