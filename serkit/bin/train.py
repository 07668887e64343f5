"""Train any model family on one fold (stage 3).

Usage:
    python -m serkit.bin.train HPARAMS.yaml [--overrides FILE.yaml] --data_dir D --fold_dir F \\
        [--lang_dir L] --output_folder O [--nproc N] [--any_hparam VALUE ...] [--speechbrain_run_option VALUE ...]

HPARAMS.yaml is a HyperPyYAML file such as conf/w2v2_mtl.yaml or conf/tim_net.yaml; its ``model``
key names the family. ``--lang_dir`` (the token inventory) is needed only with ``mtl_lambda > 0``.
``--overrides FILE.yaml`` merges a recipe's override file into it; ``--name value`` pairs then override single hyperparameters (they
win over the file). SpeechBrain's run options (``--device``, ``--precision``, ``--max_grad_norm``,
``--noprogressbar``, ...; ``--help`` lists them) work as in any SpeechBrain recipe.

``--nproc N`` (N > 1) trains the fold with N processes, one per GPU (DDP): the command starts
itself again under ``torchrun --standalone --nproc_per_node N`` (on CPUs the processes use gloo).
``batch_size`` stays the global batch; each process takes its share (serkit.training.distributed). Started
by torchrun directly, the command also trains with DDP.

A fold whose output folder has ``train.done`` is skipped; an interrupted one resumes from its last
checkpoint. The log also goes to OUTPUT_FOLDER/train_log.txt (rank 0's; other processes log
warnings and errors to stderr only).
"""
from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import NoReturn

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml, resolve_references
from hyperpyyaml.core import recursive_update
from speechbrain.utils.run_opts import RunOptions

from serkit.training import distributed, expdir, tensorboard
from serkit.bin import LOG_FORMAT
from serkit.errors import Refused, SerkitError
from serkit.training.expdir import DONE_FILE, LOG_FILE
from serkit.jobs.jobs import SUMMARY_MARKER
from serkit.jobs.lock import acquire
from serkit.safe_yaml import cli_overrides, load_plain_mapping, refuse_python_tags
from serkit.training.train import train_fold

logger = logging.getLogger("serkit.bin.train")

REQUIRED_DIRS = ("data_dir", "fold_dir")


class UsageError(SerkitError):
    """The command line or configuration cannot be used as given."""


def split_overrides_file(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take ``--overrides FILE`` (or ``--overrides=FILE``) out of ``argv``; SpeechBrain's parser
    would otherwise read it as a hyperparameter called ``overrides``."""
    rest, path = [], None
    args = iter(argv)
    for arg in args:
        if arg == "--overrides":
            path = next(args, None)
            if path is None:
                raise UsageError("--overrides needs a file name (a YAML file of hyperparameter overrides)")
        elif arg.startswith("--overrides="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return path, rest


def split_nproc(argv: list[str]) -> tuple[int, list[str]]:
    """Take ``--nproc N`` (or ``--nproc=N``) out of ``argv``: the number of processes (default 1)."""
    rest, value = [], "1"
    args = iter(argv)
    for arg in args:
        if arg == "--nproc":
            value = next(args, "")
        elif arg.startswith("--nproc="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"--nproc needs a number of processes (1 or more, one per GPU), got {value!r}")
    return int(value), rest


def merged_overrides(overrides_file: str | None, cli_overrides: dict) -> dict:
    """The override file's mapping updated with the command line's (the command line wins).

    Both are data (:mod:`serkit.safe_yaml`): the file may hold only plain values (a tag, or a
    document that is not a mapping, is refused naming the file and line) and the command line's
    values were typed one by one, so no value can add a key or build an object.
    """
    merged: dict = {}
    if overrides_file is not None:
        merged = load_plain_mapping(overrides_file, "overrides file")
    recursive_update(merged, dict(cli_overrides), must_match=False)
    return merged


def command_line_overrides(argv: list[str]) -> dict:
    """The ``--name value`` words SpeechBrain's parser leaves over, as a mapping (never YAML text).

    ``sb.parse_arguments`` joins them into one YAML string, where a value with a newline adds keys
    and a value with a tag builds objects; so they are taken from its parser and typed one by one.
    """
    _, rest = RunOptions._create_parser().parse_known_args(argv)
    return cli_overrides(rest)


def load_hparams(hparams_file: str, overrides: dict) -> dict:
    """Load HPARAMS.yaml with ``overrides``, turning hyperpyyaml's errors into usage errors."""
    path = Path(hparams_file)
    if not path.is_file():
        raise UsageError(f"{path}: hyperparameter file not found (e.g. conf/w2v2_mtl.yaml)")
    refuse_python_tags(path.read_text(encoding="utf-8"), str(path))
    try:
        with open(path, encoding="utf-8") as handle:
            return load_hyperpyyaml(handle, overrides)
    except KeyError as error:  # an override naming a key the file does not have
        raise UsageError(f"{path}: {error.args[0]} (check the spelling of the option)") from None
    except ValueError as error:
        message = str(error)
        if "!PLACEHOLDER" in message:
            key = message.split("'")[1] if message.count("'") >= 2 else message
            raise UsageError(f"{path}: '{key}' has no value; pass --{key} on the command line "
                             "or in --overrides") from None
        raise UsageError(f"{path}: {message}") from None


def save_resolved_hparams(hparams_file: str, overrides: dict, out: Path) -> str:
    """Write the configuration as used (references resolved) to OUTPUT_FOLDER/hyperparams.yaml;
    return it (provenance.json keeps it too, per run, since a resume may use another)."""
    with open(hparams_file, encoding="utf-8") as handle:
        resolved = resolve_references(handle, overrides).getvalue()
    header = f"# resolved from {Path(hparams_file).resolve()}\n"
    (out / "hyperparams.yaml").write_text(header + resolved, encoding="utf-8")
    return resolved


def add_log_handlers(out: Path) -> list[logging.Handler]:
    """Log INFO and above to stderr and to OUTPUT_FOLDER/train_log.txt (appended: resumes add to it).

    Under DDP only rank 0 does so; the other processes log warnings and errors to stderr, marked
    with their rank, so the job log holds each epoch once.
    """
    if not distributed.is_main():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"[rank {distributed.rank()}] {LOG_FORMAT}"))
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger().addHandler(handler)
        return [handler]
    formatter = logging.Formatter(LOG_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr),
                                       logging.FileHandler(out / LOG_FILE, encoding="utf-8")]
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    return handlers


