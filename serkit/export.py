"""Stage 5: the export folder — one trained fold turned into a small, self-contained model.

A training fold directory (``exp/<tag>/<protocol>/foldNN/``) holds SpeechBrain checkpoints and a
``model_config.json``. Users of a trained model should need neither SpeechBrain's checkpoint layout
nor the pretrained wav2vec 2.0 download, so the export folder holds exactly (docs/formats.md):

- ``model.pt``: the network's state dict, plain tensors, loadable with ``weights_only=True``;
- ``config.json``: ``model_config.json`` plus provenance (which checkpoint, its validation UA,
  git commit, serkit version);
- ``classes.txt`` and ``tokens.txt``: the label and CTC token inventories, readable with ``head``.

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
import yaml

import serkit
from serkit.errors import SerkitError
from serkit.model import W2V2MultiTask

logger = logging.getLogger(__name__)

MODEL_CONFIG_FILE = "model_config.json"  # in a fold directory, written by training
CHECKPOINT_DIR = "save"
CHECKPOINT_META_FILE = "CKPT.yaml"
CHECKPOINT_MODEL_FILE = "model.ckpt"

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
CLASSES_FILE = "classes.txt"
TOKENS_FILE = "tokens.txt"

REQUIRED_CONFIG_KEYS = ("encoder_config", "n_emotions", "n_tokens", "phoneme_head", "classes", "tokens", "sample_rate")


class ExportError(SerkitError):
    """A fold directory cannot be exported, or an export folder cannot be loaded."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One SpeechBrain checkpoint directory (``save/CKPT+...``) and its meta data."""

    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def valid_ua(self) -> float | None:
        """Validation UA stored by training, or None for checkpoints saved without metrics."""
        value = self.meta.get("UA")
        return None if value is None else float(value)


@dataclass(frozen=True)
class ExportedModel:
    """The content of an export folder, as plain data (nothing executable)."""

    config: dict[str, Any]
    classes: list[str]
    tokens: list[str]
    state_dict: dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- fold directories


def read_model_config(fold_dir: str | Path) -> dict[str, Any]:
    """Read and check a fold's ``model_config.json`` (the recipe to rebuild the network)."""
    path = Path(fold_dir) / MODEL_CONFIG_FILE
    if not path.is_file():
        raise ExportError(f"{path}: not found; is {fold_dir} a trained fold directory (stage 3 writes it)?")
    config = _read_json(path)
    _check_config(config, path)
    return config


def list_checkpoints(fold_dir: str | Path) -> list[CheckpointInfo]:
    """All complete checkpoints of a fold, oldest first.

    A checkpoint directory without ``CKPT.yaml`` or ``model.ckpt`` (training killed while saving)
    is skipped with a warning, never silently.
    """
    save_dir = Path(fold_dir) / CHECKPOINT_DIR
    if not save_dir.is_dir():
        raise ExportError(f"{save_dir}: no checkpoint directory; has training (stage 3) run for this fold?")
    checkpoints, skipped = [], 0
    for ckpt_dir in sorted(p for p in save_dir.iterdir() if p.is_dir() and p.name.startswith("CKPT+")):
        meta_path, model_path = ckpt_dir / CHECKPOINT_META_FILE, ckpt_dir / CHECKPOINT_MODEL_FILE
        if not meta_path.is_file() or not model_path.is_file():
            logger.warning("%s: incomplete checkpoint (missing %s or %s), skipped",
                           ckpt_dir, CHECKPOINT_META_FILE, CHECKPOINT_MODEL_FILE)
            skipped += 1
            continue
        checkpoints.append(CheckpointInfo(ckpt_dir, _read_checkpoint_meta(meta_path)))
    if skipped:
        logger.warning("%s: skipped %d incomplete checkpoint(s)", save_dir, skipped)
    if not checkpoints:
        raise ExportError(f"{save_dir}: no complete checkpoint (CKPT+*/ with {CHECKPOINT_META_FILE} and "
                          f"{CHECKPOINT_MODEL_FILE}); train the fold first")
    return sorted(checkpoints, key=lambda c: (float(c.meta.get("unixtime", 0.0)), c.name))


def select_checkpoint(checkpoints: list[CheckpointInfo], which: str = "best") -> CheckpointInfo:
    """Pick a checkpoint: ``"best"`` (highest validation UA), ``"last"`` (newest) or a ``CKPT+...`` name.

    Ties in validation UA go to the newest checkpoint (it has trained longest for the same score).
    """
    if not checkpoints:
        raise ExportError("no checkpoints to choose from")
    if which == "last":
        return max(checkpoints, key=lambda c: float(c.meta.get("unixtime", 0.0)))
    if which == "best":
        scored = [c for c in checkpoints if c.valid_ua is not None]
        if not scored:
            names = ", ".join(c.name for c in checkpoints)
            raise ExportError(f"{checkpoints[0].path.parent}: no checkpoint has a validation 'UA' in its "
                              f"{CHECKPOINT_META_FILE} ({names}); choose one by name or with checkpoint='last'")
        return max(scored, key=lambda c: (c.valid_ua, float(c.meta.get("unixtime", 0.0))))
    for checkpoint in checkpoints:
        if checkpoint.name == which or str(checkpoint.path) == str(which):
            return checkpoint
    names = ", ".join(c.name for c in checkpoints)
    raise ExportError(f"checkpoint {which!r} not found; use 'best', 'last' or one of: {names}")


