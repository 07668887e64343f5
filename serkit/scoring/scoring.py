"""Stage 4: score a cross-validated experiment from the files stage 3 left in each fold.

Input is ``exp/<tag>/<protocol>/fold<NN>/`` (:mod:`serkit.training.expdir`, docs/formats.md):
``test_predictions.tsv`` and, when the model has them, ``history.jsonl``, ``layer_weights.json`` and
``model_config.json``. Scoring reads files, never a model, and names no family and no target: each
registered target (:mod:`serkit.targets`) scores what the files carry for it (e.g. the CTC target's
PER from decoded tokens), and the layer-weight figures appear when the files hold layer weights.
Output is ``exp/<tag>/<protocol>/scores/``: ``summary.json`` plus text and PNG figures.

Cross-validation figures are reported two ways, because papers mix them up: the *mean* (± sample
standard deviation) of the per-fold figures, and the *pooled* figure computed on all folds'
predictions together. They differ whenever folds differ in size or class balance. Given the data
directory (its ``utt2spk``), the pooled WA and UA also get a 95 % confidence interval from a bootstrap
over speakers, and the per-speaker confusion matrices are kept so that two experiments can be tested
against each other later (:mod:`serkit.scoring.stats`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from serkit.data import datadir
from serkit.scoring import stats
from serkit.training import expdir
from serkit.atomic import atomic_write_text
from serkit.errors import SerkitError, reraise_as
from serkit.training.expdir import FoldPredictions
from serkit.targets import TargetError, target_classes

logger = logging.getLogger(__name__)

SCORES_DIR = "scores"
SUMMARY = "summary.json"
POOLED = "pooled"

_FOLD_NAME = re.compile(r"fold\d+")


class ScoringError(SerkitError):
    """An experiment's outputs are missing, malformed or inconsistent, so it cannot be scored."""


_as_scoring_error = reraise_as(ScoringError, expdir.ExpDirError)
read_predictions = _as_scoring_error(expdir.read_predictions)
read_layer_weights = _as_scoring_error(expdir.read_layer_weights)


@_as_scoring_error
def read_history(path: Path) -> list[dict]:
    """Per-epoch records of ``history.jsonl``, NaN (a diverged epoch) kept as null for JSON and plots."""
    return expdir.finite_history(expdir.read_history(path), path)


# --------------------------------------------------------------------------------------------
# Scoring


def score_predictions(preds: FoldPredictions, model_facts: dict | None = None) -> dict:
    """All figures of one set of predictions (a fold, or all folds pooled): every target's.

    Fractions are in [0, 1]. ``model_facts`` (the folds' model_config.json facts) tell a target how
    to read its columns (e.g. whether CTC tokens carry emotion suffixes).
    """
    result: dict = {}
    for target in target_classes():
        try:
            result.update(target.score(preds, model_facts or {}))
        except TargetError as error:
            raise ScoringError(str(error)) from None
    return result


def fold_means() -> tuple[str, ...]:
    """The summary keys averaged over folds (mean +- std), every target's."""
    return tuple(key for target in target_classes() for key in target.fold_means)


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of the defined values.

    The std is None with fewer than two values: one fold says nothing about spread.
    """
    defined = [v for v in values if v is not None]
    if not defined:
        return None, None
    mean = float(np.mean(defined))
    std = float(np.std(defined, ddof=1)) if len(defined) > 1 else None
    return mean, std


def pool(folds: Sequence[FoldPredictions]) -> FoldPredictions:
    """All folds' predictions as one set (for the pooled figures)."""
    first = folds[0]
    pooled = FoldPredictions(POOLED, first.path.parent.parent, first.classes,
                             extras={name: [] for name in first.extras})
    for preds in folds:
        if set(preds.extras) != set(first.extras):
            raise ScoringError(f"{preds.path}: columns {sorted(preds.extras)} differ from {first.path}'s "
                               f"{sorted(first.extras)}; all folds of one experiment come from one model")
        pooled.utts += preds.utts
        pooled.refs += preds.refs
        pooled.hyps += preds.hyps
        pooled.probs += preds.probs
        for name, values in preds.extras.items():
            pooled.extras[name] += values
        pooled.lines += preds.lines
    duplicates = [utt for utt, n in Counter(pooled.utts).items() if n > 1]
    if duplicates:
        raise ScoringError(
            f"{pooled.path}: {len(duplicates)} utterance(s) are tested in more than one fold "
            f"(e.g. {duplicates[0]!r}); cross-validation test sets must not overlap")
    return pooled


