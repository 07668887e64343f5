"""A family with several inputs: each is computed, normalised with its own training statistics and cached
like a single input, and the export of such a model reproduces its test predictions.

The family here exists only for this test: a waveform and its log-Mel spectrogram (with deltas), each
mean-pooled over its real frames, then one linear layer.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_families import assert_export_reproduces, read_rows
from tiny_corpus import noisy_tones, write_tiny_corpus
from torch import nn

from serkit.training import expdir
from serkit.data.audio import read_audio
from serkit.bin.train import load_hparams
from serkit.data.dataio import batch_inputs, collate_batch, load_fold_data
from serkit.serving.export import export_model, load_export
from serkit.features import FeatureStats, make_feature
from serkit.model import registry
from serkit.model.common import masked_mean
from serkit.model.family import ModelFamily
from serkit.model.ser_model import NetworkOutput
from serkit.targets import TargetSet
from serkit.training.train import train_fold

CONF = Path(__file__).resolve().parents[1] / "conf"
N_MELS = 8
INPUTS = [{"kind": "waveform", "sample_rate": 16000, "params": {}},
          {"kind": "log_mel_deltas", "sample_rate": 16000, "params": {"n_mels": N_MELS}}]


class WaveAndMelNetwork(nn.Module):
    """Emotion logits from a waveform [B, T] and its log-Mel with deltas [B, F, 3, n_mels]."""

    def __init__(self, n_mels: int, n_classes: int):
        super().__init__()
        self.n_mels, self.n_classes = n_mels, n_classes
        self.wave = nn.Linear(1, 4)
        self.mel = nn.Linear(3 * n_mels, 4)
        self.head = nn.Linear(8, n_classes)

    def forward(self, inputs: list[torch.Tensor], lengths: list[torch.Tensor]) -> NetworkOutput:
        (wave, mel), (wave_lens, mel_lens) = inputs, lengths
        pooled_wave = masked_mean(torch.tanh(self.wave(wave.unsqueeze(-1))), wave_lens)
        pooled_mel = masked_mean(torch.tanh(self.mel(mel.flatten(2))), mel_lens)
        return NetworkOutput(emo_logits=self.head(torch.cat([pooled_wave, pooled_mel], dim=-1)))

    def config_dict(self) -> dict:
        return {"n_mels": self.n_mels, "n_classes": self.n_classes}


class WaveAndMelFamily(ModelFamily):
    name = "wave_and_mel"

    def inputs(self, hparams: dict) -> list[dict]:
        return [dict(feature) for feature in INPUTS]

    def build_network(self, hparams: dict, n_classes: int, input_dims: list[tuple[int, ...]]) -> nn.Module:
        assert input_dims == [(), (3, N_MELS)]
        return WaveAndMelNetwork(N_MELS, n_classes)

    def network_config(self, network: nn.Module) -> dict:
        return network.config_dict()

    def network_from_config(self, config: dict) -> nn.Module:
        return WaveAndMelNetwork(**config)


@pytest.fixture
def family(monkeypatch):
    monkeypatch.setitem(registry.FAMILIES, WaveAndMelFamily.name, f"{__name__}:WaveAndMelFamily")


def training_statistics(wavs: list[Path], feature: dict) -> FeatureStats:
    """What the inputs' normalisation must hold, computed here independently of the trainer."""
    kind, stats = make_feature(feature["kind"], feature["sample_rate"], feature["params"]), FeatureStats()
    for wav in wavs:
        stats.accumulate(kind.compute(read_audio(wav, target_sr=16000)[0], 16000))
    return stats


def tiny_corpus(root: Path) -> dict:
    return write_tiny_corpus(root, 16, seconds=lambda i: 0.6 + 0.1 * (i % 4), waveform=noisy_tones(220, 180),
                             splits={"train": range(0, 8), "valid": range(8, 12), "test": range(12, 16)})


def test_inputs_are_batched_side_by_side_and_cropped_over_the_same_stretch(tmp_path):
    corpus = tiny_corpus(tmp_path)
    wave, mel = (make_feature(feature["kind"], params=feature["params"]) for feature in INPUTS)
    data = load_fold_data(corpus["data"], corpus["fold"], TargetSet.from_config({"data_dir": corpus["data"]}),
                          features=[wave, mel], max_duration=0.5)
    for index in range(len(data.train)):  # every training utterance (0.6 to 0.9 s) is cropped to 0.5 s
        item = data.train[index]
        whole_wave, whole_mel = data.train.inputs(index, which=0), data.train.inputs(index, which=1)
        assert item["sig"].shape == (8000,) and item["sig1"].shape == (mel.n_frames(8000), 3, N_MELS)
        (start,) = torch.nonzero((whole_wave.unfold(0, 8000, 1) == item["sig"]).all(dim=1))[0].tolist()
        frame = start * whole_mel.shape[0] // whole_wave.shape[0]
        assert torch.equal(item["sig1"], whole_mel[frame:frame + mel.n_frames(8000)])
    inputs, lengths = batch_inputs(collate_batch([data.valid[0], data.valid[1]]))  # 0.6 s and 0.7 s, uncropped
    assert [tuple(x.shape) for x in inputs] == [(2, 11200), (2, mel.n_frames(11200), 3, N_MELS)]
    assert lengths[0].tolist() == pytest.approx([9600 / 11200, 1.0])
    assert lengths[1].tolist() == pytest.approx([mel.n_frames(9600) / mel.n_frames(11200), 1.0])


