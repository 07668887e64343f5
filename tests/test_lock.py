"""Tests of the per-fold lock (serkit.jobs.lock) and its use by serkit.bin.train: real processes, real flock."""
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

from serkit.bin import run_jobs
from serkit.bin import train as train_cli
from serkit.jobs.lock import FolderLocked, folder_lock
from serkit.model import build_tiny_w2v2

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf" / "w2v2_mtl.yaml"
# Holds the lock of the folder named by argv[1], says so on stdout, then waits to be killed.
HOLDER = ("import sys, time\n"
          "from serkit.jobs.lock import folder_lock\n"
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
    # the lock comes before any file of the fold: the running one's log and configuration stay its own
    assert sorted(path.name for path in folder.iterdir()) == [".lock"]


# A job that must run under its launcher's lock: it takes the folder's lock itself, as serkit.bin.train does.
UNDER_LOCK = ("import sys\n"
              "from serkit.jobs.lock import folder_lock\n"
              "with folder_lock(sys.argv[1]):\n"
              "    print('trained under the lock', flush=True)\n")


def test_a_refused_launch_leaves_the_running_jobs_log_alone(holder, tmp_path, monkeypatch, capsys):
    """serkit-run --lock takes the fold's lock before it writes the job log; a fold held by a running
    training is refused on the terminal, naming the holder, and its log and output stay as they were."""
    folder, process = holder
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "log" / "train.fold.log"
    log.parent.mkdir()
    log.write_text("# the running job's header\nepoch 1 | ...\n")
    marker = tmp_path / "second-run-started"
    code = run_jobs.main(["--lock", str(folder), str(log), sys.executable, "-c",
                          f"open({str(marker)!r}, 'w').close()"])
    error = capsys.readouterr().err
    assert code == 1 and not marker.exists()
    assert log.read_text() == "# the running job's header\nepoch 1 | ...\n"
    assert f"job failed (refused: {folder} is locked by pid {process.pid} on {socket.gethostname()} since" in error
    assert "see " not in error  # a refused job has no log of its own to point to


def test_a_job_works_under_its_launchers_lock_and_a_second_launch_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    fold = tmp_path / "exp" / "fold01"
    assert run_jobs.main(["--lock", "exp/foldJOB", "--pad", "2", "JOB=1", "exp/log/train.foldJOB.log",
                          sys.executable, "-c", UNDER_LOCK, "exp/foldJOB"]) == 0
    assert "trained under the lock" in (tmp_path / "exp/log/train.fold01.log").read_text()
    assert (fold / ".lock").read_text() == ""  # released when the job ended
    with folder_lock(fold):  # held by someone else (this test): the job is not started
        assert run_jobs.main(["--lock", "exp/foldJOB", "--pad", "2", "JOB=1", "exp/log/train.foldJOB.log",
                              sys.executable, "-c", UNDER_LOCK, "exp/foldJOB"]) == 1
    assert f"refused: exp/fold01 is locked by pid {os.getpid()}" in capsys.readouterr().err
    assert "trained under the lock" in (tmp_path / "exp/log/train.fold01.log").read_text()


def test_a_failed_job_shows_the_end_of_its_log_on_the_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_jobs.main(["log/job.log", sys.executable, "-c",
                          "import sys; print('serkit.bin.train: error: the real reason'); sys.exit(3)"]) == 1
    error = capsys.readouterr().err
    assert "job failed (code 3); see log/job.log" in error
    assert "the last lines of log/job.log:" in error and "serkit.bin.train: error: the real reason" in error
    assert "# Ended (code 3)" in error


def test_a_slurm_task_is_refused_before_its_log_too(holder, tmp_path):
    """On a cluster the task takes the fold's lock on its node, before it opens the log (requeues append)."""
    from serkit.bin import slurm_task

    folder, process = holder
    log, status = tmp_path / "train.fold01.log", tmp_path / "status.1"
    log.write_text("# the running task's log\n")
    spec = {"cwd": str(tmp_path), "resources": {"gpu": 0, "mem": None, "time": None, "num_threads": 1}}
    task = {"index": 1, "argv": [sys.executable, "-c", "open('started', 'w').close()"], "log": str(log),
            "status": str(status), "lock": str(folder)}
    assert slurm_task.run_task(spec, task) == 75
    assert log.read_text() == "# the running task's log\n" and not (tmp_path / "started").exists()
    reason = json.loads(status.read_text())["reason"]
    assert reason.startswith(f"refused: {folder} is locked by pid {process.pid} on {socket.gethostname()}")
    task["lock"] = str(tmp_path / "free")
    assert slurm_task.run_task(spec, task) == 0 and (tmp_path / "started").exists()
    assert json.loads(status.read_text())["returncode"] == 0
