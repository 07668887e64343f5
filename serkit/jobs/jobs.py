"""Run a command as an array of jobs, Kaldi ``run.pl`` style.

Recipes write ``$train_cmd JOB=1:10 exp/tag/log/train.JOB.log python -m serkit.bin.train ...``
and ``cmd.sh`` decides where the jobs run.  This module holds the pieces of that idiom:

* expanding a job range (``JOB=1:10``) into concrete jobs by replacing every occurrence of the
  variable name in the log path and in each command word with the job index (Kaldi semantics: a
  plain integer, or zero-padded when asked, so ``foldJOB`` can name ``fold01``);
* commands are argument lists, run without a shell: a value such as ``data/all;touch x`` reaches
  the program as one literal argument and can never start a second command (Kaldi's run.pl hands
  the joined line to bash; we do not).  A job that needs pipes says so: ``bash -c '...'``;
* the log format (a header with the command and start time; a trailer with run.pl's
  ``# Accounting: time=...`` and ``# Ended (code N) at ...`` lines, which Kaldi's log tools parse);
  when the log cannot be written (a full disk), the trailer goes to stderr instead of vanishing;
* a small :class:`Backend` interface with the :class:`LocalBackend` (parallel local processes)
  here and the Slurm backend in :mod:`serkit.jobs.slurm`; :mod:`serkit.jobs.backends` picks one by name.
"""
from __future__ import annotations

import abc
import collections
import ctypes
import datetime
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Optional, Sequence

from tqdm import tqdm

from serkit.errors import SerkitError
from serkit.jobs.lock import FolderLocked, HeldLock
from serkit.jobs.lock import acquire as acquire_lock

logger = logging.getLogger(__name__)

# A word that starts like ``NAME=`` is a job range attempt, never a log file (Kaldi's rule).
_RANGE_START = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_LIST = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<values>\d+(?:,\d+)+)$")
_RANGE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<start>\d+)(?::(?P<end>\d+))?$")
# Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S.
_DURATION = re.compile(r"^(?:(?P<days>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")

# How often the local backend checks its children; short enough to be invisible next to real jobs.
POLL_SECONDS = 0.05
# How long children get to exit after SIGTERM before they are killed with SIGKILL.
TERMINATE_GRACE_SECONDS = 5.0
# The exit code of a job killed for running past --time (GNU timeout's convention).
TIMEOUT_EXIT_CODE = 124
# The exit code of a job whose program could not be started (the shell's "command not found").
NOT_STARTED_EXIT_CODE = 127
# Signals after which the launcher stops its jobs: Ctrl-C, kill, and a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class JobsError(SerkitError):
    """Jobs could not be prepared or launched (bad log path, impossible resources)."""


class JobsUsageError(JobsError):
    """The launcher was called wrongly (malformed range, missing log or command)."""


class JobsInterrupted(JobsError):
    """The launcher got SIGINT/SIGTERM/SIGHUP and stopped its running jobs."""

    def __init__(self, signum: int, n_terminated: int, n_not_started: int):
        self.signum = signum
        self.n_terminated = n_terminated
        self.n_not_started = n_not_started
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}: terminated {n_terminated} running job(s), "
                         f"{n_not_started} job(s) not started")

    @property
    def exit_code(self) -> int:
        """The shell convention for death by a signal, so callers see why we stopped."""
        return 128 + self.signum


@dataclass(frozen=True)
class JobRange:
    """``NAME=start:end`` (inclusive on both ends, as in Kaldi), or an explicit ``NAME=1,3,5`` list.

    The list form lets a recipe rerun a chosen subset of folds as one parallel submission.
    """

    name: str
    start: int
    end: int
    listed: tuple[int, ...] = ()

    def indices(self) -> Sequence[int]:
        return self.listed or range(self.start, self.end + 1)


