"""Seed ensembles: the mean of several seeds' test posteriors, written as an experiment of its own.

Runs of one experiment that differ only in their seed (``exp/tim_net_8class_seed1/loso``,
``..._seed2/loso``) become ``exp/tim_net_8class_ens_seed1-2/loso``: per fold, each test utterance's
posterior is the mean of the seeds' posteriors and the hypothesis its argmax. The folder holds
``fold<NN>/test_predictions.tsv`` and ``model_config.json`` like any trained experiment, so stage 4
scores it like one (intervals, RESULTS.md section, a row of the comparison table beside the seeds'
mean ± std). Token columns (CTC decodes) cannot be averaged and are left out. Only folds that every
seed has finished are ensembled.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from serkit.training import expdir
from serkit.scoring.comparison import seed_tag
from serkit.errors import SerkitError


class EnsembleError(SerkitError):
    """The seed runs cannot be ensembled (different test utterances, labels or classes)."""


def ensemble_groups(exp_dirs: Sequence[str | Path]) -> dict[Path, list[Path]]:
    """``exp/<tag>/<protocol>`` folders grouped by experiment: ensemble folder -> its seed runs
    (only experiments with at least two seeds), in the order first given."""
    groups: dict[tuple[Path, str, str], list[tuple[int, Path]]] = {}
    for exp_dir in map(Path, exp_dirs):
        parsed = seed_tag(exp_dir.parent.name)
        if parsed is not None:
            key = (exp_dir.parent.parent, parsed[0], exp_dir.name)
            groups.setdefault(key, []).append((parsed[1], exp_dir))
    result = {}
    for (root, base, protocol), runs in groups.items():
        if len(runs) > 1:
            runs.sort()
            result[root / f"{base}_ens_seed{'-'.join(str(seed) for seed, _ in runs)}" / protocol] = [d for _, d in runs]
    return result


def write_ensemble(seed_dirs: Sequence[Path], out_dir: Path) -> list[str]:
    """Write the mean-posterior predictions of ``seed_dirs`` into ``out_dir``; return the folds written."""
    folds = [fold.name for fold in _fold_dirs(seed_dirs[0])
             if all((d / fold.name / expdir.PREDICTIONS_FILE).is_file() for d in seed_dirs)]
    if not folds:
        raise EnsembleError(f"no fold has test predictions in every one of {', '.join(map(str, seed_dirs))}")
    for stale in _fold_dirs(out_dir):
        if stale.name not in folds:
            shutil.rmtree(stale)
    for fold in folds:
        config = expdir.read_model_config(seed_dirs[0] / fold, required=False)
        runs = [expdir.read_predictions(d / fold / expdir.PREDICTIONS_FILE, config.get("classes"), fold)
                for d in seed_dirs]
        _check_same_test_set(runs)
        (out_dir / fold).mkdir(parents=True, exist_ok=True)
        probs = np.mean([run.probs for run in runs], axis=0)
        expdir.write_predictions(out_dir / fold / expdir.PREDICTIONS_FILE, runs[0].utts, runs[0].refs,
                                 probs.tolist(), runs[0].classes)
        config["ensemble"] = {"rule": "mean of the seeds' posteriors", "of": [str(d) for d in seed_dirs]}
        expdir.write_model_config(out_dir / fold, config)
    return folds


def _fold_dirs(exp_dir: Path) -> list[Path]:
    return sorted(p for p in exp_dir.glob("fold*") if p.is_dir())


def _check_same_test_set(runs: Sequence[expdir.FoldPredictions]) -> None:
    for run in runs[1:]:
        if run.classes != runs[0].classes or run.utts != runs[0].utts or run.refs != runs[0].refs:
            raise EnsembleError(f"{run.path} and {runs[0].path} differ in classes, test utterances or labels; "
                                "only seeds of one experiment on the same folds can be ensembled")
