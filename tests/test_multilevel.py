"""The multi-level family (serkit.model.multilevel): AlexNet's torchvision weights, the attention fusion,
the options' loss parts and names (the eight ablation rows), and a training run with every option on
that learns, exports and serves the gender as given or predicted. The shared contract (shapes, padding,
over-fitting, fold files, export) is tests/test_families.py's."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_corpus import CLASSES, noisy_tones, write_map, write_tiny_corpus

from serkit.bin import infer as infer_cli
from serkit.bin.train import load_hparams
from serkit.data.datadir import read_map
from serkit.model import build_tiny_w2v2
from serkit.model.build import build_model
from serkit.model.common import masked_mean
from serkit.model.multilevel import AlexNet, AlexNetWeightsError, MultiLevelFamily, load_alexnet_weights
from serkit.serving.export import export_model, load_export
from serkit.serving.inference import EmotionRecognizer
from serkit.training.expdir import read_history, read_predictions
from serkit.training.experiments import plan
from serkit.training.train import train_fold

ROOT = Path(__file__).resolve().parents[1]
TINY = {"spectrogram": {"n_mels": 16}, "mfcc": {"n_mfcc": 8, "n_mels": 20}, "batch_size": 4, "num_workers": 0,
        "ckpt_interval_minutes": 0, "lr": 3e-3, "number_of_epochs": 8, "patience": None, "max_duration": None,
        "network": {"alexnet_channels": [4, 8, 8, 8, 8], "alexnet_hidden": 16, "lstm_hidden": 8, "dropout": 0.0}}
# torchvision's AlexNet: its parameter names and shapes (the ImageNet classifier classifier.6 included)
TORCHVISION_SHAPES = {"features.0": (64, 3, 11, 11), "features.3": (192, 64, 5, 5), "features.6": (384, 192, 3, 3),
                      "features.8": (256, 384, 3, 3), "features.10": (256, 256, 3, 3), "classifier.1": (4096, 9216),
                      "classifier.4": (4096, 4096), "classifier.6": (1000, 4096)}


def gender_of(utt: str) -> str:
    """A gender the audio reveals: the tiny corpus's tones rise with the emotion index (ang, hap: f)."""
    return "f" if int(utt[-2:]) % 4 < 2 else "m"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("multilevel")
    paths = write_tiny_corpus(root, 16, seconds=lambda i: 0.6 + 0.1 * (i % 4), waveform=noisy_tones(220, 180),
                              splits={"train": range(0, 8), "valid": range(8, 12), "test": range(12, 16)})
    utts = (paths["data"] / "utt2emo").read_text().split()[::2]
    write_map(paths["data"] / "utt2gender", {utt: gender_of(utt) for utt in utts})
    return {**paths, "root": root, "encoder": build_tiny_w2v2(root / "tiny_w2v2")}


def hparams(corpus: dict, out: Path, **extra) -> dict:
    overrides = {"data_dir": str(corpus["data"]), "fold_dir": str(corpus["fold"]), "output_folder": str(out),
                 "encoder_source": str(corpus["encoder"]), "feature_cache": str(corpus["root"] / "dump"), "seed": 3,
                 **TINY, **extra}
    return load_hparams(str(ROOT / "conf" / "multilevel.yaml"), overrides)


def tiny_network(corpus: dict, tmp_path: Path, **extra):
    config = hparams(corpus, tmp_path, **extra)
    torch.manual_seed(0)
    return build_model(MultiLevelFamily(), config, len(CLASSES), 0, [(), (3, 16), (8,)]).network


# ----------------------------------------------------------------------------- AlexNet weights