def parse_duration(text: str) -> int:
    """Seconds in a time limit written the way Slurm takes it (``90``, ``1:30:00``, ``2-12``).

    A plain number is minutes, as in ``sbatch --time``; the same string then means the same on
    every backend.
    """
    match = _DURATION.match(text.strip())
    if not match:
        raise JobsUsageError(f"malformed time limit {text!r}: use MINUTES, MM:SS, HH:MM:SS, D-HH, "
                             f"D-HH:MM or D-HH:MM:SS (Slurm's --time formats)")
    days = int(match["days"] or 0)
    parts = [int(part) for part in (match["a"], match["b"], match["c"]) if part is not None]
    if match["days"] is not None:  # D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 1:          # M
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:          # M:S
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:                          # H:M:S
        hours, minutes, seconds = parts
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise JobsUsageError(f"time limit {text!r} is zero; give a positive duration")
    return total


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (with ``D-`` in front past a day), for messages about time limits."""
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


@dataclass(frozen=True)
class Resources:
    """Resource requests in Kaldi's option vocabulary; each backend honours what it can."""

    gpu: int = 0
    mem: Optional[str] = None
    time: Optional[str] = None
    num_threads: int = 1

    def describe(self) -> str:
        return (f"gpu={self.gpu} mem={self.mem or '-'} time={self.time or '-'} "
                f"num_threads={self.num_threads}")

    @property
    def time_limit(self) -> Optional[int]:
        """``time`` in seconds, or None without a limit."""
        return None if self.time is None else parse_duration(self.time)


@dataclass(frozen=True)
class Job:
    """One concrete job: its index (None for a lone job without a range), argument list and log.

    ``done_marker`` is a file whose existence means the job's work is already done (a fold's
    ``train.done``): such a job is not started again. ``lock_dir`` is the folder the job works in
    (a fold's output folder): its lock (:mod:`serkit.jobs.lock`) is taken before the job's log is
    written and held until the job ends, so a second run of the same fold is refused without
    touching the running one's log.
    """

    index: Optional[int]
    argv: tuple[str, ...]
    log_path: Path
    done_marker: Optional[Path] = None
    lock_dir: Optional[Path] = None

    @property
    def label(self) -> str:
        return "job" if self.index is None else f"job {self.index}"

    @property
    def command(self) -> str:
        """The argument list as one line a user can paste into a shell (quoted where needed)."""
        return shlex.join(self.argv)


@dataclass(frozen=True)
class JobResult:
    """How a job ended: exit code (128+N when killed by signal N), wall-clock seconds, and why.

    ``reason`` says what the exit code cannot (``timed out after 0:10:00``, ``cancelled``);
    ``skipped`` marks a job not run because its done marker exists.
    """

    job: Job
    returncode: int
    elapsed: float
    reason: str = ""
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def timed_out(self) -> bool:
        return self.reason.startswith("timed out")


def looks_like_job_range(word: str) -> bool:
    """True when ``word`` is meant as a job range (``NAME=...``), malformed or not."""
    return bool(_RANGE_START.match(word))


def parse_job_range(spec: str) -> JobRange:
    """Parse ``NAME=a:b``, ``NAME=a`` (a single index) or ``NAME=a,b,c`` into a :class:`JobRange`."""
    listed = _LIST.match(spec)
    if listed:
        values = [int(value) for value in listed["values"].split(",")]
        if len(set(values)) != len(values):
            raise JobsUsageError(f"job list {spec!r} names an index twice")
        return JobRange(listed["name"], min(values), max(values), tuple(values))
    match = _RANGE.match(spec)
    if not match:
        raise JobsUsageError(f"malformed job range {spec!r}: expected NAME=START:END with integers, "
                             f"e.g. JOB=1:10")
    start = int(match["start"])
    end = int(match["end"]) if match["end"] is not None else start
    if end < start:
        raise JobsUsageError(f"job range {spec!r} is empty: END ({end}) is smaller than START ({start})")
    return JobRange(match["name"], start, end)


def substitute(text: str, name: str, index: int, pad: int = 0) -> str:
    """Replace every occurrence of ``name`` in ``text`` by ``index`` (zero-padded to ``pad`` digits)."""
    return text.replace(name, f"{index:0{pad}d}")


