"""Every SSL encoder type behind one choice: wav2vec 2.0, HuBERT, WavLM, data2vec-audio and Whisper's encoder.

Each type is built as a tiny random checkpoint (serkit.model.tiny_w2v2, no download) and loaded offline
like a pretrained one; the contract tests run over each: shapes, padding invariance, the export round
trip and the frozen cache (the probe's cached layers are the states W2V2-MTL fuses); AMRWC and the
multi-level model, the other families with an SSL branch, get shapes, padding and export over each too.
Geometry (layer count, frame rate, minimum length) and input normalisation are checked to come from the
checkpoint.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2Config, WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from serkit.features import encoder as ssl_encoder
from serkit.features import whisper_encoder
from serkit.features.base import feature_from_dict
from serkit.features.ssl_layers import SSLFeatureError, SSLLayers
from serkit.model import SERModel, W2V2Network, get_family
from serkit.model.build import model_config, model_from_config
from serkit.model.tiny_w2v2 import TINY_LAYERS, build_tiny_w2v2

from test_families import corpus  # noqa: F401  (the fixture: a tiny corpus, fold and lang dir)
from test_families import (RUN_OPTS, assert_export_reproduces, batch_of, hparams_for, read_rows, tiny_model,
                           utterance_inputs)
from tiny_corpus import CLASSES

SR = 16000
TYPES = list(ssl_encoder.ENCODER_TYPES)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny checkpoint folder of each type, built once."""
    root = tmp_path_factory.mktemp("encoders")
    return {t: build_tiny_w2v2(root / t, encoder_type=t) for t in TYPES}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def waves(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [0.2 * torch.randn(n, generator=generator) for n in lengths]


def padded(wavs):
    batch = torch.zeros(len(wavs), max(len(w) for w in wavs))
    for row, wav in enumerate(wavs):
        batch[row, :len(wav)] = wav
    return batch, torch.tensor([len(w) / batch.shape[1] for w in wavs])


def network(folder, seed=0) -> SERModel:
    torch.manual_seed(seed)
    return SERModel(W2V2Network.from_pretrained(str(folder), n_emotions=4), n_tokens=5).eval()


@pytest.mark.parametrize("encoder_type", TYPES)
def test_geometry_is_read_from_the_loaded_checkpoint(tiny, encoder_type):
    encoder = ssl_encoder.load_encoder(str(tiny[encoder_type]))
    facts = ssl_encoder.describe(encoder)
    assert facts["type"] == encoder_type and facts["layers"] == TINY_LAYERS[encoder_type]
    assert ssl_encoder.n_states(encoder) == TINY_LAYERS[encoder_type] + 1 and facts["hidden_size"] == 64
    assert facts["frame_rate"] == 50.0
    states = ssl_encoder.hidden_states(encoder.eval(), waves([SR])[0])
    assert len(states) == ssl_encoder.n_states(encoder)
    assert states[0].shape[1] == int(ssl_encoder.frame_lens(encoder, torch.tensor([SR]))[0])
    shortest = ssl_encoder.min_samples(encoder.config)
    assert ssl_encoder.frame_lens(encoder, torch.tensor([shortest, shortest - 1])).tolist() == [1, 0]


def test_frame_rate_follows_the_cnn_strides_and_the_mel_hop():
    """Another stride or hop, another frame rate: nothing assumes 50 frames a second."""
    config = Wav2Vec2Config(conv_dim=(16,) * 3, conv_kernel=(10, 4, 4), conv_stride=(10, 8, 8), hidden_size=32,
                            num_hidden_layers=5, num_attention_heads=2, intermediate_size=32,
                            num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2).to_dict()
    encoder = ssl_encoder.encoder_from_config(config).eval()
    assert ssl_encoder.frame_rate(encoder) == 25.0 and ssl_encoder.n_states(encoder) == 6
    # no serkit_input, as in a model_config.json written before it existed: wav2vec 2.0's normalised input
    assert ssl_encoder.input_settings(encoder) == {"kind": "waveform", "sampling_rate": SR, "do_normalize": True}
    assert ssl_encoder.hidden_states(encoder, waves([SR])[0])[0].shape[1] == 25  # 1 s at 25 frames a second
    assert ssl_encoder.min_samples(encoder.config) == 10 + (4 - 1) * 10 + (4 - 1) * 10 * 8  # receptive field

    whisper = WhisperConfig(num_mel_bins=40, d_model=32, encoder_layers=1, encoder_attention_heads=2,
                            encoder_ffn_dim=32, max_source_positions=100).to_dict()
    whisper["serkit_input"] = {"kind": "log_mel", "feature_size": 40, "sampling_rate": SR, "hop_length": 320,
                               "n_fft": 400}
    encoder = ssl_encoder.encoder_from_config(whisper).eval()
    assert ssl_encoder.frame_rate(encoder) == 25.0 and ssl_encoder.n_states(encoder) == 2
    assert ssl_encoder.hidden_states(encoder, waves([SR])[0])[0].shape[1] == 25


@pytest.mark.parametrize("encoder_type", TYPES)
def test_padding_never_changes_a_result(tiny, encoder_type):
    model = network(tiny[encoder_type])
    wavs = waves([SR, 9000, 5200], seed=1)
    with torch.no_grad():
        batch = model(*padded(wavs))
        alone = [model(*padded([w])) for w in wavs]
    frames = ssl_encoder.frame_lens(model.network.encoder, torch.tensor([len(w) for w in wavs]))
    assert batch.frame_lens.tolist() == frames.tolist() and batch.emo_logits.shape == (3, 4)
    assert batch.phn_log_probs.shape[:2] == (3, int(frames.max()))
    for row, out in enumerate(alone):
        torch.testing.assert_close(batch.emo_logits[row], out.emo_logits[0], atol=2e-5, rtol=1e-4)
        n = int(frames[row])
        torch.testing.assert_close(batch.phn_log_probs[row, :n], out.phn_log_probs[0, :n], atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("encoder_type", TYPES)
def test_export_round_trip_gives_identical_outputs(tiny, encoder_type):
    trained = network(tiny[encoder_type])
    with torch.no_grad():
        trained.network.fusion_weights.copy_(torch.linspace(-1.0, 2.0, trained.network.num_layers))
    config = {"family": "w2v2_mtl", "network": trained.network.config_dict(), "feature": {"kind": "waveform"},
              "n_emotions": 4, "n_tokens": 5, "classes": list("abcd"), "tokens": list("01234"), "sample_rate": SR}
    rebuilt = model_from_config(json.loads(json.dumps(config)))  # must survive model_config.json
    rebuilt.load_state_dict(trained.state_dict(), strict=True)
    rebuilt.eval()
    batch = padded(waves([SR, 7000], seed=2))
    with torch.no_grad():
        a, b = trained(*batch), rebuilt(*batch)
    assert torch.equal(a.emo_logits, b.emo_logits) and torch.equal(a.phn_log_probs, b.phn_log_probs)


@pytest.mark.parametrize("encoder_type", TYPES)
def test_the_cached_layers_are_the_states_w2v2_mtl_fuses(tiny, encoder_type, tmp_path):
    """The frozen cache: ssl_layers of an utterance, fused with the network's weights, are its fused frames;
    and the spec's export copy of the encoder gives the same layers and digest."""
    spec = feature_from_dict({"kind": "ssl_layers", "params": {"source": str(tiny[encoder_type])}})
    model = network(tiny[encoder_type])
    with torch.no_grad():
        model.network.fusion_weights.copy_(torch.linspace(1.0, -1.0, model.network.num_layers))
    wav = waves([11000], seed=3)[0]
    layers = spec.compute(wav, SR)
    assert layers.dtype == torch.float16 and tuple(layers.shape) == (spec.n_frames(11000), *spec.frame_shape)
    with torch.no_grad():
        fused = model.network(*padded([wav])[:1], torch.tensor([11000])).frame_features[0]
    weights = torch.softmax(model.network.fusion_weights, dim=0)
    torch.testing.assert_close(torch.einsum("l,fld->fd", weights, layers.float()), fused, atol=2e-2, rtol=1e-2)

    exported = spec.export_front_end(tmp_path)
    copy = feature_from_dict(SSLLayers.import_front_end(exported, tmp_path))
    assert copy.params["digest"] == spec.params["digest"]
    assert torch.equal(copy.compute(wav, SR), layers)


def test_whisper_log_mel_is_whispers_own_without_padding_to_30_s():
    settings = whisper_encoder.front_end_settings({}, 80)
    wav = waves([2 * SR + 77], seed=4)[0]
    reference = WhisperFeatureExtractor()(wav.numpy(), sampling_rate=SR, padding="longest", return_tensors="pt")
    ours = whisper_encoder.log_mel(wav, settings)
    assert ours.shape == (80, (2 * SR + 77) // 160)
    torch.testing.assert_close(ours, reference.input_features[0], atol=1e-5, rtol=1e-5)


def test_whisper_pass_equals_transformers_on_a_full_length_input():
    """With a position table of 1 s, a 1 s input is what transformers' WhisperEncoder accepts: the sliced
    pass gives its hidden states exactly."""
    config = WhisperConfig(num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=2,
                           encoder_ffn_dim=64, max_source_positions=50).to_dict()
    torch.manual_seed(0)
    encoder = ssl_encoder.encoder_from_config(config).eval()
    assert isinstance(encoder, WhisperEncoder)
    wav = waves([SR], seed=5)[0]
    mel = whisper_encoder.log_mel(wav, ssl_encoder.input_settings(encoder))
    with torch.no_grad():
        reference = encoder(mel.unsqueeze(0), output_hidden_states=True).hidden_states
        ours = ssl_encoder.hidden_states(encoder, wav)
    assert len(ours) == len(reference) == 3
    for mine, theirs in zip(ours, reference):
        torch.testing.assert_close(mine, theirs)
    with pytest.raises(whisper_encoder.WhisperInputError, match="30 s"):
        ssl_encoder.hidden_states(encoder, waves([SR + 400])[0])


def test_input_normalisation_is_the_checkpoints(tiny):
    """wav2vec2-base normalises its input (do_normalize), wavlm-base-plus does not: a louder copy of an
    utterance gives the same states only to the first."""
    wav = waves([SR], seed=6)[0]
    for encoder_type, normalised in (("wav2vec2", True), ("wavlm", False)):
        encoder = ssl_encoder.load_encoder(str(tiny[encoder_type])).eval()
        assert ssl_encoder.input_settings(encoder)["do_normalize"] is normalised
        with torch.no_grad():
            quiet, loud = (ssl_encoder.hidden_states(encoder, w)[-1] for w in (wav, 4 * wav))
        assert torch.allclose(quiet, loud, atol=1e-4) is normalised


def test_the_cache_name_follows_the_encoders_input(tiny, tmp_path):
    """Same weights, another normalisation: another cache folder. wav2vec 2.0's normalised waveform is
    not spelled out, so specs written before the input was recorded keep their cache folder."""
    import shutil

    assert "input" not in feature_from_dict({"kind": "ssl_layers", "params": {"source": str(tiny["wav2vec2"])}}).params
    folder = tmp_path / "wavlm"
    shutil.copytree(tiny["wavlm"], folder)
    raw = feature_from_dict({"kind": "ssl_layers", "params": {"source": str(folder)}})
    assert raw.params["input"]["do_normalize"] is False
    extractor = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**extractor, "do_normalize": True}))
    normalised = feature_from_dict({"kind": "ssl_layers", "params": {"source": str(folder)}})
    assert normalised.params["digest"] == raw.params["digest"] and normalised.cache_name != raw.cache_name
    with pytest.raises(SSLFeatureError, match="not the .* this model's ssl_layers features were computed with"):
        feature_from_dict(raw.to_dict())


