"""Check (and optionally repair) a Kaldi-style data directory.

Usage::

    python -m serkit.bin.validate_data_dir data/iemocap          # report every problem, exit 1 if any
    python -m serkit.bin.validate_data_dir data/iemocap --fix    # sort, drop incomplete utterances,
                                                                 # rebuild spk2utt, then validate
    python -m serkit.bin.validate_data_dir data/all --complete   # also utt2dur etc. and the wav files

Exit status: 0 valid (after fixing, with --fix), 1 problems remain, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import sys

from serkit.bin import one_line_errors, setup_logging
from serkit.data.datadir import fix_data_dir, validate_data_dir

PROG = "validate_data_dir"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Validate a serkit/Kaldi data directory "
                                     "(docs/formats.md); with --fix, repair what can be repaired first.")
    parser.add_argument("data_dir", help="the data directory (wav.scp, utt2spk, ...)")
    parser.add_argument("--fix", action="store_true",
                        help="sort files, keep only utterances present (and valid) in every file, "
                             "rebuild spk2utt from utt2spk")
    parser.add_argument("--complete", action="store_true",
                        help="also require utt2emo, utt2dur and classes, and check that every wav.scp path "
                             "exists (what stage 0 checks before later stages run)")
    return parser.parse_args(argv)


@one_line_errors(PROG)
def main(argv=None) -> int:
    setup_logging(timestamps=False)
    args = parse_args(argv)
    if args.fix:
        counts = fix_data_dir(args.data_dir)
        print(f"{PROG}: {args.data_dir}: fixed; kept {counts['kept']} utterance(s), "
              f"removed {counts['removed']}")
        for reason, count in counts["removed_by_reason"].items():
            print(f"  removed {count}: {reason}")
    summary = validate_data_dir(args.data_dir, complete=args.complete)
    print(f"{PROG}: {args.data_dir} is valid ({summary['utterances']} utterances, "
          f"{summary['speakers']} speakers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
