"""Run a command as an array of jobs, Kaldi ``run.pl`` style.

Recipes write ``$train_cmd JOB=1:10 exp/tag/log/train.JOB.log python -m serkit.bin.train ...``
and ``cmd.sh`` decides where the jobs run.  This module holds the pieces of that idiom:

* expanding a job range (``JOB=1:10``) into concrete jobs by replacing every occurrence of the
  variable name in the log path and the command with the job index (Kaldi semantics: a plain
  integer, or zero-padded when asked, so ``foldJOB`` can name ``fold01``);
* the log format (a header with the command and start time; a trailer with run.pl's
  ``# Accounting: time=...`` and ``# Ended (code N) at ...`` lines, which Kaldi's log tools parse);
* a small :class:`Backend` interface, so a cluster backend (e.g. Slurm) can be added beside the
  :class:`LocalBackend`, which runs the jobs as parallel local processes.
"""
from __future__ import annotations

import abc
import collections
import datetime
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Optional, Sequence

from tqdm import tqdm

from serkit.errors import SerkitError

logger = logging.getLogger(__name__)

# A word that starts like ``NAME=`` is a job range attempt, never a log file (Kaldi's rule).
_RANGE_START = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_LIST = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<values>\d+(?:,\d+)+)$")
_RANGE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<start>\d+)(?::(?P<end>\d+))?$")

# How often the local backend checks its children; short enough to be invisible next to real jobs.
POLL_SECONDS = 0.05
# How long children get to exit after SIGTERM before they are killed with SIGKILL.
TERMINATE_GRACE_SECONDS = 5.0


class JobsError(SerkitError):
    """Jobs could not be prepared or launched (bad log path, missing bash, impossible resources)."""


class JobsUsageError(JobsError):
    """The launcher was called wrongly (malformed range, missing log or command)."""


class JobsInterrupted(JobsError):
    """The launcher got SIGINT/SIGTERM and terminated its running jobs."""

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


@dataclass(frozen=True)
class Job:
    """One concrete job: its index (None for a lone job without a range), command and log."""

    index: Optional[int]
    command: str
    log_path: Path

    @property
    def label(self) -> str:
        return "job" if self.index is None else f"job {self.index}"


@dataclass(frozen=True)
class JobResult:
    """How a job ended: exit code (128+N when killed by signal N) and wall-clock seconds."""

    job: Job
    returncode: int
    elapsed: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


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


def shell_join(words: Sequence[str]) -> str:
    """Join command words into one bash command line, the way run.pl does.

    Words without whitespace pass unchanged, so that escaped shell operators (``\\|``, ``\\>``)
    written in a recipe act as operators inside the job.  Words with whitespace (or empty words)
    are quoted so they stay a single argument.
    """
    return " ".join(word if word and not re.search(r"\s", word) else shlex.quote(word) for word in words)


def substitute(text: str, name: str, index: int, pad: int = 0) -> str:
    """Replace every occurrence of ``name`` in ``text`` by ``index`` (zero-padded to ``pad`` digits)."""
    return text.replace(name, f"{index:0{pad}d}")