def fold_dirs(exp_protocol_dir: str | Path) -> list[Path]:
    """The fold directories (``fold*`` with a ``model_config.json``) of an experiment, sorted."""
    exp_dir = Path(exp_protocol_dir)
    if not exp_dir.is_dir():
        raise ExportError(f"{exp_dir}: experiment directory not found")
    return sorted(p for p in exp_dir.iterdir()
                  if p.is_dir() and p.name.startswith("fold") and (p / MODEL_CONFIG_FILE).is_file())


def best_fold(exp_protocol_dir: str | Path) -> Path:
    """The fold whose best checkpoint has the highest *validation* UA.

    This is model selection on validation data only (each fold's valid speakers), never on the
    test speakers: picking the fold with the best test score would report an optimistic model.
    Note that validation sets differ between folds, so this is a heuristic choice of one fold's
    model, not a comparison of equal footing; the recipe lets the user name a fold instead.
    Folds without a scored checkpoint are skipped with a warning.
    """
    folds = fold_dirs(exp_protocol_dir)
    if not folds:
        raise ExportError(f"{exp_protocol_dir}: no trained fold directories (fold*/{MODEL_CONFIG_FILE})")
    scores: dict[Path, float] = {}
    for fold in folds:
        try:
            scores[fold] = select_checkpoint(list_checkpoints(fold), "best").valid_ua
        except ExportError as error:
            logger.warning("fold %s skipped for best-fold selection: %s", fold.name, error)
    if not scores:
        raise ExportError(f"{exp_protocol_dir}: no fold has a checkpoint with a validation UA")
    for fold, ua in scores.items():
        logger.info("fold %s: best validation UA %.4f", fold.name, ua)
    chosen = max(scores, key=lambda fold: scores[fold])  # first fold wins a tie (folds are sorted)
    logger.info("best fold by validation UA: %s (%.4f)", chosen.name, scores[chosen])
    return chosen


def resolve_fold_dir(fold_or_exp_dir: str | Path) -> Path:
    """A fold directory as given, or the only fold of a single-fold experiment (e.g. ``random``)."""
    path = Path(fold_or_exp_dir)
    if not path.is_dir():
        raise ExportError(f"{path}: fold or experiment directory not found")
    if (path / MODEL_CONFIG_FILE).is_file():
        return path
    folds = fold_dirs(path)
    if len(folds) == 1:
        return folds[0]
    if not folds:
        raise ExportError(f"{path}: neither a trained fold directory ({MODEL_CONFIG_FILE} missing) "
                          f"nor an experiment with trained folds")
    names = ", ".join(f.name for f in folds)
    raise ExportError(f"{path}: has {len(folds)} folds ({names}); name the fold to export "
                      f"(e.g. {folds[0]}) or pick one with best_fold()")


# ----------------------------------------------------------------------------- writing


def export_model(fold_or_exp_dir: str | Path, out_dir: str | Path, checkpoint: str = "best") -> Path:
    """Write the export folder for one fold's chosen checkpoint; returns ``out_dir``.

    The checkpoint's state dict is loaded strictly into a network rebuilt from
    ``model_config.json`` before anything is written, so an export that loads is guaranteed.
    """
    fold_dir = resolve_fold_dir(fold_or_exp_dir)
    config = read_model_config(fold_dir)
    chosen = select_checkpoint(list_checkpoints(fold_dir), checkpoint)
    state_dict = load_state_dict(chosen.path / CHECKPOINT_MODEL_FILE)
    model = build_model(config)
    load_into(model, state_dict, chosen.path / CHECKPOINT_MODEL_FILE)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    full_config = dict(config)
    full_config.update(_provenance(fold_dir, chosen))
    _atomic_write(out_dir / MODEL_FILE, lambda tmp: torch.save(model.state_dict(), tmp))
    _atomic_write(out_dir / CONFIG_FILE, lambda tmp: tmp.write_text(
        json.dumps(full_config, indent=2, sort_keys=True) + "\n", encoding="utf-8"))
    _atomic_write(out_dir / CLASSES_FILE, lambda tmp: tmp.write_text(
        "".join(f"{label}\n" for label in config["classes"]), encoding="utf-8"))
    _atomic_write(out_dir / TOKENS_FILE, lambda tmp: tmp.write_text(
        "".join(f"{token} {index}\n" for index, token in enumerate(config["tokens"])), encoding="utf-8"))
    ua = "n/a" if chosen.valid_ua is None else f"{chosen.valid_ua:.4f}"
    logger.info("exported %s (%s, validation UA %s) to %s", fold_dir, chosen.name, ua, out_dir)
    return out_dir


