"""What produced a result: package versions, machine, serkit's git commit, config and command.

One owner for the facts that let someone trust or rerun a figure. Two places record them:

- every fold directory, at the start of each training run (``provenance.json``, written through
  :func:`serkit.training.expdir.write_provenance` by :func:`serkit.training.train.train_fold` for every family, the
  closed-form eGeMAPS floor included): the environment, the device and the precision the fold
  trains in, the commit of the serkit checkout and whether its tree was dirty, the resolved config
  and the command. A resumed fold adds a run, since it may continue on another machine;
- RESULTS.md's environment block (:mod:`serkit.scoring.results_md`), for the scoring machine.

Versions come from package metadata, so nothing heavy is imported to read them.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

#: The packages whose versions shape results (distribution names, as pip knows them).
PACKAGES = ("torch", "torchaudio", "speechbrain", "transformers", "numpy", "scikit-learn", "opensmile")

#: Set by egs/TEMPLATE/ser.sh to the recipe's command (``./run.sh ...``), which trains each fold.
RECIPE_COMMAND_VARIABLE = "SERKIT_RECIPE_COMMAND"

#: How many changed paths a dirty tree's record lists (enough to see what differed, not a whole diff).
MAX_CHANGES = 50


def package_versions() -> dict[str, str]:
    """``{"python": ..., "torch": ..., ...}`` for :data:`PACKAGES`; ``not installed`` where absent."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def environment_info() -> dict[str, str]:
    """The package versions plus this machine's CPU and GPU(s)."""
    return {**package_versions(), "cpu": cpu_name(), "gpu": gpu_name()}


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux) and its core count."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def gpu_name() -> str:
    """GPU names from nvidia-smi (importing torch just for this would cost seconds)."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "none (no nvidia-smi)"
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return ", ".join(names) if done.returncode == 0 and names else "none"


def git_info(path: str | Path, ignore: str | Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty", "changes"}`` of the git checkout holding ``path``.

    ``commit`` is None outside a checkout (e.g. serkit installed from a wheel). ``changes`` are
    ``git status --porcelain`` lines (at most :data:`MAX_CHANGES`). ``ignore`` (RESULTS.md itself)
    does not count as a change: writing the previous section must not make every later one look dirty.
    """
    cwd = Path(path).resolve()
    cwd = cwd if cwd.is_dir() else cwd.parent
    commit = _git(cwd, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "changes": []}
    top = _git(cwd, "rev-parse", "--show-toplevel")
    status = _git(cwd, "status", "--porcelain") or ""
    ignored = os.path.relpath(Path(ignore).resolve(), top) if ignore is not None and top else None
    changes = [line for line in status.splitlines() if line[3:].strip('"') != ignored]
    return {"commit": commit, "dirty": bool(changes), "changes": changes[:MAX_CHANGES]}


def git_state(path: str | Path, ignore: str | Path | None = None) -> str:
    """:func:`git_info` as one line: the commit, with ' (dirty)' if files differ from it."""
    info = git_info(path, ignore)
    if info["commit"] is None:
        return "unknown (not a git checkout, or no commit yet)"
    return info["commit"] + (" (dirty)" if info["dirty"] else "")


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # rstrip only: a porcelain status line starts with a meaningful space (" M path").
    return done.stdout.rstrip() if done.returncode == 0 else None


def serkit_checkout() -> Path:
    """The folder of the serkit package that is running (its git checkout is the code that trains)."""
    return Path(__file__).resolve().parents[1]


def training_run(*, family: str, device: str, precision: dict[str, str], processes: int = 1,
                 invocation: dict[str, Any] | None = None) -> dict[str, Any]:
    """One training run's record for a fold's ``provenance.json``.

    ``invocation`` is what the command line knows (``serkit.bin.train``): ``command`` (the words),
    ``cwd``, ``config`` (the hyperparameter file), ``overrides`` (the merged override mapping) and
    ``resolved_config`` (the config as used, references resolved). Training started from Python
    (``train_fold`` called directly) has none, and says so. ``recipe_command`` is the ``run.sh``
    command that started stage 3, when a recipe did.
    """
    invocation = dict(invocation or {})
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "family": family,
        "command": invocation.pop("command", None),
        "recipe_command": os.environ.get(RECIPE_COMMAND_VARIABLE),
        "cwd": invocation.pop("cwd", None),
        "config": invocation.pop("config", None),
        "overrides": _plain(invocation.pop("overrides", None)),
        "resolved_config": invocation.pop("resolved_config", None),
        "environment": environment_info(),
        "device": device,
        "processes": processes,
        "precision": dict(precision),
        "git": git_info(serkit_checkout()),
        **invocation,
    }


def _plain(value: Any) -> Any:
    """``value`` as strict JSON can hold it: YAML's dates and non-finite numbers become strings."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
