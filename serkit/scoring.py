"""Stage 4: score a cross-validated experiment from the files stage 3 left in each fold.

Input is ``exp/<tag>/<protocol>/fold<NN>/`` (see docs/formats.md): ``test_predictions.tsv`` and,
when the model has them, ``history.jsonl``, ``layer_weights.json`` and ``model_config.json``.
Output is ``exp/<tag>/<protocol>/scores/``: ``summary.json`` plus text and PNG figures.

Cross-validation figures are reported two ways, because papers mix them up: the *mean* (± sample
standard deviation) of the per-fold figures, and the *pooled* figure computed on all folds'
predictions together. They differ whenever folds differ in size or class balance.

Besides the emotion head, a multi-task model decodes emotion-phoneme tokens (``F0 V0 L0 VS0``).
Two figures judge them: the PER (token edit distance over reference length) and the *suffix
accuracy*: the emotion read off the decoded tokens' digit suffixes by majority vote.
"""
from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from serkit import metrics
from serkit.errors import SerkitError

logger = logging.getLogger(__name__)

PREDICTIONS = "test_predictions.tsv"
HISTORY = "history.jsonl"
LAYER_WEIGHTS = "layer_weights.json"
MODEL_CONFIG = "model_config.json"
SCORES_DIR = "scores"
SUMMARY = "summary.json"
POOLED = "pooled"

_FOLD_NAME = re.compile(r"fold\d+")
# An emotion-phoneme token: a phone-class name followed by the emotion index, e.g. "VS3".
_SUFFIXED_TOKEN = re.compile(r"(\D+)(\d+)")


class ScoringError(SerkitError):
    """An experiment's outputs are missing, malformed or inconsistent, so it cannot be scored."""


@dataclass
class FoldPredictions:
    """One fold's test predictions, with labels mapped to class indices."""

    fold: str
    path: Path
    classes: list[str]
    utts: list[str]
    refs: list[int]
    hyps: list[int]
    ref_tokens: list[list[str]]
    hyp_tokens: list[list[str]]
    token_lines: list[int]  # line number of each utterance, to name it in token errors


# --------------------------------------------------------------------------------------------
# Reading stage 3's files


def read_predictions(path: str | Path, classes: Sequence[str] | None = None, fold: str = "") -> FoldPredictions:
    """Parse a ``test_predictions.tsv``.

    ``classes`` fixes the index order; when None it is taken from the ``p_<class>`` columns. When
    both exist they must agree, since a mismatch means the posteriors and labels disagree.
    """
    path = Path(path)
    if not path.is_file():
        raise ScoringError(f"{path}: file not found (has stage 3 finished this fold?)")
    with open(path, encoding="utf-8") as handle:
        lines = [line.rstrip("\r\n") for line in handle]
    if not lines:
        raise ScoringError(f"{path}: empty file (expected a header 'utt ref hyp p_<class>... ref_tokens hyp_tokens')")
    header = lines[0].split("\t")
    header_classes = _check_header(path, header)
    classes = _resolve_classes(path, classes, header_classes)
    index = {label: i for i, label in enumerate(classes)}

    preds = FoldPredictions(fold or path.parent.name, path, list(classes), [], [], [], [], [], [])
    seen: set[str] = set()
    for line_number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ScoringError(
                f"{path}:{line_number}: {len(fields)} tab-separated fields, header has {len(header)} "
                "(empty token lists must still keep their tab)")
        utt, ref, hyp = fields[0], fields[1], fields[2]
        if utt in seen:
            raise ScoringError(f"{path}:{line_number}: utterance {utt!r} appears twice")
        seen.add(utt)
        for what, label in (("ref", ref), ("hyp", hyp)):
            if label not in index:
                raise ScoringError(
                    f"{path}:{line_number}: {what} label {label!r} is not one of the classes {list(classes)} "
                    "(pass the right class list, or check the fold's model_config.json)")
        preds.utts.append(utt)
        preds.refs.append(index[ref])
        preds.hyps.append(index[hyp])
        preds.ref_tokens.append(fields[-2].split())
        preds.hyp_tokens.append(fields[-1].split())
        preds.token_lines.append(line_number)
    if not preds.utts:
        raise ScoringError(f"{path}: header only, no predictions (did testing crash?)")
    return preds


