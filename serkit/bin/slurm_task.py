"""One task of a serkit-run Slurm array: ``python -m serkit.bin.slurm_task SPEC.json TASK_ID``.

The batch script that :mod:`serkit.jobs.slurm` submits runs this on the compute node.  It looks up the
task's argument list in SPEC.json and runs it as a list (no shell), with the job's output in its
log between run.pl's header and trailer, then writes the exit code to the task's status file,
which the waiting launcher reads (Slurm accounting may be off, so the task reports itself).
A requeued task (preemption, node failure) appends to its log, so the resumed run follows the
interrupted one.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from serkit.atomic import atomic_write_text
from serkit.jobs.jobs import (NOT_STARTED_EXIT_CODE, STOP_SIGNALS, Job, Resources, append_to_log,
                         format_log_header, format_log_trailer, refused_result, take_job_lock)
from serkit.jobs.lock import FolderLocked

PROG = "serkit.bin.slurm_task"


def _load_task(spec_path: str, task: str) -> tuple[dict, dict]:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    if task not in spec["tasks"]:
        raise SystemExit(f"{PROG}: task {task} is not in {spec_path} (tasks: {', '.join(spec['tasks'])})")
    return spec, spec["tasks"][task]


def _write_status(path: Path, returncode: int, elapsed: float, reason: str) -> None:
    """The launcher's source of truth about this task; written whole or not at all."""
    text = json.dumps({"returncode": returncode, "elapsed": round(elapsed, 3), "reason": reason}) + "\n"
    try:
        atomic_write_text(path, text)
    except OSError as error:
        print(f"{PROG}: cannot write the status file {path} ({error}): {text}", file=sys.stderr)


def run_task(spec: dict, task: dict) -> int:
    """Run one task's argument list with its log, trailer and status; return its exit code."""
    os.chdir(spec["cwd"])
    resources = Resources(**spec["resources"])
    job = Job(task["index"], tuple(task["argv"]), Path(task["log"]))
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    slurm_id = f"{os.environ.get('SLURM_ARRAY_JOB_ID', '?')}_{os.environ.get('SLURM_ARRAY_TASK_ID', '?')}"
    header = format_log_header(job, resources, "slurm", f"slurm_job={slurm_id} restarts={restarts}")
    env = dict(os.environ, OMP_NUM_THREADS=str(resources.num_threads),
               MKL_NUM_THREADS=str(resources.num_threads))
    job = Job(job.index, job.argv, job.log_path, lock_dir=Path(task["lock"]) if task.get("lock") else None)
    try:
        lock = take_job_lock(job)  # before the log: a refused task must not touch a running one's log
    except FolderLocked as error:
        refused = refused_result(job, error)
        print(f"{PROG}: {refused.reason}", file=sys.stderr)
        _write_status(Path(task["status"]), refused.returncode, 0.0, refused.reason)
        return refused.returncode
    started = time.monotonic()
    try:
        code, reason = _run_logged(job, header, "a" if restarts else "w", env)
        elapsed = time.monotonic() - started
        append_to_log(job.log_path, format_log_trailer(code, elapsed, resources.num_threads, reason), PROG)
    finally:
        if lock is not None:
            lock.release()
    _write_status(Path(task["status"]), code, elapsed, reason)
    return code


def _run_logged(job: Job, header: str, mode: str, env: dict) -> tuple[int, str]:
    """Start the argument list with its output in the log; forward stop signals; (code, reason)."""
    try:
        log = open(job.log_path, mode, encoding="utf-8")
        log.write(header)
        log.flush()
    except OSError as error:
        return NOT_STARTED_EXIT_CODE, f"not started: cannot write its log {job.log_path}: {error}"
    received: list[int] = []
    with log:
        try:
            process = subprocess.Popen(job.argv, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, env=env)
        except OSError as error:
            return NOT_STARTED_EXIT_CODE, f"not started: cannot execute {job.argv[0]!r}: {error}"

        def forward(signum: int, frame) -> None:
            received.append(signum)
            process.send_signal(signum)

        previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
        try:
            returncode = process.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    code = 128 - returncode if returncode < 0 else returncode
    reason = ""
    if received:
        reason = (f"terminated by {signal.Signals(received[0]).name} (scancel, preemption or the "
                  f"time limit)")
    return code, reason


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 2:
        print(f"usage: python -m {PROG} SPEC.json TASK_ID", file=sys.stderr)
        return 2
    spec, task = _load_task(*args)
    return run_task(spec, task)


if __name__ == "__main__":
    sys.exit(main())
