"""Stage 5: the export folder — one trained fold of any family turned into a small, self-contained model.

A training fold directory (``exp/<tag>/<protocol>/foldNN/``, :mod:`serkit.training.expdir`) holds SpeechBrain
checkpoints and a ``model_config.json``. Users of a trained model should need neither SpeechBrain's
checkpoint layout nor a pretrained download, so the export folder holds exactly (docs/formats.md):

- ``model.pt``: the network's state dict, plain tensors, loadable with ``weights_only=True``;
- ``config.json``: ``model_config.json`` plus provenance (which checkpoint, its validation UA,
  git commit, serkit version);
- ``classes.txt``: the label inventory, readable with ``head``;
- the files each target the model serves adds (:attr:`serkit.targets.Target.export_files`, checked
  against the config on load): the CTC target's token inventory ``tokens.txt``, in every export
  (empty for a model without a CTC head);
- whatever the input's feature kind needs to compute it (its front end,
  :meth:`serkit.features.FeatureKind.export_front_end`): for ``ssl_layers`` (the SSL probe) the frozen
  encoder, as a ``save_pretrained`` folder ``encoder/``, so the export scores audio on its own.

The network is rebuilt through the family registry from the config's plain data
(:func:`serkit.model.build.model_from_config`); this module names no family and no target.

This module owns that format in both directions (:func:`export_model` writes it, :func:`load_export`
reads it). Loading never executes code from the folder: JSON, text and a weights-only tensor load.

Checkpoints are selected on *validation* UA (the ``UA`` key SpeechBrain stored in ``CKPT.yaml``);
test metrics are never looked at, so an exported model's test score stays an honest estimate.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import pickle
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import serkit
from serkit.data import inventory
from serkit.training import expdir
from serkit.atomic import atomic_write
from serkit.errors import Refused, SerkitError, load_error_text, reraise_as
from serkit.features import feature_from_dict, import_front_end
from serkit.model.build import ModelConfigError, check_model_config, model_from_config, upgrade_config
from serkit.model.ser_model import upgrade_state_dict
from serkit.targets import TargetError
from serkit.targets.registry import served_targets

logger = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
CLASSES_FILE = "classes.txt"


class ExportError(SerkitError):
    """A fold directory cannot be exported, or an export folder cannot be loaded."""


class ExportRefused(ExportError, Refused):
    """An export holds something serkit will not load: pickled code, a link to a file outside it."""


def refuse_links_out(export_dir: Path) -> None:
    """Refuse an export folder with a symbolic link that leads outside it (raise :class:`ExportRefused`).

    An export is a folder from elsewhere (a colleague, a download); a link in it to a private key or
    to weights somewhere else would make serkit read files the folder does not hold. Links that stay
    inside the folder are harmless and allowed.
    """
    root = export_dir.resolve()
    for folder, dirs, files in os.walk(export_dir):
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise ExportRefused(f"{path}: a symbolic link to {os.readlink(path)}, outside the export folder "
                                    f"{export_dir}; serkit reads an export only from inside it. Replace the link by "
                                    "the file itself (cp -L) if you trust it")



@dataclass(frozen=True)
class ExportedModel:
    """The content of an export folder, as plain data (nothing executable)."""

    config: dict[str, Any]
    classes: list[str]
    state_dict: dict[str, torch.Tensor]


_as_export_error = reraise_as(ExportError, expdir.ExpDirError, ModelConfigError, inventory.InventoryError,
                              TargetError)


best_fold = _as_export_error(expdir.best_fold)
resolve_fold_dir = _as_export_error(expdir.resolve_fold_dir)


# ----------------------------------------------------------------------------- writing


@_as_export_error
def export_model(fold_or_exp_dir: str | Path, out_dir: str | Path, checkpoint: str = "best") -> Path:
    """Write the export folder for one fold's chosen checkpoint; returns ``out_dir``.

    The checkpoint's state dict is loaded strictly into a network rebuilt from
    ``model_config.json`` before anything is written, so an export that loads is guaranteed.
    """
    fold_dir = expdir.resolve_fold_dir(fold_or_exp_dir)
    config = expdir.read_model_config(fold_dir)
    check_model_config(config, str(fold_dir / expdir.MODEL_CONFIG_FILE))
    chosen = expdir.select_checkpoint(expdir.list_checkpoints(fold_dir), checkpoint)
    model_file = chosen.path / expdir.CHECKPOINT_MODEL_FILE
    state_dict = load_state_dict(model_file)
    model = model_from_config(config, str(fold_dir / expdir.MODEL_CONFIG_FILE))
    load_into(model, state_dict, model_file)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    full_config = upgrade_config(config)
    full_config.update(_provenance(fold_dir, chosen))
    full_config["inputs"] = [feature_from_dict(feature).export_front_end(out_dir) for feature in full_config["inputs"]]
    atomic_write(out_dir / MODEL_FILE, lambda tmp: torch.save(model.state_dict(), tmp))
    expdir.write_json(out_dir / CONFIG_FILE, full_config)
    inventory.write_classes(out_dir / CLASSES_FILE, config["classes"])
    for target in served_targets(full_config):
        target.write_export(out_dir)
    ua = "n/a" if chosen.valid_ua is None else f"{chosen.valid_ua:.4f}"
    logger.info("exported %s (%s, validation UA %s) to %s", fold_dir, chosen.name, ua, out_dir)
    return out_dir


def _provenance(fold_dir: Path, chosen: expdir.CheckpointInfo) -> dict[str, Any]:
    """Where the weights came from; informative only, nothing reads these paths back."""
    return {
        "source_fold": str(fold_dir.resolve()),
        "source_checkpoint": str(chosen.path.resolve()),
        "valid_UA": chosen.valid_ua,
        "valid_WA": None if chosen.meta.get("WA") is None else float(chosen.meta["WA"]),
        "epoch": chosen.meta.get("epoch"),
        "git_commit": _git_commit(),
        "serkit_version": serkit.__version__,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _git_commit() -> str | None:
    """The commit of the serkit source tree, or None when it is not a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(serkit.__file__).parent,
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