def _check_header(path: Path, header: list[str]) -> list[str]:
    """Validate the column layout and return the classes named by the ``p_<class>`` columns."""
    middle = header[3:-2]
    if (len(header) < 5 or header[:3] != ["utt", "ref", "hyp"] or header[-2:] != ["ref_tokens", "hyp_tokens"]
            or not all(column.startswith("p_") for column in middle)):
        raise ScoringError(
            f"{path}: unexpected header {header!r}; expected tab-separated "
            "'utt ref hyp p_<class>... ref_tokens hyp_tokens' (docs/formats.md)")
    return [column[2:] for column in middle]


def _resolve_classes(path: Path, classes: Sequence[str] | None, header_classes: list[str]) -> list[str]:
    if classes is None:
        if not header_classes:
            raise ScoringError(f"{path}: no p_<class> columns and no class list given (pass classes=...)")
        return header_classes
    if header_classes and list(classes) != header_classes:
        raise ScoringError(
            f"{path}: posterior columns name classes {header_classes} but the class list is {list(classes)}; "
            "the two must match in order")
    return list(classes)


def read_model_config(fold_dir: Path) -> dict:
    """The fold's ``model_config.json`` or ``{}`` when absent (models other than W2V2-MTL)."""
    path = fold_dir / MODEL_CONFIG
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ScoringError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ScoringError(f"{path}: expected a JSON object")
    return config


def read_history(path: Path) -> list[dict]:
    """Per-epoch records of ``history.jsonl`` (one JSON object a line)."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ScoringError(f"{path}:{line_number}: not valid JSON ({error})") from None
            if not isinstance(record, dict):
                raise ScoringError(f"{path}:{line_number}: expected a JSON object per epoch")
            records.append(record)
    n_bad = 0
    for record in records:
        for key, value in record.items():
            if isinstance(value, float) and not math.isfinite(value):
                record[key] = None  # a diverged epoch's NaN loss: JSON cannot hold it, plots skip it
                n_bad += 1
    if n_bad:
        logger.warning("%s: %d NaN/infinite values (diverged epochs?) kept as null", path, n_bad)
    return records


def read_layer_weights(path: Path) -> list[float]:
    """The learned softmax layer weights of ``layer_weights.json``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ScoringError(f"{path}: not valid JSON ({error})") from None
    weights = data.get("weights") if isinstance(data, dict) else None
    if not isinstance(weights, list) or not weights or not all(
            isinstance(w, (int, float)) and math.isfinite(w) for w in weights):
        raise ScoringError(f"{path}: expected {{\"weights\": [finite numbers...]}}")
    return [float(w) for w in weights]


# --------------------------------------------------------------------------------------------
# Emotion-phoneme tokens


def token_emotion(token: str) -> int:
    """The emotion index a token carries as its digit suffix (``VS3`` -> 3)."""
    match = _SUFFIXED_TOKEN.fullmatch(token)
    if match is None:
        raise ValueError(f"token {token!r} has no emotion suffix (expected e.g. 'VS3')")
    return int(match.group(2))


def suffix_vote(tokens: Sequence[str]) -> int | None:
    """Majority emotion suffix of decoded tokens; None when nothing was decoded.

    A tie goes to the suffix that occurs first in the sequence: deterministic, and it does not
    favour any class index.
    """
    if not tokens:
        return None
    counts = Counter(token_emotion(token) for token in tokens)
    # most_common keeps first-occurrence order among equal counts.
    return counts.most_common(1)[0][0]


def suffix_votes(preds: FoldPredictions) -> list[int | None]:
    """The suffix vote of every utterance, with errors naming the file and line."""
    votes = []
    for tokens, line_number in zip(preds.hyp_tokens, preds.token_lines):
        try:
            vote = suffix_vote(tokens)
        except ValueError as error:
            raise ScoringError(f"{preds.path}:{line_number}: hyp_tokens: {error}") from None
        if vote is not None and vote >= len(preds.classes):
            raise ScoringError(
                f"{preds.path}:{line_number}: hyp_tokens carry emotion suffix {vote} "
                f"but there are only {len(preds.classes)} classes {preds.classes}")
        votes.append(vote)
    return votes


# --------------------------------------------------------------------------------------------
# Scoring


