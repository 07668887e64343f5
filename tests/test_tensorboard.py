"""run.sh --tensorboard: SpeechBrain's TensorboardLogger where the optional package is installed, and
a clear stop with the install command (one that works from a recipe folder) where it is not."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

from serkit.training import tensorboard

HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def test_the_option_works_or_says_how_to_install_it(tmp_path):
    result = subprocess.run([sys.executable, "-m", "serkit.training.tensorboard"], capture_output=True, text=True)
    if not HAVE_TENSORBOARD:
        assert result.returncode == 1
        assert '../../tools/venv/bin/python -m pip install "tensorboard>=2"' in result.stderr
        assert "Traceback" not in result.stderr
        return
    assert result.returncode == 0, result.stderr
    tb_logger = tensorboard.make_logger(tmp_path)
    tensorboard.log_epoch(tb_logger, {"epoch": 1, "train_loss": 1.5, "valid_loss": 1.2, "valid_UA": 0.4,
                                      "valid_PER": None})
    tb_logger.writer.flush()
    assert list((tmp_path / tensorboard.TENSORBOARD_DIR).glob("events.out.tfevents.*"))