def find_folds(exp_protocol_dir: Path, folds_dir: Path | None = None) -> tuple[list[str], list[str]]:
    """Expected fold names, and those among them without ``test_predictions.tsv``.

    The expected folds come from ``folds_dir`` (``data/folds/<protocol>``) when given; otherwise
    from the experiment's own ``fold<NN>`` folders plus any gap in their numbering, so a fold whose
    folder was never created is still reported missing.
    """
    if folds_dir is not None:
        if not folds_dir.is_dir():
            raise ScoringError(f"{folds_dir}: fold definitions not found (run stage 2, or drop --folds)")
        expected = [p.name for p in folds_dir.iterdir() if p.is_dir() and _FOLD_NAME.fullmatch(p.name)]
        if not expected:
            raise ScoringError(f"{folds_dir}: no fold<NN> folders (is this data/folds/<protocol>?)")
        extra = sorted(p.name for p in exp_protocol_dir.iterdir()
                       if p.is_dir() and _FOLD_NAME.fullmatch(p.name) and p.name not in expected)
        if extra:
            logger.warning("%s: ignoring %s, not defined in %s", exp_protocol_dir, ", ".join(extra), folds_dir)
    else:
        present = [p.name for p in exp_protocol_dir.iterdir() if p.is_dir() and _FOLD_NAME.fullmatch(p.name)]
        if not present:
            raise ScoringError(f"{exp_protocol_dir}: no fold<NN> folders (is this exp/<tag>/<protocol>?)")
        width = max(len(name) - 4 for name in present)
        highest = max(int(name[4:]) for name in present)
        expected = sorted(set(present) | {f"fold{n:0{width}d}" for n in range(1, highest + 1)})
    expected = sorted(expected, key=lambda name: int(name[4:]))
    missing = [name for name in expected if not (exp_protocol_dir / name / expdir.PREDICTIONS_FILE).is_file()]
    return expected, missing