def score_predictions(preds: FoldPredictions, phoneme_head: bool = True) -> dict:
    """All figures of one set of predictions (a fold, or all folds pooled).

    Fractions are in [0, 1]. PER and suffix accuracy are None for a model without a phoneme head,
    and PER also when there are no reference tokens to compare with.
    """
    n_classes = len(preds.classes)
    scores = metrics.classification_scores(preds.refs, preds.hyps, n_classes)
    result = {
        "n_utts": len(preds.utts),
        "WA": scores["WA"],
        "UA": scores["UA"],
        "macro_F1": scores["macro_F1"],
        "recall": {label: _finite_or_none(r) for label, r in zip(preds.classes, scores["recall"])},
        "support": {label: int(n) for label, n in zip(preds.classes, scores["confusion"].sum(axis=1))},
        "confusion": scores["confusion"].tolist(),
        "PER": None,
        "token_errors": None,
        "ref_token_count": None,
        "suffix_acc": None,
        "n_no_tokens": None,
    }
    if not phoneme_head:
        return result
    errors = sum(metrics.edit_distance(ref, hyp) for ref, hyp in zip(preds.ref_tokens, preds.hyp_tokens))
    length = sum(len(ref) for ref in preds.ref_tokens)
    result["token_errors"] = errors
    result["ref_token_count"] = length
    result["PER"] = errors / length if length else None
    votes = suffix_votes(preds)
    result["suffix_acc"] = sum(vote == ref for vote, ref in zip(votes, preds.refs)) / len(votes)
    result["n_no_tokens"] = sum(vote is None for vote in votes)
    return result


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a recall undefined for lack of support becomes None."""
    return None if value is None or math.isnan(value) else float(value)


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
    pooled = FoldPredictions(POOLED, first.path.parent.parent, first.classes, [], [], [], [], [], [])
    for preds in folds:
        pooled.utts += preds.utts
        pooled.refs += preds.refs
        pooled.hyps += preds.hyps
        pooled.ref_tokens += preds.ref_tokens
        pooled.hyp_tokens += preds.hyp_tokens
        pooled.token_lines += preds.token_lines
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
    missing = [name for name in expected if not (exp_protocol_dir / name / PREDICTIONS).is_file()]
    return expected, missing


def score_experiment(
    exp_protocol_dir: str | Path,
    classes: Sequence[str] | None = None,
    allow_partial: bool = False,
    folds_dir: str | Path | None = None,
) -> dict:
    """Score every fold of ``exp/<tag>/<protocol>``, write ``scores/`` and return the summary.

    ``classes`` (index order) defaults to the folds' ``model_config.json``, else the posterior
    columns. Missing folds are an error naming them, unless ``allow_partial`` (then the summary
    lists them and the figures cover the folds present).
    """
    exp_dir = Path(exp_protocol_dir)
    if not exp_dir.is_dir():
        raise ScoringError(f"{exp_dir}: experiment folder not found (expected exp/<tag>/<protocol>)")
    expected, missing = find_folds(exp_dir, Path(folds_dir) if folds_dir is not None else None)
    if missing and not allow_partial:
        raise ScoringError(
            f"{exp_dir}: {len(missing)} of {len(expected)} folds have no {PREDICTIONS}: {', '.join(missing)} "
            "(finish training them, or score anyway with --allow-partial)")
    present = [name for name in expected if name not in missing]
    if not present:
        raise ScoringError(f"{exp_dir}: no fold has {PREDICTIONS}; nothing to score")
    if missing:
        logger.warning("scoring %s without missing folds: %s", exp_dir, ", ".join(missing))

    folds, configs = [], {}
    for name in tqdm(present, desc="reading folds", unit="fold"):
        configs[name] = read_model_config(exp_dir / name)
        fold_classes = classes if classes is not None else configs[name].get("classes")
        folds.append(read_predictions(exp_dir / name / PREDICTIONS, fold_classes, fold=name))
    _check_same_classes(folds)
    phoneme_head = _phoneme_head(configs)

    per_fold = {}
    for preds in tqdm(folds, desc="scoring folds", unit="fold"):
        per_fold[preds.fold] = score_predictions(preds, phoneme_head)
        logger.info("%s: %d utts, WA %.1f%%, UA %.1f%%", preds.fold, len(preds.utts),
                    100 * per_fold[preds.fold]["WA"], 100 * per_fold[preds.fold]["UA"])
    pooled = score_predictions(pool(folds), phoneme_head)

    summary = {
        "exp_dir": str(exp_dir.resolve()),
        "tag": exp_dir.resolve().parent.name,
        "protocol": exp_dir.resolve().name,
        "scored_at": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "classes": folds[0].classes,
        "expected_folds": expected,
        "missing_folds": missing,
        "complete": not missing,
        "model": _model_facts(configs),
        "folds": per_fold,
        "mean": {},
        "std": {},
        "pooled": pooled,
        "layer_weights": _layer_weights(exp_dir, present),
        "history": _histories(exp_dir, present),
    }
    for key in ("WA", "UA", "macro_F1", "PER", "suffix_acc"):
        summary["mean"][key], summary["std"][key] = mean_std([fold[key] for fold in per_fold.values()])
    summary["mean"]["recall"], summary["std"]["recall"] = {}, {}
    for label in summary["classes"]:
        recalls = [fold["recall"][label] for fold in per_fold.values()]
        summary["mean"]["recall"][label], summary["std"]["recall"][label] = mean_std(recalls)

    summary["files"] = write_score_files(exp_dir / SCORES_DIR, summary)
    write_summary(exp_dir / SCORES_DIR / SUMMARY, summary)
    return summary


def _check_same_classes(folds: Sequence[FoldPredictions]) -> None:
    for preds in folds[1:]:
        if preds.classes != folds[0].classes:
            raise ScoringError(
                f"{preds.path}: classes {preds.classes} differ from {folds[0].path}'s {folds[0].classes}; "
                "all folds of one experiment must use the same classes in the same order")


def _phoneme_head(configs: dict[str, dict]) -> bool:
    """Whether the model decodes emotion-phoneme tokens (assumed yes without a model_config)."""
    flags = {bool(config.get("phoneme_head", True)) for config in configs.values()}
    if len(flags) > 1:
        raise ScoringError("folds disagree on model_config.json 'phoneme_head'; they are not one experiment")
    return flags.pop()


def _model_facts(configs: dict[str, dict]) -> dict:
    """The model facts a comparison table needs (lambda), checked to agree across folds."""
    facts = {}
    for key in ("lambda", "phoneme_head", "n_emotions", "n_tokens"):
        values = {json.dumps(config.get(key)) for config in configs.values() if key in config}
        if len(values) > 1:
            raise ScoringError(f"folds disagree on model_config.json {key!r}: {sorted(values)}")
        if values:
            facts[key] = json.loads(values.pop())
    return facts


def _layer_weights(exp_dir: Path, folds: Sequence[str]) -> dict:
    """Per-fold learned layer weights and their mean (absent for models without layer fusion)."""
    per_fold = {}
    for name in folds:
        path = exp_dir / name / LAYER_WEIGHTS
        if path.is_file():
            per_fold[name] = read_layer_weights(path)
    if per_fold and len(per_fold) < len(folds):
        logger.warning("%s: %d of %d folds have no %s", exp_dir, len(folds) - len(per_fold), len(folds), LAYER_WEIGHTS)
    lengths = {len(w) for w in per_fold.values()}
    if len(lengths) > 1:
        raise ScoringError(f"{exp_dir}: folds have different numbers of layer weights {sorted(lengths)}")
    mean = np.mean(list(per_fold.values()), axis=0).tolist() if per_fold else None
    return {"per_fold": per_fold, "mean": mean}


def _histories(exp_dir: Path, folds: Sequence[str]) -> dict[str, list[dict]]:
    """Per-fold training histories; a fold without one is logged, not fatal (scores do not need it)."""
    histories = {}
    for name in folds:
        path = exp_dir / name / HISTORY
        if path.is_file():
            histories[name] = read_history(path)
        else:
            logger.warning("%s: no %s, so no learning curve for this fold", exp_dir / name, HISTORY)
    return histories


# --------------------------------------------------------------------------------------------
# Output files


def write_score_files(scores_dir: Path, summary: dict) -> dict[str, str]:
    """Write confusion matrices (text + PNG), layer weights and learning curves into ``scores_dir``.

    Earlier outputs are removed first, so a re-score with fewer folds leaves no stale figure behind.
    Returns the written file names (relative to ``scores_dir``) by role.
    """
    from serkit import plots  # matplotlib is only needed here; keep this module light to import

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
    path.write_text(format_confusion(cm, classes, title), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# summary.json


def write_summary(path: Path, summary: dict) -> None:
    """Write the summary as strict JSON (no NaN/Infinity), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def load_summary(exp_protocol_dir: str | Path) -> dict:
    """Read ``scores/summary.json`` of a scored experiment."""
    path = Path(exp_protocol_dir) / SCORES_DIR / SUMMARY
    if not path.is_file():
        raise ScoringError(f"{path}: not found; score the experiment first: python -m serkit.bin.score --exp {exp_protocol_dir}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ScoringError(f"{path}: not valid JSON ({error}); re-run the scoring") from None
