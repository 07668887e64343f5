"""Tests of serkit-run's Slurm backend on a real single-node Slurm (serkit.jobs.local_slurm).

The cluster is started once for the module (munged + slurmctld + slurmd as root, about a second)
and stopped at the end.  Without Slurm installed these tests fail, saying how to install it:
CI installs it (tools/install_slurm.sh), so a skip would hide a broken backend.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_corpus import noisy_tones, write_tiny_corpus

from serkit.bin import run_jobs as cli
from serkit.jobs.jobs import Job, JobsError, JobsUsageError, Resources, exit_status
from serkit.jobs.local_slurm import LocalSlurmError, start_cluster
from serkit.model import build_tiny_w2v2
from serkit.jobs.slurm import ArrayFiles, SlurmBackend, read_config

REPO = Path(__file__).resolve().parents[1]
SLURM_CONF = REPO / "conf" / "slurm.conf"
TRAIN_CONF = REPO / "conf" / "w2v2_mtl.yaml"
PYTHON = sys.executable
SLURM = ["--backend", "slurm", "--config", str(SLURM_CONF)]
SHOW = "import os, sys; print('args', sys.argv[1:], 'task', os.environ['SLURM_ARRAY_TASK_ID'])"


@pytest.fixture(scope="module")
def cluster():
    try:
        local = start_cluster()
    except LocalSlurmError as error:
        pytest.fail(f"cannot start a local Slurm for the Slurm backend's tests: {error}", pytrace=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(local.conf))
        yield local
    local.stop()


def _slurm_id(log: Path) -> str:
    """The ``ARRAYID_TASK`` a task wrote into its log header."""
    return re.search(r"slurm_job=(\d+_\d+)", log.read_text())[1]


def test_config_maps_generic_options_to_sbatch_options(tmp_path):
    config = read_config(SLURM_CONF)
    assert config.command == ["sbatch", "--export=ALL"]
    words = config.sbatch_options({"gpu": "2", "mem": "8G", "time": "4:00:00", "num_threads": "4",
                                   "partition": "gpu", "account": "lab"})
    assert words == ["--gres=gpu:2", "--mem=8G", "--time=4:00:00", "--cpus-per-task=4", "--partition=gpu",
                     "--account=lab"]
    assert config.sbatch_options({"gpu": "0", "num_threads": "1"}) == ["--cpus-per-task=1"]
    custom = tmp_path / "custom.conf"
    custom.write_text("command sbatch --qos=short  # every job\ndefault partition=cpu\n"
                      "option partition=* -p $0\noption gpu=* -p gpu --gres=gpu:$0\n")
    assert read_config(custom).sbatch_options({"gpu": "1"}) == ["-p", "gpu", "--gres=gpu:1", "-p", "cpu"]
    with pytest.raises(JobsUsageError, match=r"custom.conf: no rule for mem=4G; add a line such as 'option mem=\*"):
        read_config(custom).sbatch_options({"mem": "4G"})
    custom.write_text("option gpus=* --gres=gpu:$0\n")
    with pytest.raises(JobsUsageError, match=r"custom.conf:1: unknown option 'gpus'"):
        read_config(custom)


def test_task_results_combine_the_status_file_and_the_slurm_state(tmp_path):
    """A task killed by Slurm may not write its status: the state alone then says what happened,
    and the log gets a trailer saying so."""
    files = ArrayFiles(tmp_path / "slurm", "t.JOB")
    files.folder.mkdir()
    jobs = [Job(n, ("true",), tmp_path / f"t.{n}.log") for n in (1, 2, 3, 4)]
    files.status(1).write_text('{"returncode": 0, "elapsed": 2.5, "reason": ""}')
    files.status(2).write_text('{"returncode": 143, "elapsed": 1.0, "reason": "terminated by SIGTERM (scancel)"}')
    states = {1: "COMPLETED", 2: "CANCELLED", 3: "TIMEOUT", 4: "NODE_FAIL"}
    results = [SlurmBackend._result(job, states[job.index], files, Resources(time="10"), 9.0) for job in jobs]
    assert [(r.returncode, r.reason) for r in results] == [
        (0, ""), (143, "Slurm state CANCELLED: terminated by SIGTERM (scancel)"),
        (124, "timed out after 0:10:00 (Slurm state TIMEOUT), no exit status written"),
        (1, "Slurm state NODE_FAIL, no exit status written")]
    assert exit_status(results[2:3]) == 124 and exit_status(results) == 1
    assert "# Timed out after 0:10:00 (Slurm state TIMEOUT), no exit status written\n# Accounting" \
        in (tmp_path / "t.3.log").read_text()
    assert not (tmp_path / "t.1.log").exists()  # a task that reported itself needs no trailer from us


@pytest.mark.e2e  # jobs on the local Slurm cluster: the end-to-end tier, needing Slurm and root
@pytest.mark.slurm
@pytest.mark.timeout(1800)  # with its module fixture's runs, on a loaded 2-core machine
def test_array_of_commands_runs_with_literal_arguments(cluster, tmp_path, monkeypatch):
    """One array of three tasks (task ids = job indices, throttled to 2), argument lists unchanged
    by any shell, a job name that says recipe, experiment and what runs."""
    monkeypatch.chdir(tmp_path)
    hostile = "data/all;touch${IFS}pwned;#"
    code = cli.main([*SLURM, "--max-jobs", "2", "JOB=1:3", "exp/tag/log/show.JOB.log",
                     PYTHON, "-c", SHOW, "--data", hostile, "foldJOB"])
    assert code == 0
    for index in (1, 2, 3):
        text = (tmp_path / f"exp/tag/log/show.{index}.log").read_text()
        assert f"args ['--data', '{hostile}', 'fold{index}'] task {index}\n" in text
        assert "backend=slurm" in text and "# Ended (code 0)" in text
    assert not list(tmp_path.rglob("pwned"))
    array_id = _slurm_id(tmp_path / "exp/tag/log/show.1.log").split("_")[0]
    shown = subprocess.run(["scontrol", "show", "job", array_id], capture_output=True, text=True).stdout
    assert "ArrayTaskThrottle=2" in shown
    assert f"JobName={tmp_path.name}/exp/tag/show.JOB" in shown
    spec = json.loads((tmp_path / "exp/tag/log/slurm/show.JOB.json").read_text())
    assert spec["tasks"]["2"]["argv"] == [PYTHON, "-c", SHOW, "--data", hostile, "fold2"]


@pytest.mark.e2e  # jobs on the local Slurm cluster: the end-to-end tier, needing Slurm and root
@pytest.mark.slurm
@pytest.mark.timeout(1800)  # with its module fixture's runs, on a loaded 2-core machine
def test_failing_task_fails_the_call_and_names_its_log(cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main([*SLURM, "JOB=1:2", "exp/log/f.JOB.log", PYTHON, "-c", "import sys; sys.exit(JOB * 3 - 3)"])
    assert code == 1
    assert "1 / 2 jobs failed (job 2); see exp/log/f.2.log" in capsys.readouterr().err
    assert "# Ended (code 3)" in (tmp_path / "exp/log/f.2.log").read_text()


# Task 2 sleeps until the file "fast" exists (so it can be cancelled while running); both then
# write done.<task>.
SLOW_TASK = ("import os, pathlib, sys, time; n = sys.argv[1]\n"
             "pathlib.Path(f'started.{n}').write_text(os.environ['SLURM_ARRAY_JOB_ID'])\n"
             "while n == '2' and not pathlib.Path('fast').exists(): time.sleep(0.2)\n"
             "pathlib.Path(f'done.{n}').write_text('ok')\n")


@pytest.mark.e2e  # jobs on the local Slurm cluster: the end-to-end tier, needing Slurm and root
@pytest.mark.slurm
@pytest.mark.timeout(1800)  # with its module fixture's runs, on a loaded 2-core machine
def test_cancelled_task_is_reported_and_resubmitted_on_rerun(cluster, tmp_path):
    # FOLD, not JOB: the range variable is replaced wherever it occurs, also in SLURM_ARRAY_JOB_ID.
    args = [*SLURM, "--skip-if-exists", "done.FOLD", "FOLD=1:2", "log/c.FOLD.log", PYTHON, "-c", SLOW_TASK, "FOLD"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    launcher = subprocess.Popen([PYTHON, "-m", "serkit.bin.run_jobs", *args], cwd=tmp_path, env=env,
                                stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started.2").is_file() or not (tmp_path / "done.1").is_file():
        assert time.monotonic() < deadline and launcher.poll() is None, "tasks did not start"
        time.sleep(0.2)
    array_id = (tmp_path / "started.2").read_text()
    subprocess.run(["scancel", f"{array_id}_2"], check=True)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 1
    assert "1 / 2 jobs failed (job 2: Slurm state CANCELLED" in err
    assert "see log/c.2.log" in err
    first_log = (tmp_path / "log/c.1.log").read_text()

    (tmp_path / "fast").touch()
    rerun = subprocess.run([PYTHON, "-m", "serkit.bin.run_jobs", *args], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 job(s) already done, not run again: job 1 (done.1 exists)" in rerun.stderr
    assert list(json.loads((tmp_path / "log/slurm/c.FOLD.json").read_text())["tasks"]) == ["2"]
    assert (tmp_path / "done.2").read_text() == "ok"
    assert (tmp_path / "log/c.1.log").read_text() == first_log  # job 1 was not run again


@pytest.mark.e2e  # jobs on the local Slurm cluster: the end-to-end tier, needing Slurm and root
@pytest.mark.slurm
@pytest.mark.timeout(1800)  # with its module fixture's runs, on a loaded 2-core machine
def test_stopping_the_launcher_cancels_the_array(cluster, tmp_path):
    """Ctrl-C / kill of the waiting launcher cancels its tasks instead of leaving them queued."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    launcher = subprocess.Popen([PYTHON, "-m", "serkit.bin.run_jobs", *SLURM, "FOLD=2:3", "log/s.FOLD.log",
                                 PYTHON, "-c", SLOW_TASK, "2"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started.2").is_file():
        assert time.monotonic() < deadline and launcher.poll() is None, "the tasks did not start"
        time.sleep(0.2)
    launcher.send_signal(signal.SIGTERM)
    _, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM" in err
    array_id = (tmp_path / "started.2").read_text()
    deadline = time.monotonic() + 30
    while True:
        states = subprocess.run(["squeue", "-h", "-r", "-j", array_id, "--states=all", "-o", "%T"],
                                capture_output=True, text=True).stdout.split()
        if states == ["CANCELLED", "CANCELLED"]:
            break
        assert time.monotonic() < deadline, f"tasks not cancelled: {states}"
        time.sleep(0.2)