def expand_jobs(log_template: str, command_words: Sequence[str],
                job_range: Optional[JobRange] = None, pad: int = 0) -> list[Job]:
    """Turn a log template and command into concrete jobs, one per index of ``job_range``."""
    if not command_words:
        raise JobsUsageError("no command given after the log file")
    if pad < 0:
        raise JobsUsageError(f"--pad must be >= 0, got {pad}")
    command = shell_join(command_words)
    if job_range is None:
        return [Job(None, command, Path(log_template))]
    n_jobs = len(job_range.indices())
    if n_jobs > 1 and job_range.name not in log_template:
        raise JobsUsageError(
            f"the log file {log_template!r} does not contain {job_range.name}, so all {n_jobs} jobs "
            f"would write the same log; put {job_range.name} in its name, e.g. "
            f"exp/log/train.{job_range.name}.log")
    return [Job(index, substitute(command, job_range.name, index, pad),
                Path(substitute(log_template, job_range.name, index, pad)))
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


def format_log_trailer(returncode: int, elapsed: float, num_threads: int) -> str:
    """The last lines of a job log, in run.pl's format (``utils/summarize_logs.pl`` parses them)."""
    return (f"# Accounting: time={int(round(elapsed))} threads={num_threads}\n"
            f"# Ended (code {returncode}) at {_now()}, elapsed time {elapsed:.2f} seconds\n")


def failure_message(results: Sequence[JobResult]) -> Optional[str]:
    """A one-line summary naming the failed jobs and the first failed log, or None if all passed."""
    failed = [result for result in results if not result.ok]
    if not failed:
        return None
    first = failed[0]
    if len(results) == 1:
        return f"job failed (code {first.returncode}); see {first.job.log_path}"
    indices = ",".join(str(result.job.index) for result in failed)
    which = "job" if len(failed) == 1 else "jobs"
    return (f"{len(failed)} / {len(results)} jobs failed ({which} {indices}); "
            f"see {first.job.log_path}")


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
    SIGINT/SIGTERM, stop its jobs and raise :class:`JobsInterrupted`.
    """

    name: str = "abstract"

    @abc.abstractmethod
    def run(self, jobs: Sequence[Job], resources: Resources) -> list[JobResult]:
        """Run ``jobs`` and return one result per job, in the order given."""


@dataclass
class _Running:
    """Book-keeping for one live local job."""

    number: int
    job: Job
    process: subprocess.Popen
    log: IO[str]
    started: float
    gpus: list[str] = field(default_factory=list)


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag the polling loop checks.

    A flag (instead of an exception raised at an arbitrary point) means a signal can never arrive
    between starting a child and recording it, so no child is ever left behind.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _exit_code(returncode: int) -> int:
    """Popen reports death by signal N as -N; logs and summaries use the shell's 128+N."""
    return 128 - returncode if returncode < 0 else returncode


class LocalBackend(Backend):
    """Run jobs as local ``bash`` processes, at most ``max_jobs`` at a time.

    Each job gets its own process group so that stopping it also stops whatever it started.
    With ``--gpu N`` and visible GPUs, each job is given N GPUs of its own through
    CUDA_VISIBLE_DEVICES (which also limits how many jobs run at once); without visible GPUs the
    request is ignored with a warning, since the jobs can still run on CPU.
    """

    name = "local"

    def __init__(self, max_jobs: Optional[int] = None, gpus: Optional[Sequence[str]] = None):
        self.max_jobs = default_max_jobs() if max_jobs is None else max_jobs
        if self.max_jobs < 1:
            raise JobsUsageError(f"--max-jobs must be at least 1, got {self.max_jobs}")
        self._gpus = None if gpus is None else list(gpus)
        bash = shutil.which("bash")
        if bash is None:
            raise JobsError("bash was not found on PATH; the local backend runs each job with bash")
        self._bash = bash

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
        try:
            job.log_path.write_text(format_log_header(job, resources, self.name, extra), encoding="utf-8")
            log = open(job.log_path, "a", encoding="utf-8")
        except OSError as error:
            raise JobsError(f"cannot write the log file {job.log_path}: {error}") from error
        env = dict(os.environ)
        # Parallel jobs on one machine must not each grab every core (torch, numpy and MKL honour these).
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[variable] = str(resources.num_threads)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        # pipefail: a failure inside a pipeline must fail the job rather than vanish.
        try:
            process = subprocess.Popen([self._bash, "-o", "pipefail", "-c", job.command],
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)
        except OSError as error:
            log.close()
            raise JobsError(f"cannot start {job.label} (log {job.log_path}): {error}") from error
        logger.info("started %s (pid %d): %s", job.label, process.pid, job.log_path)
        return _Running(number, job, process, log, time.monotonic(), gpus)

    def _finish(self, running: _Running, returncode: int, resources: Resources,
                note: str = "") -> JobResult:
        elapsed = time.monotonic() - running.started
        code = _exit_code(returncode)
        with running.log:
            if note:
                running.log.write(f"# {note}\n")
            running.log.write(format_log_trailer(code, elapsed, resources.num_threads))
        logger.info("%s ended with code %d after %.1f s", running.job.label, code, elapsed)
        return JobResult(running.job, code, elapsed)

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
                                        note=f"Terminated by serkit-run: {reason}"))
        return results

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
        pending = collections.deque(enumerate(jobs))
        live: list[_Running] = []
        results: dict[int, JobResult] = {}
        logger.info("running %d job(s), at most %d at a time, %s", len(jobs), self.max_jobs,
                    resources.describe())

        def can_start() -> bool:
            return (bool(pending) and len(live) < self.max_jobs
                    and (pool is None or len(free_gpus) >= resources.gpu))

        with _StopFlag() as stop, tqdm(total=len(jobs), unit="job", desc="serkit-run", disable=None) as bar:
            try:
                while (pending or live) and stop.signum is None:
                    for running in self._reap(live, resources, results):
                        free_gpus.extend(running.gpus)
                        bar.update(1)
                    while can_start() and stop.signum is None:
                        gpus = [free_gpus.pop(0) for _ in range(resources.gpu)] if pool is not None else []
                        number, job = pending.popleft()
                        live.append(self._start(number, job, resources, gpus))
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


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """Signal the job's whole process group (its pid is the group id: start_new_session)."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass  # the group is already gone


BACKENDS = {"local": LocalBackend}


def make_backend(name: str, max_jobs: Optional[int] = None) -> Backend:
    """Build a backend by name (the ``--backend`` option)."""
    if name not in BACKENDS:
        raise JobsUsageError(f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](max_jobs=max_jobs)


def run_jobs(jobs: Sequence[Job], backend: Backend, resources: Resources = Resources()) -> list[JobResult]:
    """Prepare the log directories, then run all jobs on ``backend``."""
    prepare_log_dirs(jobs)
    return backend.run(jobs, resources)