def _provenance(fold_dir: Path, chosen: CheckpointInfo) -> dict[str, Any]:
    """Where the weights came from; informative only, nothing reads these paths back."""
    return {
        "source_fold": str(fold_dir.resolve()),
        "source_checkpoint": str(chosen.path.resolve()),
        "valid_UA": chosen.valid_ua,
        "valid_WA": _optional_float(chosen.meta.get("WA")),
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


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file so a crash never leaves a half-written export file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- reading


def load_export(export_dir: str | Path) -> ExportedModel:
    """Read an export folder as plain data; raise :class:`ExportError` naming any bad file."""
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise ExportError(f"{export_dir}: model directory not found (create it with serkit.bin.export_model)")
    missing = [name for name in (MODEL_FILE, CONFIG_FILE, CLASSES_FILE, TOKENS_FILE)
               if not (export_dir / name).is_file()]
    if missing:
        raise ExportError(f"{export_dir}: not a complete serkit export, missing {', '.join(missing)}; "
                          f"re-run the export (python -m serkit.bin.export_model)")
    config = _read_json(export_dir / CONFIG_FILE)
    _check_config(config, export_dir / CONFIG_FILE)
    classes = _read_classes(export_dir / CLASSES_FILE)
    tokens = _read_tokens(export_dir / TOKENS_FILE)
    if classes != list(config["classes"]):
        raise ExportError(f"{export_dir / CLASSES_FILE}: disagrees with 'classes' in {CONFIG_FILE}; "
                          f"the folder was edited by hand, re-export it")
    if tokens != list(config["tokens"]):
        raise ExportError(f"{export_dir / TOKENS_FILE}: disagrees with 'tokens' in {CONFIG_FILE}; "
                          f"the folder was edited by hand, re-export it")
    state_dict = load_state_dict(export_dir / MODEL_FILE)
    return ExportedModel(config=config, classes=classes, tokens=tokens, state_dict=state_dict)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict of plain tensors, refusing anything that would need code to unpickle."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ExportError(f"{path}: refused to load: it holds more than plain tensors, which could run "
                          f"code ({str(error).splitlines()[0]}); only use weights exported by serkit") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ExportError(f"{path}: not a readable PyTorch state dict ({error}); the file is corrupt "
                          f"or truncated, re-export or re-train") from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ExportError(f"{path}: expected a state dict (names -> tensors), got {type(state).__name__}")
    return state


def build_model(config: dict[str, Any]) -> torch.nn.Module:
    """A randomly initialised network shaped by ``config`` (no download; weights come later)."""
    return W2V2MultiTask.from_encoder_config(config["encoder_config"], n_emotions=int(config["n_emotions"]),
                                             n_tokens=int(config["n_tokens"]),
                                             phoneme_head=bool(config["phoneme_head"]))


def load_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path) -> None:
    """Strict state-dict load with an error that lists what does not match."""
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
    model.load_state_dict(state_dict, strict=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f"{path}: not valid JSON ({error}); the file is corrupt, re-create it") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_config(config: dict[str, Any], path: Path) -> None:
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in config]
    if missing:
        raise ExportError(f"{path}: missing key(s) {', '.join(missing)} (see docs/formats.md)")
    if len(config["classes"]) != int(config["n_emotions"]):
        raise ExportError(f"{path}: {len(config['classes'])} classes listed but n_emotions is {config['n_emotions']}")
    if len(config["tokens"]) != int(config["n_tokens"]):
        raise ExportError(f"{path}: {len(config['tokens'])} tokens listed but n_tokens is {config['n_tokens']}")


def _read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """CKPT.yaml with the safe loader: meta is plain data, never YAML tags that build objects."""
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ExportError(f"{path}: unreadable checkpoint meta ({error})") from None
    if not isinstance(meta, dict):
        raise ExportError(f"{path}: checkpoint meta is not a mapping")
    return meta


def _read_classes(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ExportError(f"{path}: no class labels; re-export the model")
    return lines


def _read_tokens(path: Path) -> list[str]:
    """``<token> <index>`` lines with indices 0..N-1 in order (index 0 = CTC blank)."""
    tokens = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) != len(tokens):
            raise ExportError(f"{path}:{number}: expected '<token> {len(tokens)}', got {line!r}; re-export the model")
        tokens.append(parts[0])
    return tokens


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