def torchvision_state(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for layer, shape in TORCHVISION_SHAPES.items():
        state[f"{layer}.weight"] = 0.01 * torch.randn(shape, generator=generator)
        state[f"{layer}.bias"] = torch.randn(shape[0], generator=generator)
    return state


def test_alexnet_loads_a_torchvision_state_dict(tmp_path):
    state = torchvision_state()
    torch.save(state, tmp_path / "alexnet.pth")
    network = AlexNet()
    load_alexnet_weights(network, str(tmp_path / "alexnet.pth"))
    loaded = network.state_dict()
    assert set(loaded) == {name for name in state if not name.startswith("classifier.6.")}
    for name, tensor in loaded.items():
        assert torch.equal(tensor, state[name]), name


def test_alexnet_weights_that_are_missing_or_do_not_fit_are_refused_saying_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(AlexNetWeightsError, match="no such file.*alexnet_weights: null"):
        load_alexnet_weights(AlexNet(), str(tmp_path / "missing.pth"))
    torch.save(torchvision_state(), tmp_path / "alexnet.pth")
    with pytest.raises(AlexNetWeightsError, match="do not fit torchvision's AlexNet"):
        load_alexnet_weights(AlexNet(channels=(4, 8, 8, 8, 8), hidden=16), str(tmp_path / "alexnet.pth"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))  # an empty cache
    try:
        with pytest.raises(AlexNetWeightsError, match="HF_HUB_OFFLINE is set.*load_state_dict_from_url"):
            load_alexnet_weights(AlexNet(channels=(4, 8, 8, 8, 8), hidden=16), "imagenet")
    finally:
        torch.hub.set_dir(hub)


def test_the_family_loads_the_configured_alexnet_weights(corpus, tmp_path):
    torch.save(torchvision_state(1), tmp_path / "alexnet.pth")
    full = {"alexnet_channels": [64, 192, 384, 256, 256], "alexnet_hidden": 4096, "lstm_hidden": 8, "dropout": 0.0}
    network = tiny_network(corpus, tmp_path, network=full, alexnet_weights=str(tmp_path / "alexnet.pth"))
    assert torch.equal(network.alexnet.features[0].weight, torchvision_state(1)["features.0.weight"])


# ----------------------------------------------------------------------------- the network and its options


def test_the_fusion_scales_the_wav2vec_embedding_by_attention_over_the_other_two_levels(corpus, tmp_path):
    network = tiny_network(corpus, tmp_path, level_weight=1).eval()
    generator = torch.Generator().manual_seed(2)
    wavs = 0.3 * torch.randn(2, 12000, generator=generator)
    spec, mfcc = torch.randn(2, 75, 3, 16, generator=generator), torch.randn(2, 75, 8, generator=generator)
    lens = [torch.tensor([12000, 12000]), torch.tensor([75, 75]), torch.tensor([75, 75])]
    with torch.no_grad():
        out = network([wavs, spec, mfcc], lens)
        w2v2 = network.w2v2(wavs, lens[0])
        x_w = masked_mean(w2v2.frame_features, w2v2.frame_lens)
        x_s = network.spec_proj(network.alexnet(F.pad(spec.permute(0, 2, 3, 1), (0, 0, 0, 63 - 16))))
        _, (hidden, _) = network.lstm(mfcc)
        x_m = network.mfcc_proj(torch.cat([hidden[0], hidden[1]], dim=-1))
        attention = torch.softmax(torch.cat([x_m, x_s], dim=-1), dim=-1)
        fused = attention * x_w.shape[-1] * x_w
    torch.testing.assert_close(out.extras["embedding"], fused)
    torch.testing.assert_close(out.emo_logits, network.classifier(fused))
    torch.testing.assert_close(out.extras["spec_logits"], network.level_heads["spec"](x_s))
    torch.testing.assert_close(out.extras["mfcc_logits"], network.level_heads["mfcc"](x_m))
    torch.testing.assert_close(out.extras["w2v2_logits"], w2v2.emo_logits)


def test_options_off_build_no_extra_parts_and_the_centres_get_their_own_optimizer(corpus, tmp_path):
    plain = tiny_network(corpus, tmp_path)
    assert plain.level_heads is None and plain.centres is None
    # only MF learns the gender head that serves speakers whose gender nobody gives
    assert hparams(corpus, tmp_path)["gender_weight"] == 0 < hparams(corpus, tmp_path, gender_prior=True)["gender_weight"]
    assert list(plain.param_groups()) == ["encoder", "model"]
    both = tiny_network(corpus, tmp_path, level_weight=1, centre_weight=0.01)
    groups = both.param_groups()
    assert list(groups) == ["encoder", "centres", "model"] and groups["centres"] == [both.centres.centres]
    grouped = [id(p) for group in groups.values() for p in group]
    assert len(grouped) == len(set(grouped))  # no parameter in two optimizers
    assert {id(p) for p in both.parameters() if p.requires_grad} <= set(grouped)


def test_the_grid_runs_the_papers_eight_ablation_rows_each_named_by_its_options(tmp_path):
    grid = ["gender_prior=False,True", "level_weight=0,1", "centre_weight=0,0.01"]
    experiments = plan(["multilevel"], [], "4class", 1, str(ROOT / "conf"), str(tmp_path), grid=grid)
    rows = [e.tag.removeprefix("multilevel_4class_").removesuffix("_patience8_seed1") for e in experiments]
    assert sorted(rows) == sorted(["base", "CR0.01", "MTL1", "MTL1-CR0.01", "MF", "MF-CR0.01", "MF-MTL1",
                                   "MF-MTL1-CR0.01"])
    assert MultiLevelFamily().tag({"gender_prior": True, "level_weight": 0, "centre_weight": 0,
                                   "alexnet_weights": "imagenet"}) == "MF_alexnet-imagenet"


# ----------------------------------------------------------------------------- a training run


def test_with_every_option_it_learns_exports_and_serves_the_gender_given_or_predicted(corpus, tmp_path, capsys):
    fold = tmp_path / "exp" / "ml" / "proto" / "fold1"
    config = hparams(corpus, fold, gender_prior=True, gender_weight=1.0, level_weight=1, centre_weight=0.01)
    train_fold(config, {"device": "cpu", "noprogressbar": True})
    history = read_history(fold / "history.jsonl")
    for part in ("ER", "GR", "L_w2v2", "L_spec", "L_mfcc", "CR"):
        assert f"train_{part}" in history[0], part
    assert history[-1]["train_ER"] < 0.7 * history[0]["train_ER"], [r["train_ER"] for r in history]
    assert max(record["valid_UA"] for record in history) > 0.25  # above chance on the held-out speaker

    export = export_model(fold, tmp_path / "export")
    centres = load_export(export).state_dict["network.centres.centres"]
    assert float(centres.abs().sum()) > 0  # Wen et al.'s update moved them from the origin
    predictions = read_predictions(fold / "test_predictions.tsv")
    wavs = [read_map(corpus["data"] / "wav.scp")[utt] for utt in predictions.utts]
    given = {gender: EmotionRecognizer.from_export(export, given={"gender": gender}) for gender in ("f", "m")}
    for utt, wav, probs in zip(predictions.utts, wavs, predictions.probs):
        prediction = given[gender_of(utt)].predict_file(wav)
        assert [prediction.probs[c] for c in predictions.classes] == pytest.approx(probs, abs=2e-6)
    assert infer_cli.main([str(export), "--json", "--gender", "m", wavs[0]]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["gender_source"] == "given"
    assert infer_cli.main([str(export), "--json", wavs[0]]) == 0
    served = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert served["gender_source"] == "predicted" and served["gender"] in ("f", "m")
