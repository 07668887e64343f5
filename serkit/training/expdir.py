"""The experiment (fold) directory format: the one owner of every file stage 3 leaves in a fold.

``exp/<tag>/<protocol>/fold<NN>/`` is written by training (stage 3) and read by scoring (stage 4) and
export (stage 5). So that a file one stage writes is always one the others can read, only this
module knows the names, the layouts and the rules (docs/formats.md); the stages call it:

- ``model_config.json``: plain data that rebuilds the network (family, feature, model, classes ...);
- ``provenance.json``: what trained the fold, one record per training run (a resume adds one):
  versions, device, precision, serkit's git commit and dirtiness, resolved config, command
  (:mod:`serkit.training.provenance` gathers them);
- ``history.jsonl``: one JSON object per finished epoch;
- ``test_predictions.tsv``: ``utt ref hyp p_<class>... [extra columns]``, the family's extras last;
- ``<name>.json`` fold extras such as ``layer_weights.json`` (``{"weights": [...]}``);
- ``save/CKPT+*/``: SpeechBrain checkpoints (``CKPT.yaml`` meta, ``model.ckpt`` weights); the *best*
  checkpoint is the one with the highest validation UA, the newest on a tie;
- ``train.done``: written last; a fold that has it is finished.

Every write is atomic (:mod:`serkit.atomic`), so a killed run never leaves half a file behind.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from serkit.atomic import atomic_write_text
from serkit.data.datadir import c_sorted
from serkit.errors import SerkitError

logger = logging.getLogger(__name__)

MODEL_CONFIG_FILE = "model_config.json"
PROVENANCE_FILE = "provenance.json"
HISTORY_FILE = "history.jsonl"
PREDICTIONS_FILE = "test_predictions.tsv"
LAYER_WEIGHTS_FILE = "layer_weights.json"
DONE_FILE = "train.done"
LOG_FILE = "train_log.txt"
SAVE_DIR = "save"
CHECKPOINT_PREFIX = "CKPT+"
CHECKPOINT_META_FILE = "CKPT.yaml"
CHECKPOINT_MODEL_FILE = "model.ckpt"
PREDICTION_KEY_COLUMNS = ("utt", "ref", "hyp")


class ExpDirError(SerkitError):
    """A fold directory's file is missing, malformed or inconsistent."""


# ----------------------------------------------------------------------------- JSON


def write_json(path: str | Path, data: Any) -> None:
    """Strict JSON (no NaN), indented and key-sorted, written atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    """A JSON object from ``path``, with errors that name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExpDirError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExpDirError(f"{path}: not valid JSON ({error}); the file is corrupt, re-create it") from None
    if not isinstance(data, dict):
        raise ExpDirError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- model config


def write_model_config(fold_dir: str | Path, config: dict[str, Any]) -> None:
    """``model_config.json``: what export and inference need to rebuild the network offline."""
    write_json(Path(fold_dir) / MODEL_CONFIG_FILE, config)


def read_model_config(fold_dir: str | Path, required: bool = True) -> dict[str, Any]:
    """A fold's ``model_config.json``; ``{}`` when absent and not ``required``."""
    path = Path(fold_dir) / MODEL_CONFIG_FILE
    if not path.is_file():
        if required:
            raise ExpDirError(f"{path}: not found; is {fold_dir} a trained fold directory (stage 3 writes it)?")
        return {}
    return read_json(path)


# ----------------------------------------------------------------------------- provenance


def write_provenance(fold_dir: str | Path, run: dict[str, Any]) -> None:
    """Add one training run's record (:func:`serkit.training.provenance.training_run`) to ``provenance.json``.

    Earlier runs are kept: a fold resumed elsewhere was trained by both, and each may differ
    (versions, device, commit). A file that cannot be read is not silently lost: it is kept beside
    the new one as ``provenance.json.unreadable``.
    """
    path = Path(fold_dir) / PROVENANCE_FILE
    runs: list = []
    if path.is_file():
        try:
            runs = list(read_provenance(fold_dir)["runs"])
        except ExpDirError as error:
            logger.warning("%s; kept as %s.unreadable, a new one is started", error, path.name)
            os.replace(path, path.with_name(path.name + ".unreadable"))
    write_json(path, {"runs": runs + [run]})


