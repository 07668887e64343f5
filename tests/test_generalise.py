"""The switches for recipes that generalise across speakers (docs/models.md, "Generalising across
speakers"): early stopping (``patience``), averaging the best checkpoints (``average_nbest``),
per-speaker feature normalisation (``normalisation: speaker``) and training augmentation
(``augment``). Real training runs of a tiny TIM-Net on a tiny synthetic corpus."""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import pytest
import speechbrain as sb
import yaml
from tiny_corpus import noisy_tones, write_tiny_corpus

import serkit.train
from serkit.bin.train import load_hparams
from serkit.expdir import read_history
from serkit.metrics import classification_scores as real_classification_scores
from serkit.train import SERBrain, TrainError, improvement_state, train_fold

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "tim_net.yaml"
RUN_OPTS = {"device": "cpu", "noprogressbar": True}
TINY_TIM_NET = {"number_of_epochs": 8, "batch_size": 4, "seed": 5,
                "feature": {"kind": "mfcc", "params": {"n_mfcc": 13, "n_mels": 40, "win_ms": 25.0, "hop_ms": 10.0}},
                "network": {"n_filters": 8, "kernel_size": 2, "n_blocks": 3, "dropout": 0.1},
                "ckpt_interval_minutes": 0, "num_workers": 0}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """24 utterances of 6 speakers (4 each, one per emotion): train spk0-3, valid spk4, test spk5;
    each speaker's recordings have their own gain, so speakers differ in level as real ones do."""
    root = tmp_path_factory.mktemp("generalise")
    tones = noisy_tones(220, 180)
    paths = write_tiny_corpus(root, 24, seconds=lambda i: 0.5 + 0.1 * (i % 4),
                              waveform=lambda i, emo, s, rate: (0.4 + 0.3 * (i // 4)) * tones(i, emo, s, rate) / 2,
                              splits={"train": range(0, 16), "valid": range(16, 20), "test": range(20, 24)})
    utts = [f"spk{i // 4}-u{i:02d}" for i in range(24)]
    (paths["data"] / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in utts), encoding="utf-8")
    return {**paths, "root": root}


def overrides(corpus: dict, out: Path, **extra) -> dict:
    return {**TINY_TIM_NET, "data_dir": str(corpus["data"]), "fold_dir": str(corpus["fold"]),
            "output_folder": str(out), "feature_cache": str(corpus["root"] / "dump"), **extra}


class Interrupted(Exception):
    """Stands in for a killed job."""


def run_fold(hparams: dict, valid_uas: list[float] | None = None, stop_at_epoch: int | None = None,
             stop_before_test: bool = False) -> list[int]:
    """Train a fold as a fresh process would; returns the epochs it trained.

    ``valid_uas`` dictates the validation UA of the epochs this run validates, in order (all else,
    WA, losses and the test set's UA, is computed for real), so the epoch patience stops at is known.
    ``stop_at_epoch`` interrupts the run when that epoch's training starts, ``stop_before_test`` when
    the test fold is about to be scored.
    """
    trained: list[int] = []
    dictated = list(valid_uas or [])
    original_start, original_evaluate = SERBrain.on_stage_start, SERBrain.on_evaluate_start

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            if epoch == stop_at_epoch:
                raise Interrupted(f"killed at the start of epoch {epoch}")
            trained.append(epoch)
        original_start(self, stage, epoch)

    def on_evaluate_start(self, max_key=None, min_key=None):
        if stop_before_test:
            raise Interrupted("killed before the test")
        original_evaluate(self, max_key, min_key)

    def classification_scores(refs, hyps, n_classes):
        scores = real_classification_scores(refs, hyps, n_classes)
        if dictated:
            scores["UA"] = dictated.pop(0)
        return scores

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SERBrain, "on_stage_start", on_stage_start)
        patch.setattr(SERBrain, "on_evaluate_start", on_evaluate_start)
        patch.setattr(serkit.train, "classification_scores", classification_scores)
        train_fold(load_hparams(str(CONF), hparams), RUN_OPTS)
    return trained