# ----------------------------------------------------------------------------- reading


def load_export(export_dir: str | Path) -> ExportedModel:
    """Read an export folder as plain data; raise :class:`ExportError` naming any bad file."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise ExportError(f"{export_dir}: model directory not found (create it with serkit.bin.export_model)")
    refuse_links_out(export_dir)
    _check_complete(export_dir, (MODEL_FILE, CONFIG_FILE, CLASSES_FILE))
    config = _as_export_error(expdir.read_json)(export_dir / CONFIG_FILE)
    _as_export_error(check_model_config)(config, str(export_dir / CONFIG_FILE))
    config = upgrade_config(config)
    targets = _as_export_error(served_targets)(config)
    _check_complete(export_dir, [name for target in targets for name in target.export_files])
    classes = _as_export_error(inventory.read_classes)(export_dir / CLASSES_FILE)
    if classes != list(config["classes"]):
        raise ExportError(f"{export_dir / CLASSES_FILE}: disagrees with 'classes' in {CONFIG_FILE}; "
                          f"the folder was edited by hand, re-export it")
    for target in targets:
        _as_export_error(target.check_export)(export_dir)
    state_dict = load_state_dict(export_dir / MODEL_FILE)
    config["inputs"] = [import_front_end(feature, export_dir) for feature in config["inputs"]]
    return ExportedModel(config=config, classes=classes, state_dict=state_dict)


def _check_complete(export_dir: Path, names) -> None:
    missing = [name for name in names if not (export_dir / name).is_file()]
    if missing:
        raise ExportError(f"{export_dir}: not a complete serkit export, missing {', '.join(missing)}; "
                          f"re-run the export (in the recipe folder: ./run.sh --stage 5 --stop_stage 5)")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict of plain tensors, refusing anything that would need code to unpickle.

    The file is memory-mapped, so its tensors are read from disk as they are used instead of being
    copied into memory first (with :func:`load_into`'s ``assign``, the weights exist once).
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise ExportRefused(f"{path}: refused to load: {load_error_text(error)}; only use weights exported by "
                            "serkit from a source you trust") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ExportError(f"{path}: not a readable PyTorch state dict ({error}); the file is corrupt "
                          f"or truncated, re-export or re-train") from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ExportError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    return state


@_as_export_error
def build_model(config: dict[str, Any], source: str = CONFIG_FILE) -> torch.nn.Module:
    """A randomly initialised network shaped by ``config`` (no download; weights come later)."""
    return model_from_config(config, source)


def load_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path,
              assign: bool = False) -> None:
    """Strict state-dict load with an error that lists what does not match.

    ``assign`` makes the model use the given tensors instead of copying them into its own (for a
    model built on the ``meta`` device, whose parameters have no memory yet).
    """
    state_dict = upgrade_state_dict(dict(state_dict))
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong_shape:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                problems.append(f"{label}: {', '.join(keys[:3])}{more}")
        raise ExportError(f"{source}: weights do not fit the network described by its config "
                          f"({'; '.join(problems)}); the config and weights come from different models")
    model.load_state_dict(state_dict, strict=True, assign=assign)