def expand_jobs(log_template: str, command_words: Sequence[str],
                job_range: Optional[JobRange] = None, pad: int = 0,
                done_marker: Optional[str] = None, lock_dir: Optional[str] = None) -> list[Job]:
    """Turn a log template and command into concrete jobs, one per index of ``job_range``.

    The range variable is replaced inside each word separately, so a word stays one argument.
    """
    if not command_words:
        raise JobsUsageError("no command given after the log file")
    if pad < 0:
        raise JobsUsageError(f"--pad must be >= 0, got {pad}")
    if job_range is None:
        marker = Path(done_marker) if done_marker else None
        return [Job(None, tuple(command_words), Path(log_template), marker, Path(lock_dir) if lock_dir else None)]
    n_jobs = len(job_range.indices())
    for what, template in (("log file", log_template), ("done marker", done_marker), ("lock folder", lock_dir)):
        if template is not None and n_jobs > 1 and job_range.name not in template:
            raise JobsUsageError(
                f"the {what} {template!r} does not contain {job_range.name}, so all {n_jobs} jobs "
                f"would share it; put {job_range.name} in its name, e.g. "
                f"exp/log/train.{job_range.name}.log")

    def fill(text: str, index: int) -> str:
        return substitute(text, job_range.name, index, pad)

    return [Job(index, tuple(fill(word, index) for word in command_words),
                Path(fill(log_template, index)),
                Path(fill(done_marker, index)) if done_marker else None,
                Path(fill(lock_dir, index)) if lock_dir else None)
            for index in job_range.indices()]


def prepare_log_dirs(jobs: Sequence[Job]) -> None:
    """Create the log directories up front, so a bad path fails before any job has started."""
    for job in jobs:
        if job.log_path.is_dir():
            raise JobsError(f"log file {job.log_path} is an existing directory; choose a file name "
                            f"for the log")
        try:
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise JobsError(f"cannot create the log directory {job.log_path.parent} for "
                            f"{job.log_path}: {error}") from error


def _now() -> str:
    """The wall-clock time as ``date`` prints it, for humans reading logs."""
    return datetime.datetime.now().astimezone().strftime("%a %b %d %H:%M:%S %Z %Y")


def format_log_header(job: Job, resources: Resources, backend: str, extra: str = "") -> str:
    """The first lines of a job log: the exact command, where and when it started, what it asked for."""
    index = "-" if job.index is None else str(job.index)
    details = f"# serkit-run: backend={backend} job={index} {resources.describe()}"
    if extra:
        details += f" {extra}"
    return (f"# {job.command}\n"
            f"# Running on {socket.gethostname()}\n"
            f"# Started at {_now()}\n"
            f"{details}\n"
            f"#\n")


#: A job may log a line holding this marker (serkit.bin.train: epochs and best validation UA); the
#: progress line serkit-run prints when the job ends repeats what follows it.
SUMMARY_MARKER = "serkit-summary: "