def read_provenance(fold_dir: str | Path) -> dict[str, Any]:
    """A fold's ``provenance.json``: ``{"runs": [record, ...]}``, oldest run first."""
    path = Path(fold_dir) / PROVENANCE_FILE
    data = read_json(path)
    if not isinstance(data.get("runs"), list) or not all(isinstance(run, dict) for run in data["runs"]):
        raise ExpDirError(f"{path}: expected {{\"runs\": [one object per training run]}}")
    return data


# ----------------------------------------------------------------------------- history


def read_history(path: str | Path) -> list[dict]:
    """The records of ``history.jsonl`` (empty if the file does not exist yet)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ExpDirError(f"{path}:{line_number}: not valid JSON ({error}); delete the damaged line "
                                  "(the epoch is re-logged when it is trained again)") from None
            if not isinstance(record, dict):
                raise ExpDirError(f"{path}:{line_number}: expected a JSON object per epoch")
            records.append(record)
    return records


def fold_summary(records: list[dict]) -> str:
    """``12 epochs, best valid UA 51.2% (epoch 9)``: what stage 3's progress line says of a finished fold.

    The epoch is the one the test fold is scored with: among equal UAs the newest, as :func:`best_key`.
    """
    scored = [r for r in records if isinstance(r.get("valid_UA"), (int, float)) and math.isfinite(r["valid_UA"])]
    if not scored:
        return f"{len(records)} epoch(s), no validation UA"
    best = max(scored, key=lambda r: (r["valid_UA"], r["epoch"]))
    return f"{len(records)} epoch(s), best valid UA {100 * best['valid_UA']:.1f}% (epoch {best['epoch']})"


def finite_history(records: list[dict], path: str | Path = HISTORY_FILE) -> list[dict]:
    """``records`` with NaN/infinite numbers (a diverged epoch) replaced by None, which JSON can hold."""
    n_bad = 0
    for record in records:
        for key, value in record.items():
            if isinstance(value, float) and not math.isfinite(value):
                record[key] = None
                n_bad += 1
    if n_bad:
        logger.warning("%s: %d NaN/infinite values (diverged epochs?) kept as null", path, n_bad)
    return records


def write_history(path: str | Path, record: dict) -> None:
    """Add ``record`` to history.jsonl, replacing records of the same or later epochs.

    Later epochs can only be there if a run was interrupted after logging but before checkpointing,
    and is now repeating those epochs; their old lines describe a run that no longer exists.
    """
    kept = [old for old in read_history(path) if int(old["epoch"]) < int(record["epoch"])]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept + [record]))


# ----------------------------------------------------------------------------- predictions


@dataclass
class FoldPredictions:
    """One fold's test predictions, labels mapped to class indices, plus the family's extra columns."""

    fold: str
    path: Path
    classes: list[str]
    utts: list[str] = field(default_factory=list)
    refs: list[int] = field(default_factory=list)
    hyps: list[int] = field(default_factory=list)
    extras: dict[str, list[str]] = field(default_factory=dict)  # column name -> one value per utterance
    probs: list[list[float]] = field(default_factory=list)  # the p_<class> posteriors of each utterance
    lines: list[int] = field(default_factory=list)  # line number of each utterance, to name it in errors


def write_predictions(path: str | Path, utts: Sequence[str], refs: Sequence[int], probs: Sequence[Sequence[float]],
                      classes: Sequence[str], extras: dict[str, Sequence[str]] | None = None) -> None:
    """``test_predictions.tsv``: ``utt ref hyp p_<class>... <extra>...``, sorted by utterance id.

    ``hyp`` is the class with the highest posterior. ``extras`` maps a column name to one string per
    utterance (e.g. ``ref_tokens``/``hyp_tokens``: space-separated tokens, possibly empty).
    """
    extras = dict(extras or {})
    for name, values in extras.items():
        if len(values) != len(utts):
            raise ExpDirError(f"{path}: extra column {name!r} has {len(values)} values for {len(utts)} utterances")
    header = [*PREDICTION_KEY_COLUMNS, *(f"p_{label}" for label in classes), *extras]
    rows = {}
    for i, utt in enumerate(utts):
        hyp = max(range(len(classes)), key=lambda c: probs[i][c])
        rows[utt] = ([utt, classes[refs[i]], classes[hyp]] + [f"{p:.6f}" for p in probs[i]]
                     + [str(values[i]) for values in extras.values()])
    lines = ["\t".join(header)] + ["\t".join(rows[utt]) for utt in c_sorted(rows)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_predictions(path: str | Path, classes: Sequence[str] | None = None, fold: str = "") -> FoldPredictions:
    """Parse a ``test_predictions.tsv`` (see :func:`write_predictions`).

    ``classes`` fixes the index order; when None it is taken from the ``p_<class>`` columns. When
    both exist they must agree, since a mismatch means the posteriors and labels disagree.
    """
    path = Path(path)
    if not path.is_file():
        raise ExpDirError(f"{path}: file not found (has stage 3 finished this fold?)")
    with open(path, encoding="utf-8") as handle:
        lines = [line.rstrip("\r\n") for line in handle]
    if not lines:
        raise ExpDirError(f"{path}: empty file (expected a header 'utt ref hyp p_<class>... [extra columns]')")
    header = lines[0].split("\t")
    header_classes, extra_names = _split_header(path, header)
    classes = _resolve_classes(path, classes, header_classes)
    index = {label: i for i, label in enumerate(classes)}
    preds = FoldPredictions(fold or path.parent.name, path, list(classes), extras={name: [] for name in extra_names})
    seen: set[str] = set()
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ExpDirError(f"{path}:{line_number}: {len(fields)} tab-separated fields, header has {len(header)} "
                              "(empty token lists must still keep their tab)")
        utt, ref, hyp = fields[:3]
        if utt in seen:
            raise ExpDirError(f"{path}:{line_number}: utterance {utt!r} appears twice")
        seen.add(utt)
        for what, label in (("ref", ref), ("hyp", hyp)):
            if label not in index:
                raise ExpDirError(f"{path}:{line_number}: {what} label {label!r} is not one of the classes "
                                  f"{list(classes)} (pass the right class list, or check the fold's {MODEL_CONFIG_FILE})")
        preds.utts.append(utt)
        preds.refs.append(index[ref])
        preds.hyps.append(index[hyp])
        try:
            preds.probs.append([float(p) for p in fields[3:3 + len(header_classes)]])
        except ValueError:
            raise ExpDirError(f"{path}:{line_number}: a p_<class> column is not a number") from None
        for name, value in zip(extra_names, fields[3 + len(header_classes):]):
            preds.extras[name].append(value)
        preds.lines.append(line_number)
    if not preds.utts:
        raise ExpDirError(f"{path}: header only, no predictions (did testing crash?)")
    return preds


def _split_header(path: Path, header: list[str]) -> tuple[list[str], list[str]]:
    """The classes of the ``p_<class>`` columns and the names of the extra columns after them."""
    n_probs = 0
    while 3 + n_probs < len(header) and header[3 + n_probs].startswith("p_"):
        n_probs += 1
    extra = header[3 + n_probs:]
    if header[:3] != list(PREDICTION_KEY_COLUMNS) or n_probs == 0 or len(set(header)) != len(header):
        raise ExpDirError(f"{path}: unexpected header {header!r}; expected tab-separated "
                          "'utt ref hyp p_<class>... [extra columns]' with unique names (docs/formats.md)")
    return [column[2:] for column in header[3:3 + n_probs]], extra


def _resolve_classes(path: Path, classes: Sequence[str] | None, header_classes: list[str]) -> list[str]:
    if classes is None:
        return header_classes
    if list(classes) != header_classes:
        raise ExpDirError(f"{path}: posterior columns name classes {header_classes} but the class list is "
                          f"{list(classes)}; the two must match in order")
    return list(classes)


# ----------------------------------------------------------------------------- fold extras


def write_fold_extra(fold_dir: str | Path, name: str, values: list[float]) -> None:
    """``<name>.json`` = ``{"weights": [...]}``: a per-fold vector a family reports (e.g. layer weights)."""
    write_json(Path(fold_dir) / f"{name}.json", {"weights": [float(v) for v in values]})


def read_layer_weights(path: str | Path) -> list[float]:
    """The learned softmax layer weights of ``layer_weights.json``."""
    data = read_json(path)
    weights = data.get("weights")
    if not isinstance(weights, list) or not weights or not all(
            isinstance(w, (int, float)) and math.isfinite(w) for w in weights):
        raise ExpDirError(f"{path}: expected {{\"weights\": [finite numbers...]}}")
    return [float(w) for w in weights]


# ----------------------------------------------------------------------------- done marker


def is_done(fold_dir: str | Path) -> bool:
    """Whether the fold finished (``train.done`` exists)."""
    return (Path(fold_dir) / DONE_FILE).exists()


def mark_done(fold_dir: str | Path, test_scores: dict) -> None:
    """Write ``train.done`` (the test scores, one JSON line): the very last file of a fold."""
    atomic_write_text(Path(fold_dir) / DONE_FILE, json.dumps(test_scores) + "\n")


# ----------------------------------------------------------------------------- checkpoints


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

    @property
    def unixtime(self) -> float:
        return float(self.meta.get("unixtime", 0.0))


def best_key(meta: dict[str, Any]) -> tuple[float, float]:
    """The best-checkpoint rule: highest validation UA; among equals the newest (it trained longest)."""
    return float(meta["UA"]), float(meta.get("unixtime", 0.0))


def list_checkpoints(fold_dir: str | Path) -> list[CheckpointInfo]:
    """All complete checkpoints of a fold, oldest first.

    A checkpoint directory without ``CKPT.yaml`` or ``model.ckpt`` (training killed while saving),
    with an unreadable ``CKPT.yaml`` or with parts that disagree (:func:`checkpoint_problem`) is
    skipped with a warning, never silently, so a broken one never stops export or scoring.
    """
    save_dir = Path(fold_dir) / SAVE_DIR
    if not save_dir.is_dir():
        raise ExpDirError(f"{save_dir}: no checkpoint directory; has training (stage 3) run for this fold?")
    checkpoints, skipped = [], 0
    for ckpt_dir in sorted(p for p in save_dir.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)):
        meta_path, model_path = ckpt_dir / CHECKPOINT_META_FILE, ckpt_dir / CHECKPOINT_MODEL_FILE
        if not meta_path.is_file() or not model_path.is_file():
            logger.warning("%s: incomplete checkpoint (missing %s or %s), skipped",
                           ckpt_dir, CHECKPOINT_META_FILE, CHECKPOINT_MODEL_FILE)
            skipped += 1
            continue
        try:
            meta = read_checkpoint_meta(meta_path)
        except ExpDirError as error:
            logger.warning("%s: broken checkpoint skipped (%s)", ckpt_dir, error)
            skipped += 1
            continue
        problem = checkpoint_problem(ckpt_dir, meta)
        if problem is not None:
            logger.warning("%s: inconsistent checkpoint skipped (%s)", ckpt_dir, problem)
            skipped += 1
            continue
        checkpoints.append(CheckpointInfo(ckpt_dir, meta))
    if skipped:
        logger.warning("%s: skipped %d incomplete checkpoint(s)", save_dir, skipped)
    if not checkpoints:
        raise ExpDirError(f"{save_dir}: no complete checkpoint ({CHECKPOINT_PREFIX}*/ with {CHECKPOINT_META_FILE} "
                          f"and {CHECKPOINT_MODEL_FILE}); train the fold first")
    return sorted(checkpoints, key=lambda c: (c.unixtime, c.name))


#: CKPT.yaml's record of the size of every file the checkpoint was written with (serkit.training.checkpoints).
FILE_SIZES_KEY = "file_sizes"
#: CKPT.yaml's list of the epochs an averaged checkpoint averages (serkit.training.averaging, ``average_nbest``).
AVERAGED_KEY = "averaged_epochs"


def is_averaged(meta: dict[str, Any]) -> bool:
    """Whether a checkpoint's meta is that of an averaged model (derived after training, never resumed from)."""
    return bool(meta.get(AVERAGED_KEY))