def test_encoder_type_reads_a_config_that_does_not_say(tiny, tmp_path):
    import shutil

    folder = tmp_path / "hubert_without_type"
    shutil.copytree(tiny["hubert"], folder)
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ssl_encoder.EncoderConfigError, match="set `encoder_type` to one of wav2vec2, hubert"):
        ssl_encoder.load_encoder(str(folder))
    assert ssl_encoder.encoder_type(ssl_encoder.load_encoder(str(folder), "hubert")) == "hubert"
    with pytest.raises(ssl_encoder.EncoderConfigError, match="'hubbert' is not supported"):
        ssl_encoder.load_encoder(str(folder), "hubbert")


def test_whisper_freezing_holds_its_convolutions_and_never_trains_its_positions(tiny):
    net = W2V2Network.from_pretrained(str(tiny["whisper"]), n_emotions=4, freeze_feature_encoder=True)
    trainable = {name for name, p in net.encoder.named_parameters() if p.requires_grad}
    assert trainable and not any(name.startswith(("conv1.", "conv2.", "embed_positions.")) for name in trainable)
    net.set_encoder_frozen(True)
    assert not any(p.requires_grad for p in net.encoder.parameters())
    net.set_encoder_frozen(False)
    assert {name for name, p in net.encoder.named_parameters() if p.requires_grad} == trainable
    released = W2V2Network.from_pretrained(str(tiny["whisper"]), n_emotions=4, freeze_feature_encoder=False)
    names = {name for name, p in released.encoder.named_parameters() if p.requires_grad}
    assert "conv1.weight" in names and "embed_positions.weight" not in names


