"""Tests of the job launcher (serkit.jobs.jobs and the serkit-run command): real bash jobs, real timing."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serkit.bin import run_jobs as cli
from serkit.jobs.jobs import (Job, JobRange, JobsError, JobsUsageError, LocalBackend, Resources,
                         append_to_log, expand_jobs, failure_message, looks_like_job_range,
                         parse_duration, parse_job_range, run_jobs, visible_gpus)

REPO = Path(__file__).resolve().parents[1]
TRAILER = re.compile(r"# Accounting: time=\d+ threads=(\d+)\n"
                     r"# Ended \(code (\d+)\) at .+, elapsed time [\d.]+ seconds\n\Z")
PYTHON = sys.executable
# A job that marks itself running, records how many run now, prints its GPUs, sleeps, then unmarks.
CONCURRENCY = ("import os, sys, time; running, counts, name, seconds = sys.argv[1:]; "
               "open(os.path.join(running, name), 'w').close(); "
               "open(counts, 'a').write(f'{len(os.listdir(running))}\\n'); "
               "print('gpu=' + os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'), flush=True); "
               "time.sleep(float(seconds)); os.remove(os.path.join(running, name))")
# A job that writes its pid to the file named by its first argument, then sleeps.
SLEEPER = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)"


def _concurrency_command(tmp_path: Path, seconds: float) -> list[str]:
    running, counts = tmp_path / "running", tmp_path / "counts"
    running.mkdir(exist_ok=True)
    return [PYTHON, "-c", CONCURRENCY, str(running), str(counts), "JOB", str(seconds)]


def _max_concurrency(tmp_path: Path) -> int:
    return max(int(line) for line in (tmp_path / "counts").read_text().split())


def _trailer(log: Path) -> tuple[int, int]:
    """(threads, exit code) from a log's run.pl trailer; fails the test if the trailer is missing."""
    match = TRAILER.search(log.read_text())
    assert match, f"no accounting trailer at the end of {log}:\n{log.read_text()}"
    return int(match[1]), int(match[2])


# ---------------------------------------------------------------- ranges and substitution

def test_parse_job_range():
    assert parse_job_range("JOB=1:10") == JobRange("JOB", 1, 10)
    assert parse_job_range("SPLIT=3") == JobRange("SPLIT", 3, 3)
    assert list(parse_job_range("N=2:4").indices()) == [2, 3, 4]
    for bad in ("JOB=1:", "JOB=a:3", "JOB=1:3:5", "JOB=-1:2", "JOB=3:1"):
        with pytest.raises(JobsUsageError, match="JOB"):
            parse_job_range(bad)
    assert looks_like_job_range("JOB=1:x") and not looks_like_job_range("exp/log=1/a.log")


def test_expand_jobs_substitutes_every_occurrence(tmp_path):
    jobs = expand_jobs(f"{tmp_path}/log/train.JOB.log",
                       ["train", "--fold_dir", "folds/foldJOB", "--seed", "JOB"], JobRange("JOB", 1, 3))
    assert [job.index for job in jobs] == [1, 2, 3]
    assert jobs[1].argv == ("train", "--fold_dir", "folds/fold2", "--seed", "2")
    assert jobs[2].log_path == tmp_path / "log" / "train.3.log"
    padded = expand_jobs("l/x.N.log", ["echo", "foldN"], JobRange("N", 9, 10), pad=2)
    assert [job.argv for job in padded] == [("echo", "fold09"), ("echo", "fold10")]
    single = expand_jobs("l/one.log", ["echo", "JOB"])
    assert single == [Job(None, ("echo", "JOB"), Path("l/one.log"))]
    marked = expand_jobs("l/t.JOB.log", ["true"], JobRange("JOB", 1, 2), pad=2, done_marker="e/foldJOB/train.done")
    assert [job.done_marker for job in marked] == [Path("e/fold01/train.done"), Path("e/fold02/train.done")]


