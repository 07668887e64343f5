"""How sure a pooled figure is: speaker-bootstrap confidence intervals and paired speaker-level tests.

The utterances of one speaker are not independent (same voice, same microphone, often the same
sentences), so every resampling here draws **speakers**, never utterances: an utterance-level
bootstrap would pretend a 24-speaker corpus holds 1440 independent trials and give intervals far
too narrow. Everything works on per-speaker confusion matrices (``[S, C, C]``): pooling a resample
is a sum of its speakers' matrices, so WA and UA of thousands of resamples are a few numpy
operations, and the matrices are all a later comparison needs (they are kept in ``summary.json``).

- :func:`bootstrap_ci`: percentile interval of pooled WA and UA over speaker resamples
  (``scipy.stats.bootstrap``, fixed seed, so a re-score gives the same interval).
- :func:`paired_test`: is the pooled-UA difference of two systems scored on the same test
  utterances real? A paired permutation (approximate randomisation) test with the speaker as the
  unit, through ``scipy.stats.permutation_test``: under the null hypothesis the two systems are
  exchangeable, so for every speaker the two systems' outputs on that speaker may be swapped; the
  p-value is the share of swaps whose |UA difference| reaches the observed one. It is exact (all
  2^S swaps) when 2^S <= the number of resamples. Why not the Wilcoxon signed-rank test over folds:
  with k folds its smallest two-sided p-value is 2 / 2^k, so 5 folds can never reach p < 0.05 and
  6 folds only when every fold agrees; it also weighs a 30-utterance fold like a 300-utterance one
  and tests the mean of fold UAs, not the pooled UA the tables report. A paired t-test does not fit
  either: UA is a ratio of class-wise counts, not a mean of per-utterance scores.
- :func:`holm`: Holm's step-down correction when one reference is tested against several rows.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

from serkit.data.folds import UNKNOWN_SPEAKERS

LEVEL = 0.95
N_RESAMPLES = 1000
SEED = 0
ALPHA = 0.05


def speaker_units(utts: Sequence[str], utt2spk: dict[str, str]) -> list[str]:
    """The resampling unit of each utterance: its speaker.

    An utterance whose speaker the corpus does not know (MSP-Podcast's ``unknown``) is its own unit:
    lumping many unknown people into one "speaker" would make one huge, meaningless cluster.
    """
    missing = [utt for utt in utts if utt not in utt2spk]
    if missing:
        raise KeyError(f"{len(missing)} tested utterance(s) have no speaker in utt2spk, e.g. {missing[0]!r}")
    return [f"{utt2spk[utt]}:{utt}" if utt2spk[utt] in UNKNOWN_SPEAKERS else utt2spk[utt] for utt in utts]


def speaker_confusions(refs: Sequence[int], hyps: Sequence[int], speakers: Sequence[str],
                       n_classes: int) -> dict[str, np.ndarray]:
    """One confusion matrix (rows = reference, columns = hypothesis) per speaker, speakers sorted."""
    cms: dict[str, np.ndarray] = {}
    for ref, hyp, speaker in zip(refs, hyps, speakers):
        cm = cms.setdefault(speaker, np.zeros((n_classes, n_classes), dtype=np.int64))
        cm[ref, hyp] += 1
    return dict(sorted(cms.items()))


def wa_ua(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WA and UA of confusion matrices ``[..., C, C]`` at once (same definitions as :mod:`serkit.scoring.metrics`:
    UA = mean recall over the classes present in the references of that matrix)."""
    cm = np.asarray(cm, dtype=float)
    total = cm.sum(axis=(-2, -1))
    correct = np.trace(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    present = support > 0
    recall = np.divide(np.diagonal(cm, axis1=-2, axis2=-1), support, out=np.zeros_like(support), where=present)
    n_present = present.sum(axis=-1)
    wa = np.divide(correct, total, out=np.zeros_like(total), where=total > 0)
    ua = np.divide(recall.sum(axis=-1), n_present, out=np.zeros_like(total), where=n_present > 0)
    return wa, ua


def _pooled(cms: np.ndarray, indices: np.ndarray, axis: int) -> np.ndarray:
    """The pooled confusion matrix of each row of speaker ``indices`` (resamples along the other axes)."""
    return cms[np.moveaxis(indices, axis, -1)].sum(axis=-3)


def bootstrap_ci(cms: np.ndarray, n_resamples: int = N_RESAMPLES, level: float = LEVEL,
                 seed: int = SEED) -> dict[str, list[float]] | None:
    """Percentile intervals ``{"WA": [low, high], "UA": [low, high]}`` of the pooled figures.

    Each resample draws S speakers with replacement from the ``[S, C, C]`` per-speaker matrices and
    pools their utterances. None with fewer than two speakers (one speaker says nothing about
    between-speaker spread).
    """
    cms = np.asarray(cms, dtype=float)
    if len(cms) < 2:
        return None

    def statistic(indices, axis=-1):
        return np.stack(wa_ua(_pooled(cms, indices, axis)))

    result = scipy_stats.bootstrap((np.arange(len(cms)),), statistic, vectorized=True, method="percentile",
                                   n_resamples=n_resamples, confidence_level=level, batch=_batch(cms),
                                   rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return {"WA": [float(low[0]), float(high[0])], "UA": [float(low[1]), float(high[1])]}


def _batch(cms: np.ndarray) -> int:
    """Resamples per vectorised call, so that one call's ``[batch, S, C, C]`` array stays near 160 MB
    whatever the number of speakers (MSP-Podcast's test set has thousands of units)."""
    return max(1, int(2e7 // cms[0].size // len(cms)))


def paired_test(cms_a: np.ndarray, cms_b: np.ndarray, n_resamples: int = N_RESAMPLES,
                seed: int = SEED) -> dict[str, float]:
    """Paired speaker-level permutation test of pooled UA(a) - UA(b) (two-sided).

    ``cms_a`` and ``cms_b`` are ``[S, C, C]`` per-speaker matrices of the same speakers, in the
    same order, over the same test utterances (the caller checks that). They may be averages over
    seeds (floats). Returns ``{"diff": UA(a) - UA(b), "p": p-value}``.
    """
    cms_a, cms_b = np.asarray(cms_a, dtype=float), np.asarray(cms_b, dtype=float)
    if cms_a.shape != cms_b.shape:
        raise ValueError(f"per-speaker matrices differ in shape: {cms_a.shape} and {cms_b.shape}")
    stacked = np.concatenate([cms_a, cms_b])  # a's speakers are 0..S-1, b's S..2S-1

    def statistic(x, y, axis=-1):
        return wa_ua(_pooled(stacked, x, axis))[1] - wa_ua(_pooled(stacked, y, axis))[1]

    n = len(cms_a)
    diff = float(statistic(np.arange(n), np.arange(n, 2 * n)))
    if n < 2 or np.array_equal(cms_a, cms_b):
        return {"diff": diff, "p": 1.0}
    result = scipy_stats.permutation_test((np.arange(n), np.arange(n, 2 * n)), statistic,
                                          permutation_type="samples", vectorized=True, batch=_batch(stacked),
                                          n_resamples=n_resamples, rng=np.random.default_rng(seed))
    return {"diff": diff, "p": float(result.pvalue)}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (controls the family-wise error of several comparisons).

    The i-th smallest p is multiplied by (m - i), then made non-decreasing in that order, capped at 1.
    """
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    scaled = p[order] * (len(p) - np.arange(len(p)))
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    result = np.empty_like(p)
    result[order] = adjusted
    return result.tolist()