# On its first start the task waits to be requeued; started again (SLURM_RESTART_COUNT 1) it ends.
PREEMPTED_TASK = ("import os, pathlib, time\n"
                  "restarts = os.environ.get('SLURM_RESTART_COUNT', '0')\n"
                  "print('attempt after', restarts, 'restarts', flush=True)\n"
                  "if restarts == '0':\n"
                  "    pathlib.Path('started').write_text(os.environ['SLURM_ARRAY_JOB_ID'])\n"
                  "    time.sleep(120)\n")


@pytest.mark.e2e  # jobs on the local Slurm cluster: the end-to-end tier, needing Slurm and root
@pytest.mark.slurm
@pytest.mark.timeout(1800)  # with its module fixture's runs, on a loaded 2-core machine
def test_requeued_task_runs_again_and_the_launcher_waits_for_it(cluster, tmp_path):
    """A preempted task (here: scontrol requeue) starts again under the same launcher call and
    appends to its log; serkit-run reports the second attempt's success."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    launcher = subprocess.Popen([PYTHON, "-m", "serkit.bin.run_jobs", *SLURM, "FOLD=1", "log/p.FOLD.log",
                                 PYTHON, "-c", PREEMPTED_TASK], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").is_file():
        assert time.monotonic() < deadline and launcher.poll() is None, "the task did not start"
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", f"{(tmp_path / 'started').read_text()}_1"], check=True)
    _, err = launcher.communicate(timeout=90)
    assert launcher.returncode == 0, err
    log = (tmp_path / "log/p.1.log").read_text()
    assert re.search(r"restarts=0\n#\nattempt after 0 restarts\n# Terminated by SIGTERM .*\n# Accounting", log)
    assert re.search(r"restarts=1\n#\nattempt after 1 restarts\n# Accounting.*\n# Ended \(code 0\)", log)


def test_missing_slurm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalSlurmError, match=r"Slurm is not installed .*tools/install_slurm.sh"):
        start_cluster()
    with pytest.raises(JobsError, match="sbatch was not found on PATH"):
        SlurmBackend(config=SLURM_CONF)


@pytest.fixture(scope="module")
def two_folds(tmp_path_factory) -> dict[str, Path]:
    """A tiny corpus (12 utterances, 3 speakers) with two folds: each tests one speaker."""
    root = tmp_path_factory.mktemp("slurm_corpus")
    paths = write_tiny_corpus(root, 12, seconds=lambda i: 0.5 + 0.125 * (i % 3), waveform=noisy_tones(200, 150),
                              splits={"train": range(0, 4), "valid": range(4, 8), "test": range(8, 12)})
    folds = root / "folds"
    shutil.copytree(paths["fold"], folds / "fold01")
    shutil.copytree(paths["fold"], folds / "fold02")
    (folds / "fold02" / "test").write_text((paths["fold"] / "valid").read_text())
    (folds / "fold02" / "valid").write_text((paths["fold"] / "test").read_text())
    return {"data": paths["data"], "lang": paths["lang"], "folds": folds, "encoder": build_tiny_w2v2(root / "w2v2")}


@pytest.mark.e2e  # jobs on the local Slurm cluster: the end-to-end tier, needing Slurm and root
@pytest.mark.slurm
@pytest.mark.timeout(1800)  # with its module fixture's runs, on a loaded 2-core machine
def test_training_stage_runs_two_folds_as_an_array_job(cluster, two_folds, tmp_path, monkeypatch, capsys, caplog):
    """Stage 3's command line through Slurm: both folds train (1 epoch), each with its log; a rerun
    submits nothing."""
    monkeypatch.chdir(tmp_path)
    exp = "exp/tiny_seed1/loso"
    args = [*SLURM, "--max-jobs", "2", "--num-threads", "1", "--pad", "2",
            "--skip-if-exists", f"{exp}/foldJOB/train.done", "JOB=1,2", f"{exp}/log/train.foldJOB.log",
            PYTHON, "-m", "serkit.bin.train", str(TRAIN_CONF), "--data_dir", str(two_folds["data"]),
            "--lang_dir", str(two_folds["lang"]), "--fold_dir", f"{two_folds['folds']}/foldJOB",
            "--output_folder", f"{exp}/foldJOB", "--encoder_source", str(two_folds["encoder"]),
            "--number_of_epochs", "1", "--batch_size", "4", "--num_workers", "0", "--ckpt_interval_minutes", "0",
            "--device", "cpu", "--noprogressbar"]
    assert cli.main(args) == 0, capsys.readouterr().err
    for fold in ("fold01", "fold02"):
        assert json.loads((tmp_path / exp / fold / "train.done").read_text())["UA"] >= 0
        log = (tmp_path / exp / "log" / f"train.{fold}.log").read_text()
        assert "done: test WA" in log and "# Ended (code 0)" in log
    assert cli.main(args) == 0
    assert "2 job(s) already done, not run again" in caplog.text