def test_expand_jobs_rejects_shared_log_and_missing_command():
    with pytest.raises(JobsUsageError, match="same log|share it"):
        expand_jobs("exp/log/train.log", ["true"], JobRange("JOB", 1, 2))
    with pytest.raises(JobsUsageError, match="done marker"):
        expand_jobs("exp/log/t.JOB.log", ["true"], JobRange("JOB", 1, 2), done_marker="exp/train.done")
    with pytest.raises(JobsUsageError, match="no command"):
        expand_jobs("exp/log/train.JOB.log", [], JobRange("JOB", 1, 2))


def test_command_words_are_arguments_never_shell_code(tmp_path, monkeypatch):
    """The injection of the issue (`--data 'data/all;touch${IFS}/tmp/x;#'`) reaches the program as
    one literal argument; no word is ever interpreted by a shell."""
    monkeypatch.chdir(tmp_path)
    hostile = ["data/all;touch${IFS}pwned1;#", "$(touch pwned2)", "`touch pwned3`", "a b", "", "|", ">pwned4"]
    show = "import sys; print(repr(sys.argv[1:]))"
    assert cli.main(["JOB=1:2", "log/x.JOB.log", PYTHON, "-c", show, "--data", *hostile, "JOB"]) == 0
    assert not list(tmp_path.glob("pwned*"))
    assert repr(["--data", *hostile, "2"]) in (tmp_path / "log/x.2.log").read_text()
    header = (tmp_path / "log/x.2.log").read_text().splitlines()[0]
    assert header == "# " + shlex.join([PYTHON, "-c", show, "--data", *hostile, "2"])  # pastes back as-is


# ---------------------------------------------------------------- local backend

def test_jobs_run_in_parallel_up_to_max_jobs(tmp_path):
    jobs = expand_jobs(f"{tmp_path}/p/s.JOB.log", ["sleep", "1"], JobRange("JOB", 1, 4))
    start = time.monotonic()
    assert all(r.ok for r in run_jobs(jobs, LocalBackend(max_jobs=4)))
    parallel = time.monotonic() - start
    start = time.monotonic()
    assert all(r.ok for r in run_jobs(jobs, LocalBackend(max_jobs=1)))
    serial = time.monotonic() - start
    assert parallel < 3.0, f"4 parallel 1-second jobs took {parallel:.1f} s"
    assert serial >= 4.0, f"4 serial 1-second jobs took only {serial:.1f} s"


def test_max_jobs_limit_is_respected(tmp_path):
    jobs = expand_jobs(f"{tmp_path}/log/c.JOB.log", _concurrency_command(tmp_path, 0.3),
                       JobRange("JOB", 1, 6))
    results = run_jobs(jobs, LocalBackend(max_jobs=2))
    assert [r.ok for r in results] == [True] * 6
    assert len((tmp_path / "counts").read_text().split()) == 6
    assert _max_concurrency(tmp_path) == 2
    assert not any((tmp_path / "running").iterdir())


def test_logs_have_header_output_and_accounting(tmp_path):
    """Explicit `bash -c` still gives a job a pipeline; JOB is substituted inside that word too."""
    jobs = expand_jobs(f"{tmp_path}/log/a.JOB.log", ["bash", "-c", "echo out JOB; echo err >&2"],
                       JobRange("JOB", 1, 2))
    run_jobs(jobs, LocalBackend(max_jobs=2), Resources(mem="2G", num_threads=3))
    text = (tmp_path / "log" / "a.2.log").read_text()
    assert text.startswith("# bash -c 'echo out 2; echo err >&2'\n")
    assert re.search(r"^# Started at .+\d{4}$", text, re.M)
    assert "job=2 gpu=0 mem=2G time=- num_threads=3" in text
    assert "out 2\nerr\n" in text
    assert _trailer(tmp_path / "log" / "a.2.log") == (3, 0)


