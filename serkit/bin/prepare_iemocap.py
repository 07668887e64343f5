"""Stage 0 of the IEMOCAP recipe: an alias of ``prepare_corpus --corpus iemocap``.

Usage::

    python -m serkit.bin.prepare_iemocap --root /corpora/IEMOCAP_full_release --out data/iemocap
    python -m serkit.bin.prepare_iemocap --root ROOT --out DIR --class-map 6class --no-strict

Writes wav.scp text utt2spk spk2utt utt2emo utt2gender utt2dur utt2raw_emo utt2session classes
language and prep_report.txt (every skipped item with its file). Exit status: 0 done, 1 preparation
failed (wrong root, count check, invalid output), 2 bad arguments.
"""
from __future__ import annotations

import sys

from serkit.bin import one_line_errors
from serkit.bin.prepare_corpus import run

PROG = "prepare_iemocap"


@one_line_errors(PROG)
def main(argv=None) -> int:
    return run(argv, prog=PROG, corpus="iemocap")


if __name__ == "__main__":
    sys.exit(main())
