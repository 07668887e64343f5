"""serkit-run: run a command as parallel jobs with one log each (Kaldi ``run.pl`` interface).

Usage::

    serkit-run [options] [JOB=1:N] LOG COMMAND...

Every occurrence of the range variable (any ``NAME=a:b``) in LOG and in each word of COMMAND is
replaced by the job index.  COMMAND runs as an argument list, without a shell: ``;``, ``|`` or
``$(...)`` inside a word are literal text (write ``bash -c '...'`` for a pipeline).  Recipes set
it in ``cmd.sh`` (``train_cmd="serkit-run --backend local"``) and call
``$train_cmd JOB=1:10 exp/tag/log/train.JOB.log python -m serkit.bin.train ... foldJOB``.
``--backend slurm --config conf/slurm.conf`` submits the jobs as one Slurm array instead
(docs/cluster.md).

Exit status: 0 when all jobs succeed (or were already done, see --skip-if-exists), 1 when any
fails (the failed jobs, why, and the first failed log are named on stderr) or the jobs cannot be
launched, 124 when the only failures are timeouts (--time), 2 for a usage error, 128+N after
signal N.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from serkit.jobs.backends import BACKENDS, make_backend
from serkit.bin import one_line_errors
from serkit.jobs.jobs import (JobsInterrupted, JobsUsageError, Resources, exit_status,
                         expand_jobs, failure_message, first_logged_failure, log_tail, looks_like_job_range,
                         parse_duration, parse_job_range, run_jobs)

PROG = "serkit-run"


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _time_limit(text: str) -> str:
    try:
        parse_duration(text)
    except JobsUsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def job_name(log_template: str) -> str:
    """A cluster job name that says recipe, experiment and what runs, from the log template.

    Run from ``egs/<recipe>`` with ``exp/<tag>/<protocol>/log/train.foldJOB.log`` it is
    ``<recipe>/exp/<tag>/<protocol>/train.foldJOB`` (the scheduler adds the array task, the fold).
    """
    log = Path(log_template)
    if log.is_absolute() and log.is_relative_to(Path.cwd()):
        log = log.relative_to(Path.cwd())
    folder = log.parent.parent if log.parent.name == "log" else log.parent
    name = log.name[:-len(".log")] if log.name.endswith(".log") else log.name
    parts = [Path.cwd().name] + [part for part in folder.parts if part not in ("", ".", "/")] + [name]
    return "/".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, allow_abbrev=False,
        usage=f"{PROG} [options] [JOB=1:N] LOG COMMAND...",
        description="Run COMMAND as jobs JOB=1..N (in parallel, one log each), Kaldi run.pl style. "
                    "Options come first; everything from the job range (or the log) on is the job.")
    parser.add_argument("--max-jobs", "--max-jobs-run", dest="max_jobs", type=_positive_int,
                        default=None, help="jobs run at once (default: the number of CPUs)")
    parser.add_argument("--backend", choices=BACKENDS, default="local",
                        help="where the jobs run (default: local)")
    parser.add_argument("--pad", type=_non_negative_int, default=0,
                        help="zero-pad the job index to this many digits (--pad 2: foldJOB -> fold01); "
                             "default 0 = plain integer, as in Kaldi")
    parser.add_argument("--gpu", type=_non_negative_int, default=0,
                        help="GPUs per job; the local backend assigns them with CUDA_VISIBLE_DEVICES "
                             "when GPUs are visible, else ignores this with a warning")
    parser.add_argument("--mem", default=None, help="memory per job (recorded; for cluster backends)")
    parser.add_argument("--time", type=_time_limit, default=None,
                        help="time limit per job in Slurm's formats (MINUTES, HH:MM:SS, D-HH...); "
                             "a job running longer is stopped and reported as timed out")
    parser.add_argument("--num-threads", type=_positive_int, default=1,
                        help="threads per job (OMP_NUM_THREADS; the log's accounting line)")
    parser.add_argument("--skip-if-exists", metavar="FILE", default=None,
                        help="do not run a job whose FILE exists (JOB is substituted), e.g. "
                             "exp/tag/foldJOB/train.done: a rerun starts only the unfinished jobs")
    parser.add_argument("--lock", metavar="DIR", default=None,
                        help="the folder a job works in (JOB is substituted), e.g. exp/tag/foldJOB: its lock "
                             "is taken before the job's log is written and held while it runs, so a second "
                             "run of the same fold is refused, naming the holder, without touching its log")
    slurm = parser.add_argument_group("slurm backend")
    slurm.add_argument("--config", default=None,
                       help="maps the options above to sbatch options (see conf/slurm.conf)")
    slurm.add_argument("--partition", default=None, help="Slurm partition (through --config)")
    slurm.add_argument("--account", default=None, help="Slurm account (through --config)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each job's start and end")
    parser.add_argument("job", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _split_job_words(words: Sequence[str]):
    """Split ``[JOB=a:b] LOG COMMAND...`` into (range or None, log, command words)."""
    words = list(words)
    job_range = None
    if words and looks_like_job_range(words[0]):
        job_range = parse_job_range(words.pop(0))
    if not words:
        raise JobsUsageError("missing the log file and the command")
    if words[0].startswith("-"):
        raise JobsUsageError(f"option {words[0]!r} after the job range or log; options go first")
    log, command = words[0], words[1:]
    if not command:
        raise JobsUsageError(f"missing the command after the log file {log!r}")
    return job_range, log, command


@one_line_errors(PROG)
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format=f"{PROG}: %(message)s")
    try:
        job_range, log, command = _split_job_words(args.job)
        jobs = expand_jobs(log, command, job_range, pad=args.pad, done_marker=args.skip_if_exists,
                           lock_dir=args.lock)
    except JobsUsageError as error:
        parser.error(str(error))  # exits with status 2 after printing the usage line
    resources = Resources(gpu=args.gpu, mem=args.mem, time=args.time, num_threads=args.num_threads)
    options = {}
    if args.backend == "slurm":
        options = dict(config=args.config, job_name=job_name(log),
                       extra={"partition": args.partition, "account": args.account})
    elif args.config or args.partition or args.account:
        parser.error("--config, --partition and --account are for --backend slurm")
    try:
        results = run_jobs(jobs, make_backend(args.backend, args.max_jobs, **options), resources)
    except JobsInterrupted as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return error.exit_code
    message = failure_message(results)
    if message is not None:
        print(f"{PROG}: {message}", file=sys.stderr)
        logged = first_logged_failure(results)
        tail = log_tail(logged.job.log_path) if logged is not None else ""
        if tail:
            print(f"{PROG}: the last lines of {logged.job.log_path}:\n{tail}", file=sys.stderr)
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
