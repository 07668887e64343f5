"""Train any model family on one fold (stage 3).

Usage:
    python -m serkit.bin.train HPARAMS.yaml [--overrides FILE.yaml] --data_dir D --fold_dir F \\
        [--lang_dir L] --output_folder O [--any_hparam VALUE ...] [--speechbrain_run_option VALUE ...]

HPARAMS.yaml is a HyperPyYAML file such as conf/w2v2_mtl.yaml or conf/tim_net.yaml; its ``model``
key names the family. ``--lang_dir`` (the token inventory) is needed only with ``mtl_lambda > 0``.
``--overrides FILE.yaml`` merges a recipe's override file into it; ``--name value`` pairs then override single hyperparameters (they
win over the file). SpeechBrain's run options (``--device``, ``--precision``, ``--max_grad_norm``,
``--noprogressbar``, ...; ``--help`` lists them) work as in any SpeechBrain recipe.

A fold whose output folder has ``train.done`` is skipped; an interrupted one resumes from its last
checkpoint. The log also goes to OUTPUT_FOLDER/train_log.txt.
"""
from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import ruamel.yaml
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml, resolve_references
from hyperpyyaml.core import recursive_update

from serkit.bin import LOG_FORMAT
from serkit.errors import SerkitError
from serkit.expdir import DONE_FILE, LOG_FILE
from serkit.lock import folder_lock
from serkit.train import train_fold

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


def merged_overrides(overrides_file: str | None, cli_overrides: str) -> dict:
    """The override file's mapping updated with the command line's (the command line wins).

    Both are read with ruamel's round-trip loader, which keeps HyperPyYAML tags (``!ref`` ...) for
    hyperpyyaml to resolve later.
    """
    yaml = ruamel.yaml.YAML()
    merged: dict = {}
    if overrides_file is not None:
        path = Path(overrides_file)
        if not path.is_file():
            raise UsageError(f"--overrides {path}: file not found")
        try:
            merged = yaml.load(path.read_text(encoding="utf-8")) or {}
        except ruamel.yaml.YAMLError as error:
            raise UsageError(f"--overrides {path}: not valid YAML ({error})") from None
        if not isinstance(merged, dict):
            raise UsageError(f"--overrides {path}: expected a mapping of hyperparameter: value lines")
    if cli_overrides.strip():
        recursive_update(merged, yaml.load(cli_overrides) or {}, must_match=False)
    return merged


def load_hparams(hparams_file: str, overrides: dict) -> dict:
    """Load HPARAMS.yaml with ``overrides``, turning hyperpyyaml's errors into usage errors."""
    path = Path(hparams_file)
    if not path.is_file():
        raise UsageError(f"{path}: hyperparameter file not found (e.g. conf/w2v2_mtl.yaml)")
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


def save_resolved_hparams(hparams_file: str, overrides: dict, out: Path) -> None:
    """Write the configuration as used (references resolved) to OUTPUT_FOLDER/hyperparams.yaml."""
    with open(hparams_file, encoding="utf-8") as handle:
        resolved = resolve_references(handle, overrides)
    header = f"# resolved from {Path(hparams_file).resolve()}\n"
    (out / "hyperparams.yaml").write_text(header + resolved.getvalue(), encoding="utf-8")


def add_log_handlers(out: Path) -> list[logging.Handler]:
    """Log INFO and above to stderr and to OUTPUT_FOLDER/train_log.txt (appended: resumes add to it)."""
    formatter = logging.Formatter(LOG_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr),
                                       logging.FileHandler(out / LOG_FILE, encoding="utf-8")]
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    return handlers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(argv)
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        sb.parse_arguments(["--help"])  # prints SpeechBrain's run options and exits
    handlers: list[logging.Handler] = []
    try:
        overrides_file, argv = split_overrides_file(argv)
        hparams_file, run_opts, cli_overrides = sb.parse_arguments(argv)
        overrides = merged_overrides(overrides_file, cli_overrides)
        hparams = load_hparams(hparams_file, overrides)
        for key in REQUIRED_DIRS + (("lang_dir",) if hparams.get("lang_dir") else ()):
            if not Path(hparams[key]).is_dir():
                raise UsageError(f"--{key} {hparams[key]}: directory not found")
        out = Path(hparams["output_folder"])
        out.mkdir(parents=True, exist_ok=True)
        handlers = add_log_handlers(out)
        if (out / DONE_FILE).exists():
            logger.info("%s exists: fold already trained, nothing to do", out / DONE_FILE)
            return 0
        logger.info("command: python -m serkit.bin.train %s", command)
        save_resolved_hparams(hparams_file, overrides, out)
        with folder_lock(out):  # a second concurrent run of this fold refuses, naming the holder
            scores = train_fold(hparams, run_opts)
        logger.info("done: test WA %.2f%% UA %.2f%%", 100 * scores["WA"], 100 * scores["UA"])
        return 0
    except SerkitError as error:
        if handlers:  # also into train_log.txt
            logger.error("%s", error)
        else:
            print(f"serkit.bin.train: error: {error}", file=sys.stderr)
        return 1
    finally:
        for handler in handlers:
            logging.getLogger().removeHandler(handler)
            handler.close()


if __name__ == "__main__":
    sys.exit(main())