def job_summary(log_path: Path, tail_bytes: int = 16384) -> str:
    """What follows the last :data:`SUMMARY_MARKER` in the end of the job's log, or ``""``."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - tail_bytes))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if SUMMARY_MARKER in line]
    return lines[-1].split(SUMMARY_MARKER, 1)[1].strip() if lines else ""


def progress_line(result: "JobResult", n_done: int, n_total: int, durations: Sequence[float], n_left: int,
                  max_jobs: int) -> str:
    """One line a user can follow while a stage runs for hours (per-epoch lines stay in the job's log):
    which job ended, how, its summary, and the time left estimated from the jobs finished so far."""
    summary = job_summary(result.job.log_path)
    reason = f", {result.reason}" if result.reason else ""
    status = "done" if result.ok else f"FAILED (exit {result.returncode}{reason}; see {result.job.log_path})"
    line = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} {result.job.log_path.stem}: {status} in "
            f"{format_duration(result.elapsed)} [{n_done}/{n_total}]" + (f": {summary}" if summary else ""))
    if n_left and durations:
        left = sum(durations) / len(durations) * math.ceil(n_left / max(max_jobs, 1))
        line += f"; about {format_duration(left)} left"
    return line


def format_log_trailer(returncode: int, elapsed: float, num_threads: int, reason: str = "") -> str:
    """The last lines of a job log, in run.pl's format (``utils/summarize_logs.pl`` parses them).

    A ``reason`` (a timeout, a termination) comes as a comment line just before them.
    """
    note = f"# {reason[0].upper()}{reason[1:]}\n" if reason else ""
    return (f"{note}# Accounting: time={int(round(elapsed))} threads={num_threads}\n"
            f"# Ended (code {returncode}) at {_now()}, elapsed time {elapsed:.2f} seconds\n")


def append_to_log(path: Path, text: str, prog: str = "serkit-run") -> bool:
    """Append ``text`` to a log; if that fails (a full disk), print it to stderr instead.

    The trailer is how a user learns how a job ended, so it must not be lost with the disk space
    that ended the job.  Returns whether the log got it.
    """
    try:
        with open(path, "a", encoding="utf-8") as log:
            log.write(text)
        return True
    except OSError as error:
        sys.stderr.write(f"{prog}: cannot write to {path} ({error}); its trailer reads:\n{text}")
        sys.stderr.flush()
        return False


def failure_message(results: Sequence[JobResult]) -> Optional[str]:
    """A one-line summary naming the failed jobs, why, and the first failed log; None if all passed.

    A job refused because another run holds its folder wrote no log: its reason says who holds it.
    """
    failed = [result for result in results if not result.ok]
    if not failed:
        return None
    first = failed[0]
    logged = first_logged_failure(results)
    see = f"; see {logged.job.log_path}" if logged is not None else ""
    if len(results) == 1:
        how = first.reason or f"code {first.returncode}"
        return f"job failed ({how}){see}"
    details = ", ".join(f"{result.job.index}" + (f": {result.reason}" if result.reason else "")
                        for result in failed)
    which = "job" if len(failed) == 1 else "jobs"
    return f"{len(failed)} / {len(results)} jobs failed ({which} {details}){see}"


def first_logged_failure(results: Sequence[JobResult]) -> Optional[JobResult]:
    """The first failed job that ran and so has a log of its own (a refused job has none)."""
    return next((result for result in results
                 if not result.ok and not result.reason.startswith("refused:")), None)


def log_tail(path: Path, lines: int = 12) -> str:
    """The last ``lines`` lines of a job log ('' when it cannot be read), for the terminal: the
    error that ended a job is there, and a user should not have to open the file to see it."""
    try:
        if not path.is_file():  # a device (a log linked to /dev/full) would be read without end
            return ""
        with open(path, "rb") as log:
            log.seek(max(0, path.stat().st_size - 64 * 1024))
            text = log.read(64 * 1024).decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def exit_status(results: Sequence[JobResult]) -> int:
    """serkit-run's exit status: 0 all ok, 124 when the only failures are timeouts, else 1."""
    failed = [result for result in results if not result.ok]
    if not failed:
        return 0
    return TIMEOUT_EXIT_CODE if all(result.timed_out for result in failed) else 1


def default_max_jobs() -> int:
    """The CPUs this process may use (respects affinity/cgroup pinning where the OS exposes it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def visible_gpus() -> list[str]:
    """GPU ids a local job may be given via CUDA_VISIBLE_DEVICES; empty when none can be seen.

    An existing CUDA_VISIBLE_DEVICES is the pool (it is what the user allowed us); otherwise
    ``nvidia-smi`` lists the devices.  Importing torch here would make every launch slow.
    """
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        value = os.environ["CUDA_VISIBLE_DEVICES"].strip()
        if value in ("", "-1"):
            return []
        return [token.strip() for token in value.split(",") if token.strip()]
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return []
    try:
        completed = subprocess.run([nvidia_smi, "--query-gpu=index", "--format=csv,noheader"],
                                   capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        logger.warning("nvidia-smi failed (%s); treating the machine as having no GPU", error)
        return []
    return [line.strip() for line in completed.stdout.splitlines() if line.strip()]


class Backend(abc.ABC):
    """Where jobs run.  A backend runs all given jobs to completion and returns their results.

    It must write each job's output and the run.pl header/trailer to ``job.log_path`` and, on
    SIGINT/SIGTERM/SIGHUP, stop its jobs and raise :class:`JobsInterrupted`.
    """

    name: str = "abstract"

    @abc.abstractmethod
    def run(self, jobs: Sequence[Job], resources: Resources) -> list[JobResult]:
        """Run ``jobs`` and return one result per job, in the order given."""


class StopFlag:
    """Turns SIGINT/SIGTERM/SIGHUP into a flag the polling loop checks.

    A flag (instead of an exception raised at an arbitrary point) means a signal can never arrive
    between starting a child and recording it, so no child is ever left behind.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum

    def __enter__(self) -> "StopFlag":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _exit_code(returncode: int) -> int:
    """Popen reports death by signal N as -N; logs and summaries use the shell's 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def _parent_death_signal() -> Optional[Callable[[int], None]]:
    """A function that asks Linux to SIGKILL the calling process when its parent dies, or None.

    ``prctl(PR_SET_PDEATHSIG)`` is how a job learns that a ``kill -9``-ed launcher is gone: no
    handler of ours runs then.  It exists on Linux only; elsewhere jobs outlive a killed launcher.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_signal(signum: int) -> None:
        prctl(pr_set_pdeathsig, signum, 0, 0, 0)
    return set_signal


_SET_PARENT_DEATH_SIGNAL = _parent_death_signal()


def _die_with_launcher(launcher_pid: int) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child die with the launcher (runs in the child, before exec)."""
    def preexec() -> None:
        if _SET_PARENT_DEATH_SIGNAL is not None:
            _SET_PARENT_DEATH_SIGNAL(signal.SIGKILL)
        if os.getppid() != launcher_pid:  # the launcher died before the request took effect
            os.kill(os.getpid(), signal.SIGKILL)
    return preexec


@dataclass
class _Running:
    """Book-keeping for one live local job."""

    number: int
    job: Job
    process: subprocess.Popen
    log: IO[str]
    started: float
    gpus: list[str] = field(default_factory=list)
    killed_at: Optional[float] = None   # when its time limit was enforced (SIGTERM sent)
    lock: Optional[HeldLock] = None   # the job's folder lock, held until it has ended


class LocalBackend(Backend):
    """Run jobs as local processes, at most ``max_jobs`` at a time.

    Each job gets its own process group so that stopping it also stops whatever it started, and
    dies with the launcher: SIGINT, SIGTERM and SIGHUP make the launcher stop its jobs, and a
    ``kill -9`` of the launcher kills each job's own process through the parent-death signal.
    With ``--time``, a job running longer is stopped (SIGTERM, then SIGKILL) and reported as timed
    out.  With ``--gpu N`` and visible GPUs, each job is given N GPUs of its own through
    CUDA_VISIBLE_DEVICES (which also limits how many jobs run at once); without visible GPUs the
    request is ignored with a warning, since the jobs can still run on CPU.
    """

    name = "local"

    def __init__(self, max_jobs: Optional[int] = None, gpus: Optional[Sequence[str]] = None):
        self.max_jobs = default_max_jobs() if max_jobs is None else max_jobs
        if self.max_jobs < 1:
            raise JobsUsageError(f"--max-jobs must be at least 1, got {self.max_jobs}")
        self._gpus = None if gpus is None else list(gpus)

    def _gpu_pool(self, per_job: int) -> Optional[list[str]]:
        """The GPU ids to hand out, or None when GPUs are not requested or cannot be assigned."""
        if per_job <= 0:
            return None
        gpus = visible_gpus() if self._gpus is None else list(self._gpus)
        if not gpus:
            logger.warning("--gpu %d requested but no GPU is visible (no CUDA_VISIBLE_DEVICES, no "
                           "working nvidia-smi); the jobs run without a GPU assignment", per_job)
            return None
        if per_job > len(gpus):
            raise JobsError(f"--gpu {per_job} asks for more GPUs per job than the {len(gpus)} visible "
                            f"({','.join(gpus)}); lower --gpu or make more GPUs visible")
        return gpus

    def _start(self, number: int, job: Job, resources: Resources, gpus: list[str]) -> _Running:
        extra = f"CUDA_VISIBLE_DEVICES={','.join(gpus)}" if gpus else ""
        lock = take_job_lock(job)  # before the log: a refused job must not rewrite a running one's log
        try:
            job.log_path.write_text(format_log_header(job, resources, self.name, extra), encoding="utf-8")
            log = open(job.log_path, "a", encoding="utf-8")
        except OSError as error:
            _release(lock)
            raise _NotStarted(f"cannot write its log {job.log_path}: {error}") from error
        env = dict(os.environ)
        # Parallel jobs on one machine must not each grab every core (torch, numpy and MKL honour these).
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[variable] = str(resources.num_threads)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        try:
            process = subprocess.Popen(job.argv, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                       preexec_fn=_die_with_launcher(os.getpid()))
        except OSError as error:
            log.close()
            _release(lock)
            raise _NotStarted(f"cannot execute {job.argv[0]!r}: {error}") from error
        logger.info("started %s (pid %d): %s", job.label, process.pid, job.log_path)
        return _Running(number, job, process, log, time.monotonic(), gpus, lock=lock)

    def _finish(self, running: _Running, returncode: int, resources: Resources,
                reason: str = "") -> JobResult:
        elapsed = time.monotonic() - running.started
        code = _exit_code(returncode)
        if running.killed_at is not None:
            code, reason = TIMEOUT_EXIT_CODE, _timeout_reason(resources)
        try:
            running.log.close()
        except OSError:
            pass  # the child's own writes failed the same way; the trailer below says what happened
        append_to_log(running.job.log_path, format_log_trailer(code, elapsed, resources.num_threads, reason))
        _release(running.lock)
        logger.info("%s ended with code %d after %.1f s", running.job.label, code, elapsed)
        return JobResult(running.job, code, elapsed, reason)

    def _terminate(self, live: list[_Running], reason: str, resources: Resources) -> list[JobResult]:
        """Stop every live job's process group: SIGTERM, a grace period, then SIGKILL."""
        for running in live:
            _signal_group(running.process, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
        while time.monotonic() < deadline and any(r.process.poll() is None for r in live):
            time.sleep(POLL_SECONDS)
        results = []
        for running in live:
            if running.process.poll() is None:
                _signal_group(running.process, signal.SIGKILL)
            returncode = running.process.wait()
            results.append(self._finish(running, returncode, resources,
                                        reason=f"terminated by serkit-run: {reason}"))
        return results

    @staticmethod
    def _enforce_time_limit(live: list[_Running], limit: Optional[int]) -> None:
        """SIGTERM the groups of jobs past ``limit`` seconds; SIGKILL those still alive after the grace."""
        if limit is None:
            return
        now = time.monotonic()
        for running in live:
            if running.killed_at is None and now - running.started > limit:
                logger.warning("%s ran past its time limit; stopping it", running.job.label)
                running.killed_at = now
                _signal_group(running.process, signal.SIGTERM)
            elif running.killed_at is not None and now - running.killed_at > TERMINATE_GRACE_SECONDS:
                _signal_group(running.process, signal.SIGKILL)

    def _reap(self, live: list[_Running], resources: Resources,
              results: dict[int, JobResult]) -> list[_Running]:
        """Finish the jobs that have exited: remove them from ``live``, record their results."""
        done = [running for running in live if running.process.poll() is not None]
        for running in done:
            live.remove(running)
            results[running.number] = self._finish(running, running.process.returncode, resources)
        return done

    def run(self, jobs: Sequence[Job], resources: Resources) -> list[JobResult]:
        pool = self._gpu_pool(resources.gpu)
        free_gpus = list(pool) if pool is not None else []
        limit = resources.time_limit
        pending = collections.deque(enumerate(jobs))
        live: list[_Running] = []
        results: dict[int, JobResult] = {}
        logger.info("running %d job(s), at most %d at a time, %s", len(jobs), self.max_jobs,
                    resources.describe())

        def can_start() -> bool:
            return (bool(pending) and len(live) < self.max_jobs
                    and (pool is None or len(free_gpus) >= resources.gpu))

        durations: list[float] = []
        with StopFlag() as stop, tqdm(total=len(jobs), unit="job", desc="serkit-run", disable=None) as bar:
            try:
                while (pending or live) and stop.signum is None:
                    self._enforce_time_limit(live, limit)
                    reaped = list(self._reap(live, resources, results))
                    for index, running in enumerate(reaped):
                        free_gpus.extend(running.gpus)
                        bar.update(1)
                        result = results[running.number]
                        durations += [result.elapsed] if result.ok else []
                        # Jobs reaped together are recorded together: number them one by one.
                        n_done = len(results) - len(reaped) + index + 1
                        bar.write(progress_line(result, n_done, len(jobs), durations, len(pending) + len(live),
                                                self.max_jobs), file=sys.stdout)
                        sys.stdout.flush()
                    while can_start() and stop.signum is None:
                        gpus = [free_gpus.pop(0) for _ in range(resources.gpu)] if pool is not None else []
                        number, job = pending.popleft()
                        try:
                            live.append(self._start(number, job, resources, gpus))
                        except FolderLocked as error:
                            free_gpus.extend(gpus)
                            results[number] = refused_result(job, error)
                            bar.update(1)
                        except _NotStarted as error:
                            free_gpus.extend(gpus)
                            results[number] = self._not_started(job, resources, str(error))
                            bar.update(1)
                    if live:
                        time.sleep(POLL_SECONDS)
            except BaseException:
                self._terminate(live, "the launcher failed", resources)
                raise
            if stop.signum is not None:
                reason = f"{signal.Signals(stop.signum).name} received"
                self._terminate(live, reason, resources)
                raise JobsInterrupted(stop.signum, len(live), len(pending))
        return [results[number] for number in range(len(jobs))]

    @staticmethod
    def _not_started(job: Job, resources: Resources, error: str) -> JobResult:
        """The result of a job whose program could not be executed (missing, not executable)."""
        reason = f"not started: {error}"
        append_to_log(job.log_path, format_log_trailer(NOT_STARTED_EXIT_CODE, 0.0, resources.num_threads, reason))
        return JobResult(job, NOT_STARTED_EXIT_CODE, 0.0, reason)


class _NotStarted(Exception):
    """Popen could not execute the job's program; the job fails, the others go on."""


# The exit code of a job refused because another run holds its folder (sysexits' EX_TEMPFAIL: try later).
REFUSED_EXIT_CODE = 75


def take_job_lock(job: Job) -> Optional[HeldLock]:
    """The lock of the job's folder (created if need be), or None for a job without one.

    Raises :class:`~serkit.jobs.lock.FolderLocked` naming the holder when another run has it.
    """
    if job.lock_dir is None:
        return None
    try:
        job.lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise JobsError(f"cannot create the job's folder {job.lock_dir}: {error}") from error
    return acquire_lock(job.lock_dir)


def _release(lock: Optional[HeldLock]) -> None:
    if lock is not None:
        lock.release()


def refused_result(job: Job, error: Exception) -> JobResult:
    """The result of a job not started because its folder is locked; its log is left untouched."""
    return JobResult(job, REFUSED_EXIT_CODE, 0.0, f"refused: {error}")


def _timeout_reason(resources: Resources) -> str:
    return f"timed out after {format_duration(resources.time_limit or 0)} (--time {resources.time})"


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """Signal the job's whole process group (its pid is the group id: start_new_session)."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def skip_done(jobs: Sequence[Job]) -> tuple[list[Job], list[JobResult]]:
    """Split ``jobs`` into those to run and results for those whose done marker exists."""
    to_run, skipped = [], []
    for job in jobs:
        if job.done_marker is not None and job.done_marker.exists():
            skipped.append(JobResult(job, 0, 0.0, f"{job.done_marker} exists", skipped=True))
        else:
            to_run.append(job)
    return to_run, skipped


def run_jobs(jobs: Sequence[Job], backend: Backend, resources: Resources = Resources()) -> list[JobResult]:
    """Prepare the log directories, then run on ``backend`` all jobs not already done.

    Results come back in the order of ``jobs``; a job skipped because its done marker exists
    counts as a success (its earlier log stays as it was).
    """
    to_run, skipped = skip_done(jobs)
    if skipped:
        logger.warning("%d job(s) already done, not run again: %s", len(skipped),
                       "; ".join(f"{result.job.label} ({result.reason})" for result in skipped))
    prepare_log_dirs(to_run)
    ran = backend.run(to_run, resources) if to_run else []
    by_job = {id(result.job): result for result in [*ran, *skipped]}
    return [by_job[id(job)] for job in jobs]