def restart_under_torchrun(nproc: int, args: list[str], handlers: list[logging.Handler]) -> NoReturn:
    """Become ``torchrun`` running this command (without ``--nproc``) as ``nproc`` processes.

    Called once the command line and folders have been checked, so a mistake is reported once,
    not by every process. ``exec`` keeps the job's process id: a launcher that stops the job stops
    torchrun, which stops its processes.
    """
    command = distributed.torchrun_command(nproc, "serkit.bin.train", args)
    logger.info("restarting as %d processes: %s", nproc, shlex.join(command))
    for handler in handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(argv)
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        sb.parse_arguments(["--help"])  # prints SpeechBrain's run options and exits
    handlers: list[logging.Handler] = []
    try:
        nproc, argv = split_nproc(argv)
        use_tensorboard = "--tensorboard" in argv  # run.sh --tensorboard: live curves (serkit.training.tensorboard)
        argv = [arg for arg in argv if arg != "--tensorboard"]
        train_args = list(argv)
        overrides_file, argv = split_overrides_file(argv)
        hparams_file, run_opts, _ = sb.parse_arguments(argv)  # its overrides are YAML text: not used
        if distributed.under_torchrun():
            run_opts = distributed.start(run_opts)
        overrides = merged_overrides(overrides_file, command_line_overrides(argv))
        hparams = load_hparams(hparams_file, overrides)
        if use_tensorboard:
            tensorboard.check_available()
            hparams["tensorboard"] = True
        for key in REQUIRED_DIRS + (("lang_dir",) if hparams.get("lang_dir") else ()):
            if not Path(hparams[key]).is_dir():
                raise UsageError(f"--{key} {hparams[key]}: directory not found")
        out = Path(hparams["output_folder"])
        out.mkdir(parents=True, exist_ok=True)
        # The fold's lock comes before any file of the fold is written: a refused second run must not
        # touch the running one's train_log.txt or hyperparams.yaml. Rank 0 holds it for all
        # processes; if it is refused, it exits and torchrun stops the others.
        held = acquire(out) if distributed.is_main() else None
        try:
            handlers = add_log_handlers(out)
            if (out / DONE_FILE).exists():
                logger.info("%s exists: fold already trained, nothing to do", out / DONE_FILE)
                return 0
            if nproc > 1 and not distributed.under_torchrun():
                if held is not None:
                    held.keep_across_exec()  # torchrun keeps this pid: its rank 0 works under this lock
                restart_under_torchrun(nproc, train_args, handlers)
            logger.info("command: python -m serkit.bin.train %s", command)
            if distributed.world_size() > 1:
                logger.info("training with %d processes (DDP, %s backend)", distributed.world_size(),
                            run_opts.distributed_backend)
            invocation = {"command": f"python -m serkit.bin.train {command}",
                          "cwd": os.getcwd(), "config": hparams_file, "overrides": overrides}
            if distributed.is_main():
                invocation["resolved_config"] = save_resolved_hparams(hparams_file, overrides, out)
            scores = train_fold(hparams, run_opts, invocation=invocation)
        finally:
            if held is not None:
                held.release()
        logger.info("done: test WA %.2f%% UA %.2f%%", 100 * scores["WA"], 100 * scores["UA"])
        # serkit-run repeats this line in stage 3's one-line-per-fold progress (serkit.jobs.jobs.SUMMARY_MARKER).
        logger.info("%s%s", SUMMARY_MARKER, expdir.fold_summary(expdir.read_history(out / expdir.HISTORY_FILE)))
        return 0
    except SerkitError as error:
        if handlers:  # also into train_log.txt
            logger.error("%s", error)
        else:
            print(f"serkit.bin.train: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, Refused) else 1
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()
        distributed.finish()


if __name__ == "__main__":
    sys.exit(main())
