"""The frozen-encoder probe (ssl_probe) and its cached ``ssl_layers`` input.

Proves: the layers are computed once per utterance and every later read (the next epoch, another
run) comes from the cache, stored as float16; an encoder with other weights, even at the same path,
never reads the old cache and is refused by a spec made for the old weights; an export scores audio
on its own after the encoder's folder is deleted, reproducing the fold's test predictions; and the
probe's weights in a W2V2-MTL network with the same (frozen) encoder give the same posteriors and
labels as the cached path. The generic family contract (shapes, padding, over-fitting, a fold and
its export, the CTC head) runs in tests/test_families.py.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_corpus import CLASSES, noisy_tones, write_tiny_corpus

from serkit.data.audio import read_audio
from serkit.bin.train import load_hparams
from serkit.data.dataio import FeatureCache, load_fold_data
from serkit.serving.export import export_model
from serkit.features import FeatureError, FeatureKind, feature_from_dict, ssl_layers
from serkit.serving.inference import EmotionRecognizer
from serkit.features.encoder import load_encoder
from serkit.model.tiny_w2v2 import build_tiny_w2v2
from serkit.model.w2v2_mtl import W2V2Network
from serkit.training.train import train_fold

CONF = Path(__file__).resolve().parents[1] / "conf" / "ssl_probe.yaml"
RUN_OPTS = {"device": "cpu", "noprogressbar": True}
N_UTTS = 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("probe")
    paths = write_tiny_corpus(root, N_UTTS, seconds=lambda i: 0.6 + 0.1 * (i % 4), waveform=noisy_tones(220, 180),
                              splits={"train": range(0, 8), "valid": range(8, 12), "test": range(12, 16)})
    return {**paths, "root": root, "encoder": build_tiny_w2v2(root / "tiny_w2v2")}


def hparams(corpus: dict, out: Path, encoder: Path, cache: Path, **extra) -> dict:
    return load_hparams(str(CONF), {"data_dir": str(corpus["data"]), "fold_dir": str(corpus["fold"]),
                                    "output_folder": str(out), "encoder_source": str(encoder),
                                    "feature_cache": str(cache), "seed": 3, "number_of_epochs": 2,
                                    "batch_size": 4, "lr": 0.01, **extra})


def spec_for(encoder: Path) -> FeatureKind:
    return feature_from_dict({"kind": "ssl_layers", "params": {"source": str(encoder)}})


def test_layers_are_computed_once_and_stored_as_float16(corpus, tmp_path, monkeypatch):
    calls = []
    compute = ssl_layers.ssl_layers
    monkeypatch.setattr(ssl_layers, "ssl_layers", lambda *args: calls.append(1) or compute(*args))
    cache = tmp_path / "dump"
    train_fold(hparams(corpus, tmp_path / "run1", corpus["encoder"], cache), RUN_OPTS)
    # 2 epochs read train and valid twice; each of the 16 utterances was computed exactly once.
    assert len(calls) == N_UTTS
    folder = FeatureCache(cache, spec_for(corpus["encoder"])).dir
    entries = sorted(folder.glob("*.pt"))
    assert len(entries) == N_UTTS
    stored = torch.load(entries[0], weights_only=True)["feats"]
    assert stored.dtype == torch.float16 and stored.shape[1:] == (4, 64)  # tiny encoder: 3 layers + H_0, D = 64

    train_fold(hparams(corpus, tmp_path / "run2", corpus["encoder"], cache), RUN_OPTS)  # another fold or seed
    assert len(calls) == N_UTTS  # everything came from the cache


def test_another_encoder_at_the_same_path_never_reads_stale_layers(corpus, tmp_path):
    encoder = tmp_path / "encoder"
    shutil.copytree(corpus["encoder"], encoder)
    old = spec_for(encoder)
    wav = read_audio(corpus["wav"] / "spk0-u00.wav")[0]
    old_layers = old.compute(wav, 16000)
    assert old_layers.shape == (old.n_frames(wav.shape[0]), *old.frame_shape)

    shutil.rmtree(encoder)
    shutil.move(build_tiny_w2v2(tmp_path / "seed1", seed=1), encoder)  # same path, other weights
    new = spec_for(encoder)
    assert new.params["digest"] != old.params["digest"]
    assert FeatureCache(tmp_path / "dump", new).dir != FeatureCache(tmp_path / "dump", old).dir
    assert not torch.equal(new.compute(wav, 16000), old_layers)
    with pytest.raises(FeatureError, match="not the ones"):  # the old spec would fill its cache with new layers
        old.compute(wav, 16000)
    with pytest.raises(FeatureError, match="not the ones"):  # e.g. an export whose encoder copy was replaced
        feature_from_dict(old.to_dict())
    with pytest.raises(FeatureError, match="fewer than"):
        new.compute(wav[:300], 16000)


@pytest.fixture(scope="module")
def trained_export(corpus, tmp_path_factory) -> dict:
    """A probe trained on a copy of the encoder, exported, and the copy deleted."""
    root = tmp_path_factory.mktemp("export")
    encoder = root / "encoder_source"
    shutil.copytree(corpus["encoder"], encoder)
    out = root / "fold01"
    train_fold(hparams(corpus, out, encoder, root / "dump", number_of_epochs=6), RUN_OPTS)
    export = export_model(out, root / "export")
    shutil.rmtree(encoder)
    with open(out / "test_predictions.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {"export": export, "rows": rows}


def test_export_scores_alone_and_reproduces_the_fold(corpus, trained_export):
    recognizer = EmotionRecognizer.from_export(trained_export["export"])
    rows = trained_export["rows"]
    predictions = recognizer.predict_files([corpus["wav"] / f"{row['utt']}.wav" for row in rows], batch_size=3)
    for row, prediction in zip(rows, predictions):
        expected = [float(row[f"p_{c}"]) for c in CLASSES]
        np.testing.assert_allclose([prediction.probs[c] for c in CLASSES], expected, atol=2e-6)
        assert prediction.label == row["hyp"]


def test_probe_equals_w2v2_mtl_with_the_same_frozen_encoder(corpus, trained_export):
    """Same encoder, fusion weights and emotion head: the uncached network gives the cached posteriors."""
    export = trained_export["export"]
    state = torch.load(export / "model.pt", weights_only=True)
    network = W2V2Network(load_encoder(str(export / ssl_layers.EXPORT_ENCODER_DIR)), n_emotions=len(CLASSES))
    network.fusion_weights.data.copy_(state["network.fusion_weights"])
    network.emotion_head.load_state_dict({"weight": state["network.emotion_head.weight"],
                                          "bias": state["network.emotion_head.bias"]})
    network.set_encoder_frozen(True)
    network.eval()
    rows = trained_export["rows"]
    cached = {row["utt"]: [float(row[f"p_{c}"]) for c in CLASSES] for row in rows}
    for utt, probs in cached.items():
        wav = read_audio(corpus["wav"] / f"{utt}.wav")[0].unsqueeze(0)
        with torch.no_grad():
            uncached = torch.softmax(network(wav, torch.tensor([wav.shape[1]])).emo_logits[0], dim=-1)
        np.testing.assert_allclose(uncached.numpy(), probs, atol=2e-3)  # float16 layers in the cache
        assert CLASSES[int(uncached.argmax())] == CLASSES[int(np.argmax(probs))]
    assert len({row["hyp"] for row in rows}) > 1  # a trained probe, not a constant answer