def test_exit_codes_signals_and_missing_programs(tmp_path):
    commands = [["bash", "-c", "exit 3"], ["bash", "-o", "pipefail", "-c", "false | true"],
                ["bash", "-c", "kill -9 $$"], ["true"], ["no-such-program-serkit"]]
    jobs = [Job(n, tuple(words), tmp_path / f"e{n}.log") for n, words in enumerate(commands, 1)]
    results = run_jobs(jobs, LocalBackend(max_jobs=4))
    assert [r.returncode for r in results] == [3, 1, 128 + 9, 0, 127]
    assert [_trailer(job.log_path)[1] for job in jobs] == [3, 1, 137, 0, 127]
    assert "cannot execute 'no-such-program-serkit'" in results[4].reason
    assert "# Not started: cannot execute 'no-such-program-serkit'" in jobs[4].log_path.read_text()
    message = failure_message(results)
    assert message.startswith("4 / 5 jobs failed (jobs 1, 2, 3, 5: not started: cannot execute")
    assert message.endswith(f"see {tmp_path / 'e1.log'}")


def test_bad_log_path_is_a_clear_error(tmp_path):
    (tmp_path / "afile").write_text("")
    jobs = expand_jobs(f"{tmp_path}/afile/x.JOB.log", ["true"], JobRange("JOB", 1, 2))
    with pytest.raises(JobsError, match="afile"):
        run_jobs(jobs, LocalBackend(max_jobs=1))
    with pytest.raises(JobsUsageError, match="max-jobs"):
        LocalBackend(max_jobs=0)


def test_gpus_are_assigned_one_per_job(tmp_path):
    jobs = expand_jobs(f"{tmp_path}/log/g.JOB.log", _concurrency_command(tmp_path, 0.3), JobRange("JOB", 1, 4))
    results = run_jobs(jobs, LocalBackend(max_jobs=4, gpus=["0", "1"]), Resources(gpu=1))
    assert all(r.ok for r in results)
    seen = [re.search(r"^gpu=(.*)$", job.log_path.read_text(), re.M)[1] for job in jobs]
    assert sorted(seen) == ["0", "0", "1", "1"]
    assert _max_concurrency(tmp_path) == 2  # two GPUs: two jobs at a time despite --max-jobs 4
    with pytest.raises(JobsError, match="--gpu 3"):
        LocalBackend(max_jobs=1, gpus=["0", "1"]).run(jobs, Resources(gpu=3))