def test_whisper_layerdrop_skips_layers_while_training(tiny):
    """encoder_layerdrop 1: every layer skipped, so every H_i after H_0 is H_0 (then the final LayerNorm)."""
    net = W2V2Network.from_pretrained(str(tiny["whisper"]), n_emotions=4, encoder_layerdrop=1.0).train()
    seen = []
    whisper_encoder.run_layers(net.encoder, padded(waves([SR]))[0], torch.tensor([SR]),
                               lambda i, state: seen.append(i))
    assert seen == [0, TINY_LAYERS["whisper"]]


@pytest.mark.parametrize("encoder_type", ["whisper", "data2vec-audio"])
def test_w2v2_mtl_with_a_ctc_head_trains_on_the_encoder_and_its_export_reproduces_the_fold(
        encoder_type, corpus, tiny, tmp_path):
    """The emotion-phoneme CTC head on another encoder, through the trainer, export and inference."""
    from test_families import RUN_OPTS, assert_export_reproduces, hparams_for, read_rows

    from serkit.serving.export import export_model
    from serkit.training import expdir
    from serkit.training.train import train_fold

    out = tmp_path / "fold01"
    train_fold(hparams_for("w2v2_mtl", {**corpus, "encoder": tiny[encoder_type]}, out, mtl_lambda=0.5,
                           number_of_epochs=1), RUN_OPTS)
    config = json.loads((out / expdir.MODEL_CONFIG_FILE).read_text())
    assert config["network"]["encoder_config"]["model_type"] == encoder_type
    rows = read_rows(out / expdir.PREDICTIONS_FILE)
    assert rows and "hyp_tokens" in rows[0]
    assert_export_reproduces(export_model(out, tmp_path / "export"), rows, corpus["wav"])


