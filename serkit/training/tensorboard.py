"""Live training curves (``run.sh --tensorboard``): SpeechBrain's ``TensorboardLogger`` per fold.

Per-epoch figures already go to each fold's log and ``history.jsonl``; TensorBoard is for watching
the curves of a long run while it trains (``tensorboard --logdir exp/<tag>/<protocol>``). It is an
optional extra (``pip install -e ".[tensorboard]"``), so the option checks for it before stage 3
starts and says how to install it, rather than failing inside every fold's job.

Usage: ``python -m serkit.training.tensorboard`` exits 0 when TensorBoard can be used, else 1 with the fix.
"""
from __future__ import annotations

import sys
from pathlib import Path

from serkit.errors import SerkitError

#: Each fold's event files: ``exp/<tag>/<protocol>/foldNN/tensorboard/``.
TENSORBOARD_DIR = "tensorboard"
INSTALL_HINT = ("run.sh --tensorboard needs the tensorboard package, which serkit's environment lacks; install the "
                "optional extra from the recipe folder: ../../tools/venv/bin/python -m pip install \"tensorboard>=2\" "
                "(or run without --tensorboard: the curves are also in exp/<tag>/<protocol>/scores/ after stage 4)")


def check_available() -> None:
    """Raise :class:`SerkitError` with the install command when TensorBoard's writer cannot be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (what SpeechBrain's logger imports)
    except ImportError:
        raise SerkitError(INSTALL_HINT) from None


def make_logger(output_folder: str | Path):
    """SpeechBrain's TensorboardLogger writing into ``<output_folder>/tensorboard``."""
    check_available()
    from speechbrain.utils.train_logger import TensorboardLogger
    return TensorboardLogger(str(Path(output_folder) / TENSORBOARD_DIR))


def log_epoch(tb_logger, record: dict) -> None:
    """One history.jsonl record as TensorBoard scalars: ``train_*`` and ``valid_*`` numbers by epoch."""
    def numbers(prefix: str) -> dict:
        return {key[len(prefix):]: value for key, value in record.items()
                if key.startswith(prefix) and isinstance(value, (int, float)) and not isinstance(value, bool)}
    tb_logger.log_stats({"epoch": record["epoch"]}, train_stats=numbers("train_"), valid_stats=numbers("valid_"))


def main() -> int:
    try:
        check_available()
    except SerkitError as error:
        print(f"serkit.training.tensorboard: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