@contextlib.contextmanager
def _capture():
    """serkit's INFO log lines written while the block runs (a StringIO)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("serkit")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def predictions(out: Path) -> str:
    return (out / "test_predictions.tsv").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- early stopping

# Best epoch 2 (0.5); epochs 3 and 4 are no better (a tie is no improvement), so patience 2 stops after 4.
PATIENCE_UAS = [0.3, 0.5, 0.5, 0.45, 0.9, 0.9, 0.9, 0.9]


def test_improvement_state_counts_epochs_since_a_strictly_better_ua():
    assert improvement_state({}) == (None, 0)
    assert improvement_state({1: 0.3, 2: 0.5, 3: 0.5, 4: 0.45}) == (2, 2)
    assert improvement_state({1: 0.3, 2: 0.5, 3: 0.6}) == (3, 0)


@pytest.fixture(scope="module")
def patient_run(corpus, tmp_path_factory) -> dict:
    """An uninterrupted run with patience 2 on PATIENCE_UAS: its epochs, folder and log."""
    out = tmp_path_factory.mktemp("patience") / "fold01"
    with _capture() as log:
        epochs = run_fold(overrides(corpus, out, patience=2), PATIENCE_UAS)
    return {"out": out, "epochs": epochs, "log": log.getvalue()}


def test_patience_stops_at_the_right_epoch_and_records_why(patient_run):
    out = patient_run["out"]
    assert patient_run["epochs"] == [1, 2, 3, 4]
    history = read_history(out / "history.jsonl")
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert [r["epochs_without_improvement"] for r in history] == [0, 0, 1, 2]
    assert "early_stop" not in history[2]
    stop = history[-1]["early_stop"]
    assert stop["patience"] == 2 and stop["best_epoch"] == 2 and stop["best_valid_UA"] == 0.5
    assert (out / "train.done").exists() and (out / "test_predictions.tsv").exists()
    assert "early stop after epoch 4: no better validation UA than epoch 2's 50.00% for 2 epochs" in patient_run["log"]


def test_without_patience_every_epoch_is_trained(corpus, tmp_path):
    out = tmp_path / "fold01"
    assert run_fold(overrides(corpus, out, number_of_epochs=5), PATIENCE_UAS) == [1, 2, 3, 4, 5]
    assert all("early_stop" not in r and "epochs_without_improvement" not in r
               for r in read_history(out / "history.jsonl"))


def test_a_resumed_run_stops_where_an_uninterrupted_one_does(corpus, patient_run, tmp_path):
    whole, resumed = patient_run["out"], tmp_path / "resumed"
    with pytest.raises(Interrupted):
        run_fold(overrides(corpus, resumed, patience=2), PATIENCE_UAS[:3], stop_at_epoch=4)
    assert run_fold(overrides(corpus, resumed, patience=2), PATIENCE_UAS[3:]) == [4]
    assert read_history(resumed / "history.jsonl") == read_history(whole / "history.jsonl")
    assert predictions(resumed) == predictions(whole)


def test_a_run_killed_after_the_stop_trains_no_more_epochs(corpus, patient_run, tmp_path):
    """The decision comes from the checkpointed history, not from the memory of the killed process."""
    whole, resumed = patient_run["out"], tmp_path / "resumed"
    with pytest.raises(Interrupted):
        run_fold(overrides(corpus, resumed, patience=2), PATIENCE_UAS, stop_before_test=True)
    assert not (resumed / "train.done").exists()
    assert run_fold(overrides(corpus, resumed, patience=2)) == []
    assert (resumed / "train.done").exists()
    assert predictions(resumed) == predictions(whole)


def test_a_bad_patience_is_refused_before_training(corpus, tmp_path):
    with pytest.raises(TrainError, match="patience"):
        run_fold(overrides(corpus, tmp_path / "fold01", patience=0))