COUNTER_FILE = "counter.ckpt"


def checkpoint_problem(ckpt_dir: Path, meta: dict[str, Any]) -> str | None:
    """Why a checkpoint's parts disagree with each other, or None when they agree.

    Its files must be those CKPT.yaml recorded, with the sizes recorded (a truncated or replaced
    file is caught before it is loaded), and an end-of-epoch checkpoint's epoch counter must say
    the epoch CKPT.yaml names: a damaged counter would resume at the wrong epoch with the weights
    of another one. Checkpoints written before sizes were recorded are checked for the counter only.
    """
    for name, size in sorted((meta.get(FILE_SIZES_KEY) or {}).items()):
        path = ckpt_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, {CHECKPOINT_META_FILE} recorded {size}"
    counter = ckpt_dir / COUNTER_FILE
    # An averaged checkpoint is no training state: its counter is where training ended, its epoch
    # the newest it averages.
    if meta.get("end-of-epoch") and meta.get("epoch") is not None and counter.is_file() \
            and not is_averaged(meta):
        saved = _counter_value(counter)
        if saved != meta["epoch"]:
            return f"{COUNTER_FILE} says epoch {saved!r}, {CHECKPOINT_META_FILE} epoch {meta['epoch']}"
    return None


def _counter_value(path: Path) -> Any:
    """The epoch an epoch counter's file holds (SpeechBrain writes a number, or YAML with current_epoch)."""
    try:
        text = path.read_text(encoding="utf-8")
        value = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return "unreadable"
    if isinstance(value, dict):
        value = value.get("current_epoch")
    return value if isinstance(value, int) and not isinstance(value, bool) else text.strip()[:20]


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """``CKPT.yaml`` with the safe loader: meta is plain data, never YAML tags that build objects.

    The one parser of the file, for training's resume (:mod:`serkit.training.checkpoints`) and for export and
    scoring alike, so a checkpoint one of them takes is never one another refuses. SpeechBrain
    always writes ``unixtime`` and ``end-of-epoch``; meta without them was cut short.
    """
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ExpDirError(f"{path}: unreadable checkpoint meta ({error})") from None
    if not isinstance(meta, dict) or not {"unixtime", "end-of-epoch"} <= set(meta):
        raise ExpDirError(f"{path}: checkpoint meta is empty or incomplete (no unixtime / end-of-epoch)")
    return meta