def score_experiment(
    exp_protocol_dir: str | Path,
    classes: Sequence[str] | None = None,
    allow_partial: bool = False,
    folds_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    n_resamples: int = stats.N_RESAMPLES,
) -> dict:
    """Score every fold of ``exp/<tag>/<protocol>``, write ``scores/`` and return the summary.

    ``classes`` (index order) defaults to the folds' ``model_config.json``, else the posterior
    columns. Missing folds are an error naming them, unless ``allow_partial`` (then the summary
    lists them and the figures cover the folds present). ``data_dir`` (its ``utt2spk``) gives the
    speaker-bootstrap intervals of the pooled figures (``n_resamples`` resamples); without it they are null.
    """
    exp_dir = Path(exp_protocol_dir)
    if not exp_dir.is_dir():
        raise ScoringError(f"{exp_dir}: experiment folder not found (expected exp/<tag>/<protocol>)")
    expected, missing = find_folds(exp_dir, Path(folds_dir) if folds_dir is not None else None)
    if missing and not allow_partial:
        raise ScoringError(
            f"{exp_dir}: {len(missing)} of {len(expected)} folds have no {expdir.PREDICTIONS_FILE}: {', '.join(missing)} "
            "(finish training them, or score anyway with --allow-partial)")
    present = [name for name in expected if name not in missing]
    if not present:
        raise ScoringError(f"{exp_dir}: no fold has {expdir.PREDICTIONS_FILE}; nothing to score")
    if missing:
        logger.warning("scoring %s without missing folds: %s", exp_dir, ", ".join(missing))

    folds, configs = [], {}
    for name in tqdm(present, desc="reading folds", unit="fold"):
        configs[name] = _as_scoring_error(expdir.read_model_config)(exp_dir / name, required=False)
        fold_classes = classes if classes is not None else configs[name].get("classes")
        folds.append(read_predictions(exp_dir / name / expdir.PREDICTIONS_FILE, fold_classes, fold=name))
    _check_same_classes(folds)
    model = _model_facts(configs)

    per_fold = {}
    for preds in tqdm(folds, desc="scoring folds", unit="fold"):
        per_fold[preds.fold] = score_predictions(preds, model)
        logger.info("%s: %d utts, WA %.1f%%, UA %.1f%%", preds.fold, len(preds.utts),
                    100 * per_fold[preds.fold]["WA"], 100 * per_fold[preds.fold]["UA"])
    pooled_preds = pool(folds)
    pooled = score_predictions(pooled_preds, model)
    speakers = _speaker_figures(pooled_preds, pooled, Path(data_dir) if data_dir is not None else None, n_resamples)

    # absolute but not resolved: an exp/ that is a symlink to a scratch disk (as Kaldi users make
    # it) must stay exp/... in RESULTS.md's links, not become the disk's path
    exp_path = Path(os.path.abspath(exp_dir))
    summary = {
        "exp_dir": str(exp_path),
        "tag": exp_path.parent.name,
        "protocol": exp_path.name,
        "scored_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "classes": folds[0].classes,
        "expected_folds": expected,
        "missing_folds": missing,
        "complete": not missing,
        "model": model,
        "protocol_info": _protocol_info(Path(folds_dir)) if folds_dir is not None else None,
        "folds": per_fold,
        "mean": {},
        "std": {},
        "pooled": pooled,
        **speakers,
        "layer_weights": _layer_weights(exp_dir, present),
        "history": _histories(exp_dir, present),
    }
    for key in fold_means():  # a target's figures are averaged where its scores produced them
        if any(key in fold for fold in per_fold.values()):
            summary["mean"][key], summary["std"][key] = mean_std([fold.get(key) for fold in per_fold.values()])
    summary["mean"]["recall"], summary["std"]["recall"] = {}, {}
    for label in summary["classes"]:
        recalls = [fold["recall"][label] for fold in per_fold.values()]
        summary["mean"]["recall"][label], summary["std"]["recall"][label] = mean_std(recalls)

    summary["files"] = write_score_files(exp_dir / SCORES_DIR, summary)
    write_summary(exp_dir / SCORES_DIR / SUMMARY, summary)
    return summary


def test_digest(preds: FoldPredictions) -> str:
    """SHA-1 of the sorted ``utt ref`` pairs: two experiments may be paired only on equal test sets."""
    lines = sorted(f"{utt} {ref}" for utt, ref in zip(preds.utts, preds.refs))
    return hashlib.sha1("\n".join(lines).encode("utf-8")).hexdigest()


def _speaker_figures(preds: FoldPredictions, pooled: dict, data_dir: Path | None, n_resamples: int) -> dict:
    """Per-speaker confusion matrices and the bootstrap intervals of the pooled WA/UA (added to ``pooled``).

    Returns the summary's ``test_digest``, ``speaker_confusion`` (speaker -> matrix) and ``bootstrap``
    (how the intervals were drawn); the last two are null without a data directory.
    """
    figures = {"test_digest": test_digest(preds), "speaker_confusion": None, "bootstrap": None}
    pooled["WA_ci"] = pooled["UA_ci"] = None
    if data_dir is None:
        logger.info("no data directory given: no speaker-bootstrap confidence intervals")
        return figures
    utt2spk = datadir.read_map(data_dir / "utt2spk")
    try:
        units = stats.speaker_units(preds.utts, utt2spk)
    except KeyError as error:
        raise ScoringError(f"{data_dir / 'utt2spk'}: {error.args[0]} (is this the data directory the folds were made from?)") from None
    cms = stats.speaker_confusions(preds.refs, preds.hyps, units, len(preds.classes))
    intervals = stats.bootstrap_ci(np.stack(list(cms.values())), n_resamples)
    if intervals is not None:
        pooled["WA_ci"], pooled["UA_ci"] = intervals["WA"], intervals["UA"]
    figures["speaker_confusion"] = {speaker: cm.tolist() for speaker, cm in cms.items()}
    figures["bootstrap"] = {"unit": "speaker", "n_units": len(cms), "n_resamples": n_resamples,
                            "level": stats.LEVEL, "seed": stats.SEED, "method": "percentile",
                            "utt2spk": str((data_dir / "utt2spk").resolve())}
    return figures