def test_augmentation_computes_every_input_from_the_same_perturbed_waveform(tmp_path):
    from serkit.features.augment import make_augmenter

    corpus = tiny_corpus(tmp_path)
    wave, mel = (make_feature(feature["kind"], params=feature["params"]) for feature in INPUTS)
    data = load_fold_data(corpus["data"], corpus["fold"], TargetSet.from_config({"data_dir": corpus["data"]}),
                          features=[wave, mel])
    augment = {"speed": [90, 110], "noise": {"snr_low": 10, "snr_high": 20},
               "freq_mask": {"drop_count_low": 1, "drop_count_high": 1, "drop_length_low": 1, "drop_length_high": 2}}
    data.train.augmenter = make_augmenter({"augment": augment}, [feature["kind"] for feature in INPUTS])
    data.train.set_epoch(2, seed=7)
    masked_some = False
    for index in range(len(data.train)):
        item, clean = data.train[index], data.train.inputs(index, which=0)
        assert not torch.equal(item["sig"], clean[:item["sig"].shape[0]])  # speed and noise changed the waveform
        recomputed = mel.compute(item["sig"], 16000)  # the log-Mel of the waveform the model received ...
        assert item["sig1"].shape == recomputed.shape
        kept = (item["sig1"] == recomputed).all(dim=(0, 1))  # ... except the masked Mel bands
        assert kept.any()
        masked_some |= not kept.all()
    assert masked_some


def test_two_inputs_are_normalised_cached_trained_and_exported(family, tmp_path):
    corpus = tiny_corpus(tmp_path)
    out, cache = tmp_path / "exp" / "fold01", tmp_path / "dump"
    hparams = load_hparams(str(CONF / "tim_net.yaml"), {
        "model": WaveAndMelFamily.name, "data_dir": str(corpus["data"]), "fold_dir": str(corpus["fold"]),
        "output_folder": str(out), "feature_cache": str(cache), "seed": 3, "number_of_epochs": 3, "batch_size": 4})
    scores = train_fold(hparams, {"device": "cpu", "noprogressbar": True})
    assert 0 <= scores["UA"] <= 1 and expdir.is_done(out)

    # each input was normalised with the statistics of its own training frames
    train = (corpus["fold"] / "train").read_text().split()
    state = load_export(export_model(out, tmp_path / "export")).state_dict
    for index, feature in enumerate(INPUTS):
        expected = training_statistics([corpus["wav"] / f"{utt}.wav" for utt in train], feature)
        torch.testing.assert_close(state[f"input_norm.{index}.mean"], expected.mean.float())
        torch.testing.assert_close(state[f"input_norm.{index}.std"], expected.std.float().clamp_min(1e-5))
    # the spectrogram is cached once per utterance, under its own spec; the waveform is read from the audio
    (folder,) = cache.iterdir()
    assert folder.name == make_feature("log_mel_deltas", params={"n_mels": N_MELS}).cache_name()
    assert len(list(folder.glob("*.pt"))) == 16

    assert_export_reproduces(tmp_path / "export", read_rows(out / expdir.PREDICTIONS_FILE), corpus["wav"])


def test_a_fold_with_one_feature_in_its_config_exports_as_the_one_input_case(tmp_path):
    """Folds whose model_config.json names one ``feature`` (and whose checkpoints hold ``input_norm.mean``)."""
    from speechbrain.utils.checkpoints import Checkpointer

    from serkit.serving.inference import EmotionRecognizer
    from serkit.model.build import model_from_config

    network = {"n_features": 13, "n_classes": 4, "n_filters": 8, "kernel_size": 2, "n_blocks": 3, "dropout": 0.1}
    feature = {"kind": "mfcc", "sample_rate": 16000, "params": {"n_mfcc": 13, "n_mels": 40}}
    config = {"family": "tim_net", "network": network, "feature": feature, "input_dims": [13], "n_emotions": 4,
              "n_tokens": 0, "classes": ["ang", "hap", "neu", "sad"], "tokens": [], "sample_rate": 16000}
    torch.manual_seed(0)
    model = model_from_config(config).eval()
    with torch.no_grad():
        model.input_norm[0].set_stats(torch.randn(13), torch.rand(13) + 0.5)
    old_state = {name.replace("input_norm.0.", "input_norm."): tensor for name, tensor in model.state_dict().items()}
    holder = model_from_config(config)
    holder.load_state_dict(old_state)  # a SpeechBrain checkpoint of such a fold loads too
    fold = tmp_path / "fold01"
    fold.mkdir()
    expdir.write_model_config(fold, config)
    Checkpointer(fold / "save", recoverables={"model": holder}).save_checkpoint(meta={"UA": 0.5})
    (saved,) = (fold / "save").glob(f"CKPT*/{expdir.CHECKPOINT_MODEL_FILE}")
    torch.save(old_state, saved)  # the weights as such a fold holds them

    export = export_model(fold, tmp_path / "export")
    assert load_export(export).config["inputs"] == [make_feature(**feature).to_dict()]
    wave = torch.randn(12000, generator=torch.Generator().manual_seed(1))
    feats = make_feature(**feature).compute(wave, 16000)
    expected = torch.softmax(model(feats.unsqueeze(0), torch.ones(1)).emo_logits, dim=-1)[0]
    probs = EmotionRecognizer.from_export(export).predict_batch([wave])[0].probs
    torch.testing.assert_close(torch.tensor([probs[c] for c in config["classes"]]), expected, atol=1e-6, rtol=0)