def test_gpu_request_without_gpus_is_ignored_with_note(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4, 6")
    assert visible_gpus() == ["4", "6"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    [job] = expand_jobs(str(tmp_path / "g.log"), ["bash", "-c", "echo gpu=${CUDA_VISIBLE_DEVICES-unset}"])
    assert run_jobs([job], LocalBackend(max_jobs=1, gpus=[]), Resources(gpu=1))[0].ok
    assert "gpu=unset" in job.log_path.read_text()
    assert "no GPU is visible" in caplog.text


# ---------------------------------------------------------------- command line

def test_cli_failure_names_failed_log_and_others_still_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["--max-jobs", "2", "JOB=1:4", "exp/log/t.JOB.log",
                     "bash", "-c", "echo done JOB > out.JOB && test JOB -ne 3"])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 / 4 jobs failed (job 3); see exp/log/t.3.log" in err
    assert [(tmp_path / f"out.{n}").read_text() for n in (1, 2, 3, 4)] == [f"done {n}\n" for n in (1, 2, 3, 4)]
    assert [_trailer(tmp_path / f"exp/log/t.{n}.log")[1] for n in (1, 2, 3, 4)] == [0, 0, 1, 0]


@pytest.mark.parametrize("argv, message", [
    (["--bogus", "log", "true"], "unrecognized arguments: --bogus"),
    (["JOB=1:x", "log.JOB", "true"], "malformed job range"),
    (["JOB=1:2", "log.JOB"], "missing the command"),
    (["JOB=1:2", "--gpu", "1", "log.JOB", "true"], "options go first"),
    (["--max-jobs", "0", "log", "true"], "at least 1"),
    ([], "missing the log file"),
])
def test_cli_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _run_module(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "serkit.bin.run_jobs", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_console_module_runs_jobs(tmp_path):
    ok = _run_module(["--pad", "2", "JOB=1:2", "log/x.JOB.log", "echo", "foldJOB"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "fold02\n" in (tmp_path / "log/x.02.log").read_text()
    failed = _run_module(["log/single.log", "bash", "-c", "exit 5"], tmp_path)
    assert failed.returncode == 1
    assert "job failed (code 5); see log/single.log" in failed.stderr
    usage = _run_module(["--nope", "log", "true"], tmp_path)
    assert usage.returncode == 2 and "usage: serkit-run" in usage.stderr


def _process_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (an exited child nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigterm_terminates_running_jobs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    launcher = subprocess.Popen(
        [sys.executable, "-m", "serkit.bin.run_jobs", "--max-jobs", "2", "JOB=1:3", "log/s.JOB.log",
         "bash", "-c", "sleep 30 & echo $! > pid.JOB; wait"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    pid_files = [tmp_path / "pid.1", tmp_path / "pid.2"]
    deadline = time.monotonic() + 20
    while not all(f.is_file() and f.read_text().strip() for f in pid_files):
        assert time.monotonic() < deadline, "jobs did not start"
        time.sleep(0.05)
    sleepers = [int(f.read_text()) for f in pid_files]
    assert all(_process_running(pid) for pid in sleepers)
    launcher.send_signal(signal.SIGTERM)
    _, err = launcher.communicate(timeout=20)
    assert launcher.returncode == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM: terminated 2 running job(s), 1 job(s) not started" in err
    time.sleep(0.2)
    assert not any(_process_running(pid) for pid in sleepers)
    assert not (tmp_path / "log/s.3.log").exists()
    text = (tmp_path / "log/s.1.log").read_text()
    assert "# Terminated by serkit-run: SIGTERM received\n# Accounting" in text
    assert _trailer(tmp_path / "log/s.1.log")[1] == 143


def test_job_list_runs_exactly_the_listed_indices(tmp_path):
    """JOB=2,5 runs jobs 2 and 5 only (used to retrain a chosen subset of folds)."""
    from serkit.jobs.jobs import LocalBackend, expand_jobs, parse_job_range, run_jobs

    job_range = parse_job_range("JOB=2,5")
    assert list(job_range.indices()) == [2, 5]
    jobs = expand_jobs(str(tmp_path / "log.JOB"), ["touch", str(tmp_path / "ran.JOB")], job_range)
    results = run_jobs(jobs, LocalBackend(max_jobs=2))
    assert all(result.ok for result in results)
    assert sorted(path.name for path in tmp_path.glob("ran.*")) == ["ran.2", "ran.5"]


def test_local_jobs_get_the_thread_limit(tmp_path):
    """--num-threads reaches the job as OMP_NUM_THREADS so parallel trainings do not oversubscribe."""
    from serkit.jobs.jobs import LocalBackend, Resources, expand_jobs, run_jobs

    jobs = expand_jobs(str(tmp_path / "log"), ["bash", "-c", "echo threads=$OMP_NUM_THREADS"])
    run_jobs(jobs, LocalBackend(max_jobs=1), Resources(num_threads=3))
    assert "threads=3" in (tmp_path / "log").read_text()


# ---------------------------------------------------------------- a launcher that cannot be tricked

def _launch(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "serkit.bin.run_jobs", *args], cwd=cwd, env=env,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_pids(files: list[Path], seconds: float = 30) -> list[int]:
    deadline = time.monotonic() + seconds
    while not all(f.is_file() and f.read_text().strip() for f in files):
        assert time.monotonic() < deadline, "jobs did not start"
        time.sleep(0.05)
    return [int(f.read_text()) for f in files]


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(_process_running(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_kill_9_of_the_launcher_kills_its_jobs(tmp_path):
    """No handler runs on SIGKILL: the jobs die through the parent-death signal set before exec."""
    launcher = _launch(["--max-jobs", "2", "JOB=1:2", "log/k.JOB.log", PYTHON, "-c", SLEEPER, "pid.JOB"], tmp_path)
    jobs = _wait_for_pids([tmp_path / "pid.1", tmp_path / "pid.2"])
    assert all(_process_running(pid) for pid in jobs)
    launcher.kill()
    launcher.wait(timeout=10)
    assert _gone_within(jobs, 5), "jobs outlived the kill -9 of their launcher"


def test_sighup_of_the_launcher_stops_its_jobs(tmp_path):
    """A closed terminal sends SIGHUP: the launcher stops its jobs and says so in their logs."""
    launcher = _launch(["JOB=1", "log/h.JOB.log", PYTHON, "-c", SLEEPER, "pid.JOB"], tmp_path)
    jobs = _wait_for_pids([tmp_path / "pid.1"])
    launcher.send_signal(signal.SIGHUP)
    _, err = launcher.communicate(timeout=20)
    assert launcher.returncode == 128 + signal.SIGHUP
    assert "interrupted by SIGHUP" in err
    assert _gone_within(jobs, 2)
    assert "# Terminated by serkit-run: SIGHUP received" in (tmp_path / "log/h.1.log").read_text()


def test_parse_duration_reads_slurm_time_formats():
    assert [parse_duration(t) for t in ("90", "1:30", "1:00:05", "2-3", "1-0:10", "1-00:00:01")] == \
        [5400, 90, 3605, 2 * 86400 + 3 * 3600, 86400 + 600, 86401]
    for bad in ("", "1h", "1:2:3:4", "0", "-5"):
        with pytest.raises(JobsUsageError, match="time limit"):
            parse_duration(bad)


def test_time_limit_stops_the_job_group_and_reports_a_timeout(tmp_path, monkeypatch, capsys):
    """--time 0:01 (one second) stops a job that would sleep 60 s, and its children; the log's
    trailer, the failure message and the exit status (124) say it timed out."""
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    code = cli.main(["--time", "0:01", "JOB=1:2", "log/t.JOB.log",
                     "bash", "-c", "test JOB = 1 && exit 0; sleep 60 & echo $! > child.JOB; wait"])
    assert time.monotonic() - start < 10
    assert code == 124
    err = capsys.readouterr().err
    assert "1 / 2 jobs failed (job 2: timed out after 0:00:01 (--time 0:01)); see log/t.2.log" in err
    text = (tmp_path / "log/t.2.log").read_text()
    assert "# Timed out after 0:00:01 (--time 0:01)\n# Accounting" in text
    assert _trailer(tmp_path / "log/t.2.log")[1] == 124
    assert _gone_within([int((tmp_path / "child.2").read_text())], 2)  # the grandchild too
    with pytest.raises(SystemExit):
        cli.main(["--time", "1h", "log", "true"])
    assert "malformed time limit '1h'" in capsys.readouterr().err


def test_trailer_goes_to_stderr_when_the_log_cannot_be_written(tmp_path, monkeypatch, capsys):
    """/dev/full fails every write with ENOSPC, as a full disk does: the trailer and the failure
    message still reach the user on stderr."""
    assert not append_to_log(Path("/dev/full"), "# Ended (code 0)\n")
    assert "cannot write to /dev/full ([Errno 28] No space left on device); its trailer reads:\n" \
           "# Ended (code 0)\n" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    (tmp_path / "log").mkdir()
    (tmp_path / "log/full.log").symlink_to("/dev/full")
    assert cli.main(["log/full.log", "true"]) == 1
    err = capsys.readouterr().err
    assert "cannot write to log/full.log ([Errno 28] No space left on device); its trailer reads:\n" \
           "# Not started: cannot write its log log/full.log: [Errno 28] No space left on device\n" \
           "# Accounting: time=0 threads=1\n# Ended (code 127)" in err
    assert "job failed (not started: cannot write its log log/full.log" in err


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (needs root: mount)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the /dev/full test covers the same path")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_trailer_and_failure_message_survive_a_full_disk(tiny_disk, capsys):
    """A job fills the disk its log is on; the launcher still reports how it ended."""
    code = cli.main([f"{tiny_disk}/log.txt", "head", "-c", "1000000", "/dev/zero"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"cannot write to {tiny_disk}/log.txt ([Errno 28] No space left on device)" in err
    assert re.search(r"its trailer reads:\n# Accounting: time=\d+ threads=1\n# Ended \(code 1\)", err)
    assert f"job failed (code 1); see {tiny_disk}/log.txt" in err


def test_skip_if_exists_runs_only_unfinished_jobs(tmp_path, monkeypatch, caplog):
    """A rerun starts only the jobs without their done marker; the others' logs stay as they were."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp/fold2").mkdir(parents=True)
    (tmp_path / "exp/fold2/train.done").write_text("{}")
    (tmp_path / "log").mkdir()
    (tmp_path / "log/t.2.log").write_text("earlier run\n")
    args = ["--skip-if-exists", "exp/foldJOB/train.done", "JOB=1:3", "log/t.JOB.log", "touch", "ran.JOB"]
    assert cli.main(args) == 0
    assert sorted(p.name for p in tmp_path.glob("ran.*")) == ["ran.1", "ran.3"]
    assert (tmp_path / "log/t.2.log").read_text() == "earlier run\n"
    assert "1 job(s) already done, not run again: job 2 (exp/fold2/train.done exists)" in caplog.text


def test_one_progress_line_per_finished_job_with_its_summary_and_the_time_left(tmp_path, capsys):
    """Stage 3 used to print its first line and then nothing for many minutes: each finished fold now
    gets one line (the summary its log ends with, its time) and an estimate of the time left."""
    from serkit.jobs.jobs import expand_jobs, run_jobs
    script = ('echo "epoch 1 | valid UA 40%"; echo "2026 INFO serkit-summary: JOB epoch(s), best valid UA 5JOB.0% '
              '(epoch 1)"; [ JOB != 3 ]')
    jobs = expand_jobs(f"{tmp_path}/log/train.foldJOB.log", ["sh", "-c", script], JobRange("JOB", 1, 3))
    results = run_jobs(jobs, LocalBackend(max_jobs=1))
    lines = [line for line in capsys.readouterr().out.splitlines() if "train.fold" in line]
    assert [r.returncode for r in results] == [0, 0, 1] and len(lines) == 3
    assert re.search(r"train\.fold1: done in 0:00:0\d \[1/3\]: 1 epoch\(s\), best valid UA 51\.0% \(epoch 1\); "
                     r"about 0:00:0\d left$", lines[0]), lines[0]
    assert "[2/3]: 2 epoch(s), best valid UA 52.0%" in lines[1]
    assert f"train.fold3: FAILED (exit 1; see {tmp_path}/log/train.fold3.log)" in lines[2] and "left" not in lines[2]
    assert "epoch 1 | valid UA" not in "\n".join(lines)  # per-epoch lines stay in the logs


def test_jobs_that_end_together_get_their_own_numbers(tmp_path, capsys):
    """Two folds reaped in the same poll were both printed as [2/2]."""
    from serkit.jobs.jobs import expand_jobs, run_jobs
    jobs = expand_jobs(f"{tmp_path}/log/train.foldJOB.log", ["sh", "-c", "sleep 0.5"], JobRange("JOB", 1, 2))
    run_jobs(jobs, LocalBackend(max_jobs=2))
    lines = [line for line in capsys.readouterr().out.splitlines() if "train.fold" in line]
    assert sorted(re.search(r"\[(\d)/2\]", line).group(1) for line in lines) == ["1", "2"], lines