def select_checkpoint(checkpoints: list[CheckpointInfo], which: str = "best") -> CheckpointInfo:
    """Pick a checkpoint: ``"best"`` (:func:`best_key`; with ``average_nbest`` the averaged checkpoint, the
    model the test fold was scored with), ``"last"`` (newest) or a ``CKPT+...`` name."""
    if not checkpoints:
        raise ExpDirError("no checkpoints to choose from")
    if which == "last":  # the last one trained (an averaged checkpoint is derived after training)
        trained = [c for c in checkpoints if not is_averaged(c.meta)] or checkpoints
        return max(trained, key=lambda c: c.unixtime)
    if which == "best":
        averaged = [c for c in checkpoints if is_averaged(c.meta)]  # average_nbest: the model tested
        if averaged:
            return max(averaged, key=lambda c: c.unixtime)
        scored = [c for c in checkpoints if c.valid_ua is not None]
        if not scored:
            names = ", ".join(c.name for c in checkpoints)
            raise ExpDirError(f"{checkpoints[0].path.parent}: no checkpoint has a validation 'UA' in its "
                              f"{CHECKPOINT_META_FILE} ({names}); choose one by name or with checkpoint='last'")
        return max(scored, key=lambda c: best_key(c.meta))
    for checkpoint in checkpoints:
        if checkpoint.name == which or str(checkpoint.path) == str(which):
            return checkpoint
    names = ", ".join(c.name for c in checkpoints)
    raise ExpDirError(f"checkpoint {which!r} not found; use 'best', 'last' or one of: {names}")