def _protocol_info(folds_dir: Path) -> dict | None:
    """How stage 2 built the folds (``protocol.json``: description, speaker-dependence), for RESULTS.md."""
    from serkit.data.folds import FoldError, read_protocol
    try:
        info = read_protocol(folds_dir)
    except FoldError as error:
        logger.warning("%s; RESULTS.md describes the protocol by its name only", error)
        return None
    return {key: info[key] for key in ("name", "description", "speaker_dependent", "k", "n_folds", "data_warnings")
            if key in info}


def _check_same_classes(folds: Sequence[FoldPredictions]) -> None:
    for preds in folds[1:]:
        if preds.classes != folds[0].classes:
            raise ScoringError(
                f"{preds.path}: classes {preds.classes} differ from {folds[0].path}'s {folds[0].classes}; "
                "all folds of one experiment must use the same classes in the same order")


def _model_facts(configs: dict[str, dict]) -> dict:
    """The model facts a comparison table needs (family, its options), checked to agree across folds."""
    facts = {}
    keys = ("family", "options", "n_emotions", *(key for target in target_classes() for key in target.model_facts),
            "ensemble")
    for key in keys:
        values = {json.dumps(config.get(key)) for config in configs.values() if key in config}
        if len(values) > 1:
            raise ScoringError(f"folds disagree on model_config.json {key!r}: {sorted(values)}")
        if values:
            facts[key] = json.loads(values.pop())
    precisions = _precisions(configs)
    if precisions:
        facts["precision"] = precisions
    return facts


def _precisions(configs: dict[str, dict]) -> dict[str, list[str]]:
    """``{"training bf16 (auto: cpu has bf16 units (avx512_bf16)), evaluation fp32 (asked for)": [folds]}``.

    Folds may differ (a fold resumed on another machine); RESULTS.md then lists each precision with its folds.
    """
    by_precision: dict[str, list[str]] = {}
    for fold, config in configs.items():
        info = config.get("precision")
        if info:
            text = (f"training {info['train']} ({info['train_reason']}), evaluation {info['eval']} "
                    f"({info['eval_reason']}) on {info['device']}")
            by_precision.setdefault(text, []).append(fold)
    return by_precision


def _layer_weights(exp_dir: Path, folds: Sequence[str]) -> dict:
    """Per-fold learned layer weights and their mean (absent for models without layer fusion)."""
    per_fold = {}
    for name in folds:
        path = exp_dir / name / expdir.LAYER_WEIGHTS_FILE
        if path.is_file():
            per_fold[name] = read_layer_weights(path)
    if per_fold and len(per_fold) < len(folds):
        logger.warning("%s: %d of %d folds have no %s", exp_dir, len(folds) - len(per_fold), len(folds), expdir.LAYER_WEIGHTS_FILE)
    lengths = {len(w) for w in per_fold.values()}
    if len(lengths) > 1:
        raise ScoringError(f"{exp_dir}: folds have different numbers of layer weights {sorted(lengths)}")
    mean = np.mean(list(per_fold.values()), axis=0).tolist() if per_fold else None
    return {"per_fold": per_fold, "mean": mean}


def _histories(exp_dir: Path, folds: Sequence[str]) -> dict[str, list[dict]]:
    """Per-fold training histories; a fold without one is logged, not fatal (scores do not need it)."""
    histories = {}
    for name in folds:
        path = exp_dir / name / expdir.HISTORY_FILE
        if path.is_file():
            histories[name] = read_history(path)
        else:
            logger.warning("%s: no %s, so no learning curve for this fold", exp_dir / name, expdir.HISTORY_FILE)
    return histories


