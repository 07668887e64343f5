"""Export one trained fold as a self-contained model folder (stage 5).

Usage::

    python -m serkit.bin.export_model --exp exp/w2v2_mtl/loso --fold best --out exp/w2v2_mtl/export
    python -m serkit.bin.export_model --exp exp/w2v2_mtl/loso --fold fold03 --out DIR --checkpoint last

``--fold best`` (the default) picks the fold whose best checkpoint has the highest *validation*
UA; test scores are never used to choose. Prints the folder it wrote.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from serkit.bin import one_line_errors, setup_logging
from serkit.serving.export import best_fold, export_model

logger = logging.getLogger(__name__)
PROG = "serkit.bin.export_model"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Write an export folder (model.pt, config.json, "
                                     "classes.txt, tokens.txt) from a trained fold.")
    parser.add_argument("--exp", required=True, help="experiment protocol directory, e.g. exp/<tag>/loso")
    parser.add_argument("--fold", default="best",
                        help="fold directory name (e.g. fold01) or 'best' = highest validation UA (default)")
    parser.add_argument("--checkpoint", default="best",
                        help="'best' (validation UA, default), 'last', or a CKPT+... directory name")
    parser.add_argument("--out", required=True, help="export folder to write")
    return parser.parse_args(argv)


@one_line_errors(PROG)
def main(argv=None) -> int:
    setup_logging(timestamps=False)
    args = parse_args(argv)
    fold_dir = best_fold(args.exp) if args.fold == "best" else Path(args.exp) / args.fold
    out_dir = export_model(fold_dir, args.out, checkpoint=args.checkpoint)
    print(f"exported {fold_dir} to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
