"""Evaluation metrics, defined once for the whole toolkit.

WA (weighted accuracy) is plain accuracy; UA (unweighted accuracy) is the mean of per-class recalls
(balanced accuracy, UAR). Papers often swap or blur the two, so everything is computed from one
confusion matrix with rows = reference class and columns = hypothesis class.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def confusion_matrix(refs: Sequence[int], hyps: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts ``cm[r, h]`` of utterances with reference ``r`` predicted as ``h``."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    for ref, hyp in zip(refs, hyps):
        if not (0 <= int(ref) < n_classes and 0 <= int(hyp) < n_classes):
            raise ValueError(f"class index out of range 0..{n_classes - 1}: reference {ref}, hypothesis {hyp}")
        cm[int(ref), int(hyp)] += 1
    return cm


def weighted_accuracy(cm: np.ndarray) -> float:
    """WA: correct / total."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall of each class; NaN for a class with no reference utterance."""
    support = cm.sum(axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def unweighted_accuracy(cm: np.ndarray) -> float:
    """UA: mean recall over the classes present in the references."""
    recall = per_class_recall(cm)
    present = ~np.isnan(recall)
    return float(recall[present].mean()) if present.any() else 0.0


def macro_f1(cm: np.ndarray) -> float:
    """Mean F1 over the classes present in the references (F1 = 0 where nothing is right)."""
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    scores = []
    for index in np.flatnonzero(support):
        true_positive = cm[index, index]
        precision = true_positive / predicted[index] if predicted[index] else 0.0
        recall = true_positive / support[index]
        scores.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(scores)) if scores else 0.0


def classification_scores(refs: Sequence[int], hyps: Sequence[int], n_classes: int) -> dict:
    """WA, UA, macro-F1, per-class recall and the confusion matrix of one set of predictions."""
    cm = confusion_matrix(refs, hyps, n_classes)
    return {
        "WA": weighted_accuracy(cm),
        "UA": unweighted_accuracy(cm),
        "macro_F1": macro_f1(cm),
        "recall": per_class_recall(cm).tolist(),
        "confusion": cm,
    }


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    previous = list(range(len(hyp) + 1))
    for i, ref_item in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, hyp_item in enumerate(hyp, start=1):
            current[j] = min(
                previous[j] + 1,  # deletion
                current[j - 1] + 1,  # insertion
                previous[j - 1] + (ref_item != hyp_item),  # substitution or match
            )
        previous = current
    return previous[-1]


def token_error_rate(refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]]) -> float:
    """Total edit distance over total reference length (PER when tokens are phonemes)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    errors = sum(edit_distance(ref, hyp) for ref, hyp in zip(refs, hyps))
    length = sum(len(ref) for ref in refs)
    if length == 0:
        return 0.0 if errors == 0 else float("inf")
    return errors / length
