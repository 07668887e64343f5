"""Stage 0 of every recipe: a corpus release -> data directory (docs/formats.md).

Usage::

    python -m serkit.bin.prepare_corpus --corpus ravdess --root /corpora/RAVDESS --out data/all
    python -m serkit.bin.prepare_corpus --corpus emodb --root R --out D --class-map 4class --no-strict
    python -m serkit.bin.prepare_corpus --list      # registered corpora and their shipped class maps

Writes wav.scp text utt2spk spk2utt utt2emo utt2dur utt2raw_emo classes language (plus utt2gender,
utt2session, utt2sentence, utt2split, utt2sampa where the corpus knows them) and prep_report.txt
(every skipped file with its reason, the audio audit). Exit status: 0 done, 1 preparation failed
(wrong root, count check of a full release, invalid output), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import logging
import sys

from serkit.bin import one_line_errors, setup_logging
from serkit.corpora import CORPORA, corpus_names, get_preparer, shipped_class_maps

logger = logging.getLogger(__name__)
PROG = "prepare_corpus"


def build_parser(prog: str = PROG, corpus: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Prepare a data directory from a corpus release.")
    if corpus is None:
        parser.add_argument("--corpus", choices=corpus_names(), help="which corpus (see --list)")
        parser.add_argument("--list", action="store_true", help="list corpora and their shipped class maps")
    parser.add_argument("--root", help="the corpus release folder (see docs/porting.md for each layout)")
    parser.add_argument("--out", help="data directory to write (overwritten if it exists)")
    parser.add_argument("--class-map", default=None,
                        help="a shipped map of the corpus (see --list) or a YAML file (default: the corpus's first "
                             "shipped map; iemocap: 4class)")
    strict = parser.add_mutually_exclusive_group()
    strict.add_argument("--strict", dest="strict", nargs="?", const=True, default=None, type=_truth,
                        metavar="true|false", help="always check the counts against the published full-release "
                        "counts (--strict=false is --no-strict: how a recipe's run.sh passes either on)")
    strict.add_argument("--no-strict", dest="strict", action="store_false",
                        help="never check the counts (default: check when the copy looks like a full release)")
    return parser


def _truth(text: str) -> bool:
    """``--strict=true|false``: the value form lets the shell stages pass either switch through one option."""
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def default_class_map(corpus: str) -> str:
    """IEMOCAP's historic default is 4class; other corpora default to their full inventory."""
    maps = shipped_class_maps(corpus)
    if corpus == "iemocap":
        return "4class"
    return max(maps, key=lambda name: int("".join(ch for ch in name if ch.isdigit()) or 0))


def run(argv, prog: str = PROG, corpus: str | None = None) -> int:
    parser = build_parser(prog, corpus)
    args = parser.parse_args(argv)
    setup_logging(timestamps=False)
    if corpus is None and args.list:
        for name in corpus_names():
            print(f"{name}: class maps {', '.join(shipped_class_maps(name))} (default {default_class_map(name)}); "
                  f"module {CORPORA[name][0].split(':')[0]}")
        return 0
    corpus = corpus or args.corpus
    if not corpus or not args.root or not args.out:
        parser.error("--corpus, --root and --out are required")
    report = get_preparer(corpus)(args.root, args.class_map or default_class_map(corpus), args.out,
                                  strict=args.strict)
    for line in report.summary_lines():
        logger.info("%s", line)
    for line in report.skipped.lines(max_examples=3) + report.notes.lines(max_examples=3):
        logger.info("%s", line)
    logger.info("full report: %s", report.out_dir / "prep_report.txt")
    return 0


@one_line_errors(PROG)
def main(argv=None) -> int:
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
