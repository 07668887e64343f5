"""The Slurm backend of serkit-run: one ``sbatch --array`` per call, then wait and collect.

``$train_cmd JOB=1:10 exp/tag/log/train.foldJOB.log python -m serkit.bin.train ...`` with
``train_cmd="serkit-run --backend slurm --config conf/slurm.conf"`` submits one array job whose
task ids are the job indices (the folds), throttled to ``--max-jobs`` tasks at once.  How the
generic options (``--gpu``, ``--mem``, ``--time``, ``--num-threads``, ``--partition``,
``--account``) become sbatch options is read from a config file in the style of Kaldi's slurm.pl:

    command sbatch                        # the submit command and options for every job
    option time=* --time=$0               # NAME=* matches any value; $0 is the value
    option gpu=0                          # an exact value wins over *; no words: add nothing
    option gpu=* --gres=gpu:$0
    default gpu=0                         # the value when the option is not given

Nothing the user typed is ever parsed by a shell: the job's argument lists go into a JSON file
next to the logs, and each array task runs ``python -m serkit.bin.slurm_task FILE TASK_ID``,
which starts that argument list, writes the log header and trailer, and leaves a status file
with its exit code.  The launcher polls ``squeue`` (accounting, hence ``sacct``, may be off),
reads the status files, and names the log of every failed task.  Tasks are submitted with
``--requeue``: a preempted task starts again and training resumes from its newest checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from serkit.atomic import atomic_write_text
from serkit.jobs.jobs import (TIMEOUT_EXIT_CODE, Backend, Job, JobResult, JobsError, JobsInterrupted,
                         JobsUsageError, Resources, StopFlag, append_to_log, format_duration,
                         format_log_trailer)

logger = logging.getLogger(__name__)

# Generic options a config may map, as serkit-run spells them.
OPTION_NAMES = ("gpu", "mem", "time", "num_threads", "partition", "account")
# Slurm states after which a task will not run again.  PREEMPTED and NODE_FAIL are left out: with
# --requeue such a task goes back to PENDING, so the launcher waits until squeue shows that, or
# until the task is purged from squeue (then it ended for good and its status file tells how).
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
# squeue is asked every POLL_MIN seconds at first, then less often (up to POLL_MAX): quick
# feedback for short jobs without loading the controller during hours of training.
POLL_MIN_SECONDS = 0.5
POLL_MAX_SECONDS = 10.0
# Consecutive squeue failures (a busy or restarting controller) tolerated before giving up.
SQUEUE_RETRIES = 8
COMMAND_TIMEOUT_SECONDS = 120


@dataclass
class SlurmConfig:
    """A parsed slurm.pl-style config: the submit command and the option rules."""

    path: Path
    command: list[str] = field(default_factory=lambda: ["sbatch"])
    defaults: dict[str, str] = field(default_factory=dict)
    rules: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # name -> value -> words

    def sbatch_options(self, values: dict[str, Optional[str]]) -> list[str]:
        """The sbatch words for the given option values (None: not given, so the default if any)."""
        words: list[str] = []
        for name in OPTION_NAMES:
            value = values.get(name)
            if value is None:
                value = self.defaults.get(name)
            if value is None:
                continue
            rules = self.rules.get(name, {})
            chosen = rules.get(value, rules.get("*"))
            if chosen is None:
                raise JobsUsageError(
                    f"{self.path}: no rule for {name}={value}; add a line such as "
                    f"'option {name}=* --{name.replace('_', '-')}=$0' (see conf/slurm.conf)")
            words += [word.replace("$0", value) for word in chosen]
        return words


def read_config(path: Path | str) -> SlurmConfig:
    """Parse a Kaldi slurm.pl-style config (``command``, ``option NAME=VALUE words``, ``default``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise JobsUsageError(f"cannot read the Slurm config {path}: {error}") from error
    config = SlurmConfig(path)
    for number, raw in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as error:
            raise JobsUsageError(f"{path}:{number}: {error}") from error
        if not words:
            continue
        keyword, rest = words[0], words[1:]
        if keyword == "command" and rest:
            config.command = rest
            continue
        setting = re.fullmatch(r"(\w+)=(\S+)", rest[0]) if rest else None
        if keyword not in ("option", "default") or setting is None:
            raise JobsUsageError(f"{path}:{number}: expected 'command WORDS', 'option NAME=VALUE "
                                 f"[WORDS]' or 'default NAME=VALUE', got {raw.strip()!r}")
        name, value = setting[1], setting[2]
        if name not in OPTION_NAMES:
            raise JobsUsageError(f"{path}:{number}: unknown option {name!r}; known: "
                                 f"{', '.join(OPTION_NAMES)}")
        if keyword == "default":
            config.defaults[name] = value
        else:
            config.rules.setdefault(name, {})[value] = rest[1:]
    return config


def task_id(job: Job) -> int:
    """The array task id of a job: its index (the fold), 0 for a lone job without a range."""
    return 0 if job.index is None else job.index


@dataclass(frozen=True)
class ArrayFiles:
    """Where one submission keeps its state, next to the logs: ``<log dir>/slurm/<stem>.*``."""

    folder: Path
    stem: str

    @property
    def spec(self) -> Path:
        return self.folder / f"{self.stem}.json"

    @property
    def script(self) -> Path:
        return self.folder / f"{self.stem}.sh"

    def status(self, task: int) -> Path:
        return self.folder / f"{self.stem}.{task}.status"

    @property
    def slurm_output(self) -> str:
        return str(self.folder / f"{self.stem}.%a.out")


def write_array_files(files: ArrayFiles, jobs: Sequence[Job], resources: Resources) -> None:
    """The JSON the tasks read (argument lists, logs, status files) and the batch script.

    The script is fixed text: the interpreter and the JSON path, quoted.  The user's words only
    ever travel inside the JSON.
    """
    files.folder.mkdir(parents=True, exist_ok=True)
    spec = {"cwd": os.getcwd(),
            "resources": {"gpu": resources.gpu, "mem": resources.mem, "time": resources.time,
                          "num_threads": resources.num_threads},
            "tasks": {str(task_id(job)): {"index": job.index, "argv": list(job.argv),
                                          "log": str(Path(job.log_path).absolute()),
                                          "lock": str(Path(job.lock_dir).absolute()) if job.lock_dir else None,
                                          "status": str(files.status(task_id(job)).absolute())}
                      for job in jobs}}
    atomic_write_text(files.spec, json.dumps(spec, indent=1) + "\n")
    script = (f"#!/bin/sh\n"
              f"# serkit-run: one array task runs the argument list stored in {files.spec.name}\n"
              f"exec {shlex.quote(sys.executable)} -m serkit.bin.slurm_task "
              f"{shlex.quote(str(files.spec.absolute()))} \"$SLURM_ARRAY_TASK_ID\"\n")
    atomic_write_text(files.script, script)
    files.script.chmod(0o755)
    for job in jobs:
        files.status(task_id(job)).unlink(missing_ok=True)  # a status from an earlier run is not ours


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise JobsError(f"{shlex.join(argv)} failed: {error}") from error


class SlurmBackend(Backend):
    """Submit the jobs as one Slurm array, wait for every task, and report how each ended."""

    name = "slurm"

    def __init__(self, max_jobs: Optional[int] = None, config: Optional[str | Path] = None,
                 job_name: str = "serkit", extra: Optional[dict[str, Optional[str]]] = None):
        if config is None:
            raise JobsUsageError("--backend slurm needs --config FILE, the file that maps --gpu, "
                                 "--mem, --time ... to sbatch options (e.g. conf/slurm.conf)")
        if max_jobs is not None and max_jobs < 1:
            raise JobsUsageError(f"--max-jobs must be at least 1, got {max_jobs}")
        self.max_jobs = max_jobs
        self.config = read_config(config)
        self.job_name = job_name
        self.extra = dict(extra or {})
        for tool in (self.config.command[0], "squeue", "scancel"):
            if shutil.which(tool) is None:
                raise JobsError(f"{tool} was not found on PATH: the Slurm backend needs Slurm's "
                                f"client commands (Debian: apt-get install slurm-client; or run "
                                f"on a login node of the cluster)")

    def sbatch_command(self, jobs: Sequence[Job], resources: Resources, files: ArrayFiles) -> list[str]:
        """The full sbatch argument list for ``jobs`` (one array; ``%max_jobs`` throttles it)."""
        values = {"gpu": str(resources.gpu), "mem": resources.mem, "time": resources.time,
                  "num_threads": str(resources.num_threads), **self.extra}
        tasks = ",".join(str(task_id(job)) for job in jobs)
        if self.max_jobs is not None:
            tasks += f"%{self.max_jobs}"
        return [*self.config.command, *self.config.sbatch_options(values),
                f"--job-name={self.job_name}", f"--array={tasks}", "--requeue",
                f"--output={files.slurm_output}", "--parsable", str(files.script)]

    def submit(self, jobs: Sequence[Job], resources: Resources, files: ArrayFiles) -> str:
        """Write the task files, submit the array, return its job id."""
        write_array_files(files, jobs, resources)
        command = self.sbatch_command(jobs, resources, files)
        completed = _run(command)
        if completed.returncode != 0:
            raise JobsError(f"sbatch refused the jobs (exit {completed.returncode}): "
                            f"{completed.stderr.strip() or completed.stdout.strip()}\n"
                            f"command: {shlex.join(command)}")
        array_id = completed.stdout.strip().split(";")[0]
        if not array_id.isdigit():
            raise JobsError(f"cannot read a job id from sbatch's output {completed.stdout!r}")
        logger.info("submitted Slurm array %s (%s): %d task(s)", array_id, self.job_name, len(jobs))
        return array_id

    @staticmethod
    def task_states(array_id: str) -> Optional[dict[int, str]]:
        """Task id -> Slurm state of the array's tasks squeue still knows, or None if squeue failed."""
        completed = _run(["squeue", "-h", "-r", "-j", array_id, "--states=all", "-o", "%K %T"])
        if completed.returncode != 0:
            if "Invalid job id" in completed.stderr:
                return {}  # the whole array has ended and been purged from the controller
            logger.warning("squeue failed: %s", completed.stderr.strip())
            return None
        states = {}
        for line in completed.stdout.splitlines():
            task, _, state = line.strip().partition(" ")
            if task.isdigit():
                states[int(task)] = state.strip()
        return states

    def run(self, jobs: Sequence[Job], resources: Resources) -> list[JobResult]:
        stem = self.job_name.rsplit("/", 1)[-1]
        files = ArrayFiles(Path(jobs[0].log_path).parent / "slurm", stem)
        with StopFlag() as stop:
            array_id = self.submit(jobs, resources, files)
            started = time.monotonic()
            last_state = self._wait(array_id, jobs, files, stop)
        if stop.signum is not None:
            _run(["scancel", array_id])
            unfinished = [state for state in last_state.values() if state not in FINAL_STATES]
            running = sum(state == "RUNNING" for state in unfinished)
            raise JobsInterrupted(stop.signum, running, len(unfinished) - running)
        elapsed = time.monotonic() - started
        return [self._result(job, last_state.get(task_id(job), ""), files, resources, elapsed)
                for job in jobs]

    def _wait(self, array_id: str, jobs: Sequence[Job], files: ArrayFiles,
              stop: StopFlag) -> dict[int, str]:
        """Poll squeue until every task is final (or a stop signal); the last state of each task."""
        ids = [task_id(job) for job in jobs]
        last: dict[int, str] = {task: "PENDING" for task in ids}
        unseen: dict[int, int] = {task: 0 for task in ids}  # polls a task was missing since submission
        delay, failures = POLL_MIN_SECONDS, 0
        with tqdm(total=len(ids), unit="job", desc=f"slurm {array_id}", disable=None) as bar:
            while stop.signum is None:
                states = self.task_states(array_id)
                if states is None:
                    failures += 1
                    if failures > SQUEUE_RETRIES:
                        raise JobsError(f"squeue kept failing; Slurm array {array_id} may still be "
                                        f"running (check with squeue -j {array_id})")
                else:
                    failures = 0
                    for task in ids:
                        if task in states:
                            last[task], unseen[task] = states[task], -1
                        elif last[task] not in FINAL_STATES and self._has_ended(task, unseen, files):
                            last[task] = "ENDED"  # purged from squeue after it ended
                    done = sum(last[task] in FINAL_STATES or last[task] == "ENDED" for task in ids)
                    bar.update(done - bar.n)
                    if done == len(ids):
                        break
                self._sleep(delay, stop)
                delay = min(delay * 1.5, POLL_MAX_SECONDS)
        return last

    @staticmethod
    def _has_ended(task: int, unseen: dict[int, int], files: ArrayFiles) -> bool:
        """Whether a task squeue does not list has ended, rather than not being listed yet."""
        if unseen[task] < 0 or files.status(task).exists():
            return True  # it was listed before, or it wrote its status
        unseen[task] += 1
        return unseen[task] > SQUEUE_RETRIES

    @staticmethod
    def _sleep(seconds: float, stop: StopFlag) -> None:
        deadline = time.monotonic() + seconds
        while stop.signum is None and time.monotonic() < deadline:
            time.sleep(0.05)

    @staticmethod
    def _result(job: Job, state: str, files: ArrayFiles, resources: Resources,
                elapsed: float) -> JobResult:
        """How one task ended, from the status it wrote and the state Slurm last showed."""
        try:
            status = json.loads(files.status(task_id(job)).read_text(encoding="utf-8"))
            code, elapsed, reason = int(status["returncode"]), float(status["elapsed"]), status["reason"]
        except (OSError, ValueError, KeyError, TypeError):
            status, code, reason = None, 1, ""
        if state == "TIMEOUT":
            limit = format_duration(resources.time_limit) if resources.time else "the partition's limit"
            code, reason = TIMEOUT_EXIT_CODE, f"timed out after {limit} (Slurm state TIMEOUT)"
        elif state not in ("COMPLETED", "FAILED", "ENDED", ""):
            code = code or 1
            reason = f"Slurm state {state}" + (f": {reason}" if reason else "")
        if status is None:
            reason = (reason or f"Slurm state {state or 'unknown'}") + ", no exit status written"
            append_to_log(job.log_path, format_log_trailer(code, 0.0, resources.num_threads, reason))
        return JobResult(job, code, elapsed, reason)
