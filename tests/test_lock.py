"""Tests of the per-fold lock (serkit.lock) and its use by serkit.bin.train: real processes, real flock."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_corpus import noisy_tones, write_tiny_corpus

from serkit.bin import train as train_cli
from serkit.lock import FolderLocked, folder_lock
from serkit.model import build_tiny_w2v2

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf" / "w2v2_mtl.yaml"
# Holds the lock of the folder named by argv[1], says so on stdout, then waits to be killed.
HOLDER = ("import sys, time\n"
          "from serkit.lock import folder_lock\n"
          "with folder_lock(sys.argv[1]):\n"
          "    print('locked', flush=True)\n"
          "    time.sleep(120)\n")


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path/fold``'s lock; killed (-9) at the end if still alive."""
    folder = tmp_path / "fold"
    folder.mkdir()
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert process.stdout.readline() == "locked\n"
    yield folder, process
    process.kill()
    process.wait()


def test_lock_names_its_holder_and_is_released(tmp_path):
    with folder_lock(tmp_path) as path:
        info = json.loads(path.read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["since"]
        with pytest.raises(FolderLocked):  # even the same process cannot take it twice
            with folder_lock(tmp_path):
                pass
    with folder_lock(tmp_path):  # released at the end of the block
        pass


def test_second_run_is_refused_naming_the_holder(holder):
    folder, process = holder
    with pytest.raises(FolderLocked) as refused:
        with folder_lock(folder):
            pass
    message = str(refused.value)
    assert f"{folder} is locked by pid {process.pid} on {socket.gethostname()} since 20" in message
    assert "another training of this folder is running" in message


def test_a_dead_holder_does_not_block(holder):
    """kill -9 leaves the lock file with the dead pid in it; the kernel has dropped the flock."""
    folder, process = holder
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads((folder / ".lock").read_text())["pid"] == process.pid  # stale content stays
    with folder_lock(folder) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_train_refuses_a_fold_that_another_run_holds(holder, tmp_path, capsys):
    folder, process = holder
    paths = write_tiny_corpus(tmp_path / "corpus", 8, seconds=lambda i: 0.5, waveform=noisy_tones(200, 150),
                              splits={"train": range(0, 4), "valid": range(4, 6), "test": range(6, 8)})
    encoder = build_tiny_w2v2(tmp_path / "tiny_w2v2")
    args = [str(CONF), "--data_dir", str(paths["data"]), "--fold_dir", str(paths["fold"]),
            "--lang_dir", str(paths["lang"]), "--output_folder", str(folder), "--encoder_source", str(encoder),
            "--number_of_epochs", "1", "--num_workers", "0", "--device", "cpu", "--noprogressbar"]
    start = time.monotonic()
    assert train_cli.main(args) == 1
    assert time.monotonic() - start < 60
    assert f"is locked by pid {process.pid} on {socket.gethostname()}" in capsys.readouterr().err
    assert not (folder / "save").exists()  # nothing trained, no checkpoint touched
