"""The rows of a comparison table: seed runs grouped, and each row tested against a reference row.

An experiment run with several seeds (``tim_net_8class_seed1``, ``..._seed2``, ...) is one row whose
figures are the mean ± std **over seeds** of each run's figure, since the spread between seeds is
what a reader needs to judge a difference between rows. Each row's pooled UA is tested against the
reference row (the eGeMAPS + SVM floor when present, else the first row) with the paired
speaker-level permutation test of :mod:`serkit.scoring.stats`; with several rows tested the p-values are
Holm-corrected, so "significant" keeps its 5 % meaning across the whole table.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from serkit.scoring import stats
from serkit.scoring.scoring import mean_std

REFERENCE_FAMILY = "egemaps_svm"
_SEED_TAG = re.compile(r"(?P<base>.+)_seed(?P<seed>\d+)")


def seed_tag(tag: str) -> tuple[str, int] | None:
    """``("tim_net_8class", 2)`` for ``tim_net_8class_seed2``; None for a tag without a seed (an ensemble)."""
    match = _SEED_TAG.fullmatch(tag)
    return (match.group("base"), int(match.group("seed"))) if match else None


@dataclass
class Row:
    """One row of a comparison table: the scored runs (``summary.json`` dicts) of one experiment, one per seed."""

    runs: list[dict]

    @property
    def first(self) -> dict:
        return self.runs[0]

    @property
    def tag(self) -> str:
        """The run's tag, or for several seeds the shared name with their seeds: ``tim_net_8class_seed1,2,3``."""
        if len(self.runs) == 1:
            return self.first["tag"]
        base = seed_tag(self.first["tag"])[0]
        return f"{base}_seed" + ",".join(str(seed_tag(run["tag"])[1]) for run in self.runs)

    @property
    def family(self) -> str | None:
        return self.first.get("model", {}).get("family")

    def figure(self, part: str, key: str) -> tuple[float | None, float | None]:
        """(value, spread) of a figure: one run: its fold mean ± std (``part="mean"``) or its pooled
        figure (``part="pooled"``, no spread); several seeds: the mean ± std over seeds of that figure.
        (None, None) where the run has no such figure: a column of a target only other rows train."""
        values = [run[part].get(key) for run in self.runs]
        if len(self.runs) > 1:
            return mean_std(values)
        return values[0], (self.first["std"].get(key) if part == "mean" else None)

    def speaker_matrices(self) -> tuple[list[str], np.ndarray] | None:
        """The per-speaker confusion matrices (mean over seeds), or None when a run has none
        (scored without a data directory) or the seeds were tested on different utterances."""
        matrices = [run.get("speaker_confusion") for run in self.runs]
        if any(m is None for m in matrices) or len({run.get("test_digest") for run in self.runs}) > 1:
            return None
        speakers = sorted(matrices[0])
        return speakers, np.mean([[m[s] for s in speakers] for m in matrices], axis=0)

    def ua_ci(self, n_resamples: int = stats.N_RESAMPLES) -> list[float] | None:
        """95 % speaker-bootstrap interval of the pooled UA (of the seed-averaged matrices for several seeds)."""
        if len(self.runs) == 1:
            return self.first["pooled"].get("UA_ci")
        matrices = self.speaker_matrices()
        intervals = stats.bootstrap_ci(matrices[1], n_resamples) if matrices is not None else None
        return intervals["UA"] if intervals is not None else None


def group_seeds(summaries: Sequence[dict]) -> list[Row]:
    """One row per experiment: runs whose tags differ only in ``_seed<N>`` (same protocol) share a row,
    in the order first given; seeds sorted by number."""
    rows: dict[tuple[str, str], Row] = {}
    for summary in summaries:
        parsed = seed_tag(summary["tag"])
        key = (parsed[0] if parsed else summary["tag"], summary["protocol"])
        rows.setdefault(key, Row([])).runs.append(summary)
    for row in rows.values():
        if len(row.runs) > 1:
            row.runs.sort(key=lambda run: seed_tag(run["tag"])[1])
    return list(rows.values())


def reference_index(rows: Sequence[Row]) -> int:
    """The row every other is tested against: the classical floor when the table has it, else the first."""
    return next((i for i, row in enumerate(rows) if row.family == REFERENCE_FAMILY), 0)


def reference_tests(rows: Sequence[Row], n_resamples: int = stats.N_RESAMPLES) -> list[dict | None]:
    """For each row, its paired test against the reference row, or None (the reference itself, or no
    test possible: no per-speaker matrices, or other test utterances than the reference's).

    Each result: ``diff`` (pooled UA - the reference's), ``p`` (permutation test), ``p_holm``
    (Holm-adjusted over every row tested) and ``significant`` (``p_holm`` < 0.05).
    """
    ref = reference_index(rows)
    ref_matrices = rows[ref].speaker_matrices() if rows else None
    results: list[dict | None] = [None] * len(rows)
    for i, row in enumerate(rows):
        matrices = row.speaker_matrices()
        if (i == ref or matrices is None or ref_matrices is None or matrices[0] != ref_matrices[0]
                or not _same_test_set(row, rows[ref])):
            continue
        results[i] = stats.paired_test(matrices[1], ref_matrices[1], n_resamples)
    tested = [i for i, result in enumerate(results) if result is not None]
    for i, adjusted in zip(tested, stats.holm([results[i]["p"] for i in tested])):
        results[i].update(p_holm=adjusted, significant=adjusted < stats.ALPHA)
    return results


def _same_test_set(a: Row, b: Row) -> bool:
    """Paired only on the same test utterances with the same labels (same folds of the same data)."""
    return a.first.get("test_digest") is not None and a.first.get("test_digest") == b.first.get("test_digest")
