"""Tests of the gender target (serkit.targets.gender): batch fields, input prior, loss, decoding and
score columns, and a training run on the tiny corpus in which the auxiliary gender task learns."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_corpus import CLASSES, noisy_tones, tiny_w2v2_hparams, write_map, write_tiny_corpus

from serkit.data.datadir import DataDirError, read_map
from serkit.data.dataio import load_fold_data
from serkit.training.expdir import read_history, read_predictions
from serkit.serving.export import export_model
from serkit.serving.inference import EmotionRecognizer
from serkit.model import build_tiny_w2v2
from serkit.model.ser_model import SEROutput
from serkit.scoring.scoring import score_experiment
from serkit.targets import TargetSet
from serkit.training.train import train_fold


def gender_of(utt: str) -> str:
    """A gender the audio reveals: the tiny corpus's tones rise with the emotion index (ang, hap: f)."""
    return "f" if int(utt[-2:]) % 4 < 2 else "m"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """16 utterances (4 speakers x 4 emotions), utt2gender as :func:`gender_of`; train spk0+1, valid spk2,
    test spk3."""
    root = tmp_path_factory.mktemp("corpus")
    paths = write_tiny_corpus(root, 16, seconds=lambda i: 0.5 + 0.125 * (i % 5), waveform=noisy_tones(200, 150),
                              splits={"train": range(0, 8), "valid": range(8, 12), "test": range(12, 16)})
    utts = (paths["data"] / "utt2emo").read_text().split()[::2]
    write_map(paths["data"] / "utt2gender", {utt: gender_of(utt) for utt in utts})
    return {**paths, "encoder": build_tiny_w2v2(root / "tiny_w2v2")}


def test_without_its_options_the_gender_target_is_not_used(corpus):
    targets = TargetSet.from_config({"data_dir": corpus["data"]})
    assert "gender" not in [t.name for t in targets.targets]


def test_batch_fields_prior_loss_decoding_and_scores(corpus):
    targets = TargetSet.from_config({"data_dir": corpus["data"], "gender_prior": True, "gender_weight": 0.5})
    data = load_fold_data(corpus["data"], corpus["fold"], targets)
    batch = data.train.collate([data.train[0], data.train[3]])  # spk0-u00 (ang: f), spk0-u03 (neu: m)
    assert batch.gender.tolist() == [0, 1]
    assert targets.head_sizes() == {"n_classes": len(CLASSES), "prior_size": 2, "utterance_heads": {"gender": 2}}
    assert targets.model_inputs(batch)["prior"].tolist() == [[1.0, 0.0], [0.0, 1.0]]

    gender_logits = torch.tensor([[2.0, 1.0], [3.0, 0.0]])  # decodes f, f
    out = SEROutput(emo_logits=torch.zeros(2, len(CLASSES)), phn_log_probs=None, frame_lens=None,
                    utterance_logits={"gender": gender_logits})
    total, parts = targets.loss(out, batch)
    gender_ce = F.cross_entropy(gender_logits, torch.tensor([0, 1]))
    assert torch.allclose(parts["GR"], gender_ce)
    assert torch.allclose(total, parts["ER"] + 0.5 * gender_ce)
    kept = targets.keep(out, batch)
    assert targets.columns(kept) == {"ref_gender": ["f", "m"], "hyp_gender": ["f", "f"]}
    scores = targets.epoch_scores(kept)
    assert scores["gender_WA"] == 0.5 and scores["gender_UA"] == 0.5  # f right, m wrong


def test_an_unknown_gender_is_refused_naming_the_file(corpus, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("wav.scp", "utt2emo", "utt2dur", "classes"):
        (data / name).write_text((corpus["data"] / name).read_text())
    text = (corpus["data"] / "utt2gender").read_text()
    (data / "utt2gender").write_text(text.replace("spk0-u00 f", "spk0-u00 x"))
    targets = TargetSet.from_config({"data_dir": data, "gender_weight": 1.0})
    with pytest.raises(DataDirError, match=r"utt2gender: gender\(s\) x"):
        load_fold_data(data, corpus["fold"], targets)


@pytest.mark.timeout(900)
def test_the_auxiliary_gender_task_learns_and_is_scored(corpus, tmp_path):
    fold = tmp_path / "exp" / "gender" / "proto" / "fold1"
    hparams = {**tiny_w2v2_hparams(corpus, fold), "gender_weight": 1.0, "gender_prior": True}  # a variant config's keys
    train_fold(hparams, {"device": "cpu", "noprogressbar": True})
    history = read_history(fold / "history.jsonl")
    losses = [record["train_GR"] for record in history]
    assert losses[-1] < 0.5 * losses[0], losses  # the gender head learns the tones' gender
    assert history[-1]["valid_gender_UA"] == 1.0
    predictions = read_predictions(fold / "test_predictions.tsv")
    assert predictions.extras["ref_gender"] == [gender_of(utt) for utt in predictions.utts]
    summary = score_experiment(fold.parent)
    assert summary["pooled"]["gender_UA"] is not None and "gender_UA" in summary["mean"]

    # the export serves the prior: the reference gender given reproduces the posteriors the trainer wrote,
    # and without it the gender head's prediction is the one test_predictions.tsv records
    export = export_model(fold, tmp_path / "export")
    wavs = [read_map(corpus["data"] / "wav.scp")[utt] for utt in predictions.utts]
    given = {gender: EmotionRecognizer.from_export(export, given={"gender": gender}) for gender in ("f", "m")}
    for utt, wav, probs in zip(predictions.utts, wavs, predictions.probs):
        prediction = given[gender_of(utt)].predict_file(wav)
        assert [prediction.probs[c] for c in predictions.classes] == pytest.approx(probs, abs=2e-6)
    predicted = EmotionRecognizer.from_export(export).predict_files(wavs)
    assert [prediction.outputs["gender"] for prediction in predicted] == predictions.extras["hyp_gender"]