# ----------------------------------------------------------------------------- folds of an experiment


def fold_dirs(exp_protocol_dir: str | Path) -> list[Path]:
    """The fold directories (``fold*`` with a ``model_config.json``) of an experiment, sorted."""
    exp_dir = Path(exp_protocol_dir)
    if not exp_dir.is_dir():
        raise ExpDirError(f"{exp_dir}: experiment directory not found")
    return sorted(p for p in exp_dir.iterdir()
                  if p.is_dir() and p.name.startswith("fold") and (p / MODEL_CONFIG_FILE).is_file())


def best_fold(exp_protocol_dir: str | Path) -> Path:
    """The fold whose best checkpoint has the highest *validation* UA.

    This is model selection on validation data only (each fold's valid speakers), never on the
    test speakers: picking the fold with the best test score would report an optimistic model.
    Validation sets differ between folds, so this is a heuristic choice of one fold's model, not a
    comparison on equal footing; the recipe lets the user name a fold instead. Folds without a
    scored checkpoint are skipped with a warning.
    """
    folds = fold_dirs(exp_protocol_dir)
    if not folds:
        raise ExpDirError(f"{exp_protocol_dir}: no trained fold directories (fold*/{MODEL_CONFIG_FILE})")
    scores: dict[Path, float] = {}
    for fold in folds:
        try:
            scores[fold] = select_checkpoint(list_checkpoints(fold), "best").valid_ua
        except ExpDirError as error:
            logger.warning("fold %s skipped for best-fold selection: %s", fold.name, error)
    if not scores:
        raise ExpDirError(f"{exp_protocol_dir}: no fold has a checkpoint with a validation UA")
    for fold, ua in scores.items():
        logger.info("fold %s: best validation UA %.4f", fold.name, ua)
    chosen = max(scores, key=lambda fold: scores[fold])  # first fold wins a tie (folds are sorted)
    logger.info("best fold by validation UA: %s (%.4f)", chosen.name, scores[chosen])
    return chosen


def resolve_fold_dir(fold_or_exp_dir: str | Path) -> Path:
    """A fold directory as given, or the only fold of a single-fold experiment (e.g. ``random``)."""
    path = Path(fold_or_exp_dir)
    if not path.is_dir():
        raise ExpDirError(f"{path}: fold or experiment directory not found")
    if (path / MODEL_CONFIG_FILE).is_file():
        return path
    folds = fold_dirs(path)
    if len(folds) == 1:
        return folds[0]
    if not folds:
        raise ExpDirError(f"{path}: neither a trained fold directory ({MODEL_CONFIG_FILE} missing) "
                          f"nor an experiment with trained folds")
    names = ", ".join(f.name for f in folds)
    raise ExpDirError(f"{path}: has {len(folds)} folds ({names}); name the fold to export "
                      f"(e.g. {folds[0]}) or pick one with best_fold()")
