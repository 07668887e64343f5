"""Stage 0 of the IEMOCAP recipe: corpus tree -> data directory (docs/formats.md).

Usage::

    python -m serkit.bin.prepare_iemocap --root /corpora/IEMOCAP_full_release --out data/iemocap
    python -m serkit.bin.prepare_iemocap --root ROOT --out DIR --class-map 6class --no-strict

Writes wav.scp text utt2spk spk2utt utt2emo utt2gender utt2dur utt2raw_emo utt2session classes and
prep_report.txt (every skipped item with its file). Exit status: 0 done, 1 preparation failed
(wrong root, count check, invalid output), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import logging
import sys

from serkit.bin import one_line_errors, setup_logging
from serkit.corpora import shipped_class_maps
from serkit.corpora.iemocap import prepare_iemocap

logger = logging.getLogger(__name__)
PROG = "prepare_iemocap"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Prepare an IEMOCAP data directory.")
    parser.add_argument("--root", required=True, help="the IEMOCAP_full_release folder (holds Session1..5)")
    parser.add_argument("--out", required=True, help="data directory to write (overwritten if it exists)")
    parser.add_argument("--class-map", default="4class",
                        help=f"shipped map ({', '.join(shipped_class_maps())}) or a YAML file (default: 4class)")
    strict = parser.add_mutually_exclusive_group()
    strict.add_argument("--strict", dest="strict", action="store_true", default=None,
                        help="always check the counts against the published full-release counts")
    strict.add_argument("--no-strict", dest="strict", action="store_false",
                        help="never check the counts (default: check when all 5 sessions and at least 140 dialogs are present: a full release, which must then have 151)")
    return parser.parse_args(argv)


@one_line_errors(PROG)
def main(argv=None) -> int:
    setup_logging(timestamps=False)
    args = parse_args(argv)
    report = prepare_iemocap(args.root, args.out, class_map=args.class_map, strict=args.strict)
    for line in report.summary_lines():
        logger.info("%s", line)
    for line in report.skipped.lines(max_examples=3) + report.notes.lines(max_examples=3):
        logger.info("%s", line)
    logger.info("full report: %s", report.out_dir / "prep_report.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