# --------------------------------------------------------------------------------------------
# Output files


def write_score_files(scores_dir: Path, summary: dict) -> dict[str, str]:
    """Write confusion matrices (text + PNG), layer weights and learning curves into ``scores_dir``.

    Earlier outputs are removed first, so a re-score with fewer folds leaves no stale figure behind.
    Returns the written file names (relative to ``scores_dir``) by role.
    """
    from serkit.scoring import plots  # matplotlib is only needed here; keep this module light to import

    scores_dir.mkdir(parents=True, exist_ok=True)
    for pattern in ("confusion_*.txt", "confusion_*.png", "layer_weights.png", "learning_curves.png"):
        for stale in scores_dir.glob(pattern):
            stale.unlink()
    classes = summary["classes"]
    files: dict[str, str] = {}
    named = {**{name: fold["confusion"] for name, fold in summary["folds"].items()},
             POOLED: summary["pooled"]["confusion"]}
    for name, confusion in tqdm(named.items(), desc="writing figures", unit="matrix"):
        title = f"{summary['tag']} / {summary['protocol']}: {name}"
        cm = np.asarray(confusion)
        write_confusion_text(scores_dir / f"confusion_{name}.txt", cm, classes, title)
        plots.plot_confusion(scores_dir / f"confusion_{name}.png", cm, classes, title)
        files[f"confusion_{name}"] = f"confusion_{name}.png"
    if summary["layer_weights"]["per_fold"]:
        plots.plot_layer_weights(scores_dir / "layer_weights.png", summary["layer_weights"]["per_fold"],
                                 title=f"{summary['tag']} / {summary['protocol']}: learned layer weights")
        files["layer_weights"] = "layer_weights.png"
    if summary["history"]:
        plots.plot_learning_curves(scores_dir / "learning_curves.png", summary["history"],
                                   title=f"{summary['tag']} / {summary['protocol']}: learning curves")
        files["learning_curves"] = "learning_curves.png"
    return files


def format_confusion(cm: np.ndarray, classes: Sequence[str], title: str) -> str:
    """Counts and row-normalised percentages, rows = reference, columns = hypothesis."""
    width = max(7, *(len(label) + 2 for label in classes))
    head = "ref\\hyp".ljust(width) + "".join(label.rjust(width) for label in classes)
    lines = [f"# {title}: confusion matrix, rows = reference, columns = hypothesis (counts)",
             head + "total".rjust(width)]
    for label, row in zip(classes, cm):
        lines.append(label.ljust(width) + "".join(str(int(n)).rjust(width) for n in row) + str(int(row.sum())).rjust(width))
    lines += ["", f"# {title}: row-normalised, % of each reference class", head]
    for label, row in zip(classes, cm):
        total = row.sum()
        cells = (f"{100 * n / total:.1f}" if total else "-" for n in row)
        lines.append(label.ljust(width) + "".join(cell.rjust(width) for cell in cells))
    return "\n".join(lines) + "\n"


def write_confusion_text(path: Path, cm: np.ndarray, classes: Sequence[str], title: str) -> None:
    """Write :func:`format_confusion` to ``path``."""
    atomic_write_text(path, format_confusion(cm, classes, title))


# --------------------------------------------------------------------------------------------
# summary.json


def write_summary(path: Path, summary: dict) -> None:
    """Write the summary as strict JSON (no NaN/Infinity), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(summary, indent=1, allow_nan=False) + "\n")


def load_summary(exp_protocol_dir: str | Path) -> dict:
    """Read ``scores/summary.json`` of a scored experiment."""
    path = Path(exp_protocol_dir) / SCORES_DIR / SUMMARY
    if not path.is_file():
        raise ScoringError(f"{path}: not found; score the experiment first (in the recipe folder: "
                           "./run.sh --stage 4 --stop_stage 4)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ScoringError(f"{path}: not valid JSON ({error}); re-run the scoring") from None