# ----------------------------------------------------------------------------- every family with an SSL branch
SSL_FAMILIES = ["amrwc", "multilevel"]  # W2V2-MTL's own contract is the tests above


def family_model(name, encoder_type, corpus, tiny, tmp_path):
    """The family's tiny model (test_families' TINY settings) on the tiny encoder of this type, its
    hparams and its inputs' feature kinds."""
    on_encoder = {**corpus, "encoder": tiny[encoder_type]}
    model, specs = tiny_model(name, on_encoder, tmp_path, n_tokens=5)
    return model.eval(), hparams_for(name, on_encoder, tmp_path), specs


def rebuilt_from_config(name, model, hparams, specs, drop_input=False) -> SERModel:
    """``model`` rebuilt from its model_config.json data (as an export is) with its weights loaded.
    ``drop_input``: its encoder config without ``serkit_input``, as folds trained before it was recorded."""
    family = get_family(name)
    dims = [() if spec is None else spec.frame_shape for spec in specs]
    config = json.loads(json.dumps(model_config(family, model, hparams, family.inputs(hparams), dims, CLASSES,
                                                tokens=list("01234"))))
    if drop_input:
        del config["network"]["encoder_config"][ssl_encoder.INPUT_KEY]
    rebuilt = model_from_config(config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    return rebuilt.eval()


@pytest.mark.parametrize("encoder_type", TYPES)
@pytest.mark.parametrize("name", SSL_FAMILIES)
def test_ssl_families_take_every_encoder_shapes_padding_and_export(name, encoder_type, corpus, tiny, tmp_path):
    """Shapes, padding invariance in eval mode and the model_config round trip of each family on each type."""
    model, hparams, specs = family_model(name, encoder_type, corpus, tiny, tmp_path)
    inputs = utterance_inputs(specs, [1.1, 0.7, 0.9])
    batch = batch_of(inputs)
    rebuilt = rebuilt_from_config(name, model, hparams, specs)
    with torch.no_grad():
        out = model(*batch)
        alone = [model([x.unsqueeze(0) for x in one], [torch.ones(1) for _ in one]) for one in inputs]
        again = rebuilt(*batch)
    assert model.network.config_dict()["encoder_config"]["model_type"] == encoder_type
    assert out.emo_logits.shape == (3, 4) and out.phn_log_probs.shape[::2] == (3, 5)
    for row, one in enumerate(alone):
        torch.testing.assert_close(one.emo_logits[0], out.emo_logits[row], atol=2e-4, rtol=1e-4)
        n = int(one.frame_lens[0])
        assert n == int(out.frame_lens[row])
        torch.testing.assert_close(one.phn_log_probs[0, :n], out.phn_log_probs[row, :n], atol=2e-4, rtol=1e-4)
    assert torch.equal(out.emo_logits, again.emo_logits) and torch.equal(out.phn_log_probs, again.phn_log_probs)


def test_amrwc_folds_exported_before_the_encoder_input_was_recorded_still_load(corpus, tiny, tmp_path):
    """An encoder config without ``serkit_input`` means wav2vec 2.0's normalised waveform: the rebuilt
    model gives the trained one's outputs (and its minimum input length)."""
    model, hparams, specs = family_model("amrwc", "wav2vec2", corpus, tiny, tmp_path)
    old = rebuilt_from_config("amrwc", model, hparams, specs, drop_input=True)
    batch = batch_of(utterance_inputs(specs, [0.8, 0.6], seed=2))
    with torch.no_grad():
        assert torch.equal(model(*batch).emo_logits, old(*batch).emo_logits)
    family = get_family("amrwc")
    assert family.min_input_frames(family.network_config(old.network)) == 400  # the wav2vec 2.0 CNN's 25 ms


@pytest.mark.parametrize("name, encoder_type", [("amrwc", "whisper"), ("multilevel", "hubert")])
def test_ssl_families_train_on_another_encoder_and_the_export_reproduces_the_fold(
        name, encoder_type, corpus, tiny, tmp_path):
    """Through the trainer, export and inference: the export scores the fold's test files as training did."""
    from serkit.serving.export import export_model
    from serkit.training import expdir
    from serkit.training.train import train_fold

    out = tmp_path / "fold01"
    train_fold(hparams_for(name, {**corpus, "encoder": tiny[encoder_type]}, out, number_of_epochs=1), RUN_OPTS)
    config = json.loads((out / expdir.MODEL_CONFIG_FILE).read_text())
    assert config["network"]["encoder_config"]["model_type"] == encoder_type
    assert_export_reproduces(export_model(out, tmp_path / "export"), read_rows(out / expdir.PREDICTIONS_FILE),
                             corpus["wav"])


# ----------------------------------------------------------------------------- one command compares encoders
def test_encoders_run_every_family_that_has_one_once_each(tmp_path):
    from serkit.training.experiments import PlanError, encoder_name, plan

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    hub, folder = "microsoft/wavlm-base-plus", str(tmp_path / "db" / "tiny_hubert")
    experiments = plan(["ssl_probe", "w2v2_mtl", "egemaps_svm"], [], "4class", 1, conf, str(tmp_path),
                       encoders=[hub, folder])
    assert [(e.tag, e.args[:2]) for e in experiments] == [
        ("ssl_probe_4class_wavlm-base-plus_seed1", ("--encoder_source", hub)),
        ("ssl_probe_4class_tiny-hubert_seed1", ("--encoder_source", folder)),
        ("w2v2_mtl_4class_wavlm-base-plus_lambda0.1_seed1", ("--encoder_source", hub)),
        ("w2v2_mtl_4class_tiny-hubert_lambda0.1_seed1", ("--encoder_source", folder)),
        ("egemaps_svm_4class_seed1", ())]
    assert encoder_name("openai/whisper-base/") == "whisper-base"
    with pytest.raises(PlanError, match="its own short name"):
        plan(["ssl_probe"], [], "4class", 1, conf, str(tmp_path), encoders=["a/tiny_hubert", "b/tiny_hubert"])


@pytest.mark.e2e  # runs the mini recipe's stages 0-5
@pytest.mark.timeout(2400)
def test_mini_recipe_compares_the_five_tiny_encoders_in_one_table(tmp_path_factory):
    """``--encoders`` with a tiny random encoder of each type: stages 3-5 on one fold, one comparison table,
    and each export scores the fold's test utterances as training's predictions say."""
    from test_recipes import copy_recipes, run_recipe

    from serkit.data.datadir import read_map
    from serkit.serving.inference import EmotionRecognizer

    recipe = copy_recipes(tmp_path_factory.mktemp("recipes")) / "mini_iemocap"
    result = run_recipe(recipe, "--stage", "0", "--stop_stage", "2", "--model", "ssl_probe")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    names = ["w2v2", "hubert", "wavlm", "data2vec", "whisper"]
    result = run_recipe(recipe, "--stage", "3", "--model", "ssl_probe", "--folds", "1", "--export_fold", "1",
                        "--encoders", " ".join(f"db/tiny_{name}" for name in names))
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    results = (recipe / "RESULTS.md").read_text()
    title = "## Comparison: ssl_probe, encoders db/tiny_w2v2 db/tiny_hubert"
    assert title in results
    table = results.split(title)[1]
    wavs = read_map(recipe / "data" / "all" / "wav.scp")
    for name in names:
        exp = recipe / "exp" / f"ssl_probe_4class_tiny-{name}_seed1"
        assert f"ssl_probe_4class_tiny-{name}_seed1" in table
        with open(exp / "loso" / "fold01" / "test_predictions.tsv", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        recognizer = EmotionRecognizer.from_export(exp / "export")
        predictions = recognizer.predict_files([recipe / wavs[row["utt"]] for row in rows], batch_size=4)
        for row, prediction in zip(rows, predictions):
            assert prediction.label == row["hyp"]
            assert all(abs(prediction.probs[c] - float(row[f"p_{c}"])) < 1e-5 for c in prediction.probs)
