"""The model-family contract, run over every registered family with tiny settings.

For each family: its network gives the declared output shapes; padding does not change an
utterance's output where the family claims so; it over-fits a few utterances; a real training run
through the generic trainer writes the fold files of docs/formats.md, its export reproduces the
fold's test predictions exactly, and a finished fold is not trained again; families with frame
outputs carry the CTC head (mtl_lambda > 0). The registry is read at collection time, so a newly
registered family is tested without editing this file, once it has a tiny override here.
"""
from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_corpus import CLASSES, noisy_tones, write_tiny_corpus

import serkit
from serkit.training import expdir
from serkit.bin.train import UsageError, load_hparams
from serkit.training.experiments import PlanError, plan, read_config_values
from serkit.serving.export import export_model
from serkit.features import FeatureKind, feature_from_dict
from serkit.serving.inference import EmotionRecognizer
from serkit.model import SERModel, family_names, get_family, mtl_loss
from serkit.model.build import build_model, model_from_config
from serkit.model.tiny_w2v2 import build_tiny_w2v2
from serkit.training.train import TrainError, train_fold

CONF = Path(__file__).resolve().parents[1] / "conf"
RUN_OPTS = {"device": "cpu", "noprogressbar": True}

#: Tiny settings per family (same architecture, small widths), so the contract runs in seconds.
TINY = {
    "w2v2_mtl": {"number_of_epochs": 2, "batch_size": 4, "lr_heads": 1e-2},
    "tim_net": {"number_of_epochs": 3, "batch_size": 4,
                "feature": {"kind": "mfcc", "params": {"n_mfcc": 13, "n_mels": 40, "win_ms": 25.0, "hop_ms": 10.0}},
                "network": {"n_filters": 8, "kernel_size": 2, "n_blocks": 3, "dropout": 0.1}},
    "sta_crnn": {"number_of_epochs": 2, "batch_size": 4,
                 "feature": {"kind": "log_mel_deltas", "params": {"n_mels": 32}},
                 "network": {"piece_frames": 40, "channels": [4, 4, 8, 8, 8, 8], "kernel_size": [5, 3],
                             "pool_size": [2, 4], "pool_after": [1, 2], "dropout": 0.1, "lstm_hidden": 8,
                             "attention_kernel": 7}},
    "egemaps_svm": {"classifier": "logreg"},
    "ssl_probe": {"number_of_epochs": 2, "batch_size": 4, "lr": 1e-2},
    "nlinear": {"number_of_epochs": 2, "batch_size": 4, "lr": 1e-2,
                "feature": {"kind": "mfcc", "params": {"n_mfcc": 13, "n_mels": 40, "win_ms": 25.0, "hop_ms": 10.0}},
                "network": {"piece_frames": 40, "out_len": 8, "dropout": 0.1}},
    "dlinear": {"number_of_epochs": 2, "batch_size": 4, "lr": 1e-2,
                "feature": {"kind": "mfcc", "params": {"n_mfcc": 13, "n_mels": 40, "win_ms": 25.0, "hop_ms": 10.0}},
                "network": {"piece_frames": 40, "out_len": 8, "dropout": 0.1, "moving_avg": 5}},
    "vggish_bilstm": {"number_of_epochs": 2, "batch_size": 4, "lr": 1e-3,
                      "feature": {"kind": "log_mel_deltas", "params": {"n_mels": 32}},
                      "network": {"segment_frames": 24, "channels": [4, 8, 8, 8, 8, 8], "pool_after": [1, 2, 4, 6],
                                  "embedding": [32, 32, 16], "lstm_hidden": 16, "segment_steps": 60},
                      "balance_segments": {"segment_s": 0.24, "rules": [{"min_share": 0.75, "take": "ends"},
                                                                         {"min_share": 0.0, "overlap_s": 0.12}]}},
    "amrwc": {"number_of_epochs": 2, "batch_size": 4, "lr_heads": 5e-3, "lr_encoder": 1e-3, "vote_weight": 0,
              "spectrogram": {"n_mels": 16, "win_ms": 25.0, "hop_ms": 10.0},
              "network": {"channels": [4, 8], "blocks_per_stage": 1, "n_steps": 4, "d_model": 16, "ffn_dim": 16}},
    "multilevel": {"number_of_epochs": 2, "batch_size": 4, "lr": 1e-3, "spectrogram": {"n_mels": 16},
                   "mfcc": {"n_mfcc": 8, "n_mels": 20}, "level_weight": 1, "centre_weight": 0.01,
                   "network": {"alexnet_channels": [4, 8, 8, 8, 8], "alexnet_hidden": 16, "lstm_hidden": 8,
                               "dropout": 0.0}},
}
#: Optimizer steps the over-fitting check allows (default 150): a linear probe on a frozen random
#: encoder moves its logits apart slowly at the shared learning rate, but its steps cost microseconds;
#: so do the linear maps over time (NLinear, DLinear).
OVERFIT_STEPS = {"ssl_probe": 600, "nlinear": 400, "dlinear": 400}
FAMILIES = family_names()
NEURAL = [name for name in FAMILIES if get_family(name).trainer == "brain"]


def test_every_registered_family_has_a_config_and_tiny_settings():
    assert {"w2v2_mtl", "tim_net", "sta_crnn", "egemaps_svm"} <= set(FAMILIES)
    for name in FAMILIES:
        assert (CONF / f"{name}.yaml").is_file(), name
        assert name in TINY, f"add tiny settings for family {name} to this test"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """16 utterances of 4 speakers (tones whose pitch tells the emotion), a fold and a tiny encoder."""
    root = tmp_path_factory.mktemp("families")
    paths = write_tiny_corpus(root, 16, seconds=lambda i: 0.6 + 0.1 * (i % 4), waveform=noisy_tones(220, 180),
                              splits={"train": range(0, 8), "valid": range(8, 12), "test": range(12, 16)})
    return {**paths, "root": root, "encoder": build_tiny_w2v2(root / "tiny_w2v2")}


def hparams_for(name: str, corpus: dict, out: Path, **extra) -> dict:
    overrides = {"data_dir": str(corpus["data"]), "fold_dir": str(corpus["fold"]), "output_folder": str(out),
                 "lang_dir": str(corpus["lang"]), "seed": 3, "feature_cache": str(corpus["root"] / "dump"),
                 **TINY[name], **extra}
    if "encoder_source" in read_config_values(str(CONF / f"{name}.yaml")):  # a wav2vec 2.0 family: the tiny one
        overrides.update(encoder_source=str(corpus["encoder"]))
    if name == "w2v2_mtl":
        overrides.update(num_workers=0, ckpt_interval_minutes=0)
    return load_hparams(str(CONF / f"{name}.yaml"), overrides)


def tiny_model(name: str, corpus: dict, tmp_path: Path, n_tokens: int = 0) -> tuple[SERModel, list[FeatureKind | None]]:
    """The family's tiny model and the feature kind of each of its inputs (None: the waveform itself)."""
    hparams = hparams_for(name, corpus, tmp_path)
    family = get_family(name)
    specs = [None if feature["kind"] == "waveform" else feature_from_dict(feature) for feature in family.inputs(hparams)]
    dims = [() if spec is None else spec.frame_shape for spec in specs]
    torch.manual_seed(0)
    return build_model(family, hparams, len(CLASSES), n_tokens, dims), specs


def batch_of(utterances: list[list[torch.Tensor]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Padded batches and relative lengths, one each per input, of utterances given as their inputs."""
    batches, relative = [], []
    for inputs in zip(*utterances):
        lengths = torch.tensor([x.shape[0] for x in inputs])
        batch = torch.zeros(len(inputs), int(lengths.max()), *inputs[0].shape[1:])
        for row, x in enumerate(inputs):
            batch[row, :x.shape[0]] = x
        batches.append(batch)
        relative.append(lengths.double() / lengths.max())
    return batches, relative


def utterance_inputs(specs: list[FeatureKind | None], seconds: list[float], seed: int = 0) -> list[list[torch.Tensor]]:
    """Each utterance's inputs (one per spec) from random waveforms of these durations."""
    generator = torch.Generator().manual_seed(seed)
    waves = [0.3 * torch.randn(int(16000 * s), generator=generator) for s in seconds]
    return [[w if spec is None else spec.compute(w, 16000).float() for spec in specs] for w in waves]


# ----------------------------------------------------------------------------- network contract


@pytest.mark.parametrize("name", NEURAL)
def test_output_shapes_and_padding(name, corpus, tmp_path):
    model, specs = tiny_model(name, corpus, tmp_path, n_tokens=7)
    model.eval()
    inputs = utterance_inputs(specs, [1.1, 0.7, 0.9])
    batch, lengths = batch_of(inputs)
    with torch.no_grad():
        out = model(batch, lengths)
        assert out.emo_logits.shape == (3, len(CLASSES))
        assert out.phn_log_probs.shape[:1] == (3,) and out.phn_log_probs.shape[-1] == 7
        assert out.frame_lens.shape == (3,) and 1 <= int(out.frame_lens.min()) <= int(out.frame_lens.max()) <= out.phn_log_probs.shape[1]
        if get_family(name).padding_invariant:  # the family's claim, in eval mode
            for row, x in enumerate(inputs):
                alone = model([one.unsqueeze(0) for one in x], [torch.ones(1) for _ in x])
                torch.testing.assert_close(alone.emo_logits[0], out.emo_logits[row], atol=2e-4, rtol=1e-4)
                n = int(alone.frame_lens[0])
                assert n == int(out.frame_lens[row])
                torch.testing.assert_close(alone.phn_log_probs[0, :n], out.phn_log_probs[row, :n], atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NEURAL)
def test_overfits_a_few_utterances(name, corpus, tmp_path):
    model, specs = tiny_model(name, corpus, tmp_path)
    inputs = utterance_inputs(specs, [0.8, 0.6, 0.9, 0.7], seed=1)
    batch, lengths = batch_of(inputs)
    targets = torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    first = None
    for _ in range(OVERFIT_STEPS.get(name, 150)):
        model.train()
        loss, _, _ = mtl_loss(model(batch, lengths), targets, None, None, lam=0.0)
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if float(loss.detach()) < 0.05:
            break
    last = float(loss.detach())
    assert last < 0.1 < first, (name, first, last)


def test_families_without_frame_outputs_refuse_the_ctc_head(corpus, tmp_path):
    with pytest.raises(UsageError, match="mtl_lambda"):  # the floor's config has no such option
        hparams_for("egemaps_svm", corpus, tmp_path / "x", mtl_lambda=0.1)
    hparams = dict(hparams_for("egemaps_svm", corpus, tmp_path / "x"), mtl_lambda=0.1)  # forced past the config
    with pytest.raises(TrainError, match="no CTC head option"):
        train_fold(hparams, RUN_OPTS)


# ----------------------------------------------------------------------------- a real fold, end to end


def git_head() -> str | None:
    """The commit of the checkout these tests (and the serkit they import) live in."""
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(serkit.__file__).parent, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def assert_export_reproduces(export: Path, rows: list[dict], wav_dir: Path) -> None:
    """The export scores the fold's test files as the fold's test_predictions.tsv ``rows`` say (with a CTC
    head, its decoded tokens too)."""
    recognizer = EmotionRecognizer.from_export(export)
    predictions = recognizer.predict_files([wav_dir / f"{row['utt']}.wav" for row in rows], batch_size=3)
    for row, prediction in zip(rows, predictions):
        expected = np.array([float(row[f"p_{c}"]) for c in CLASSES])
        np.testing.assert_allclose([prediction.probs[c] for c in CLASSES], expected, atol=2e-6)
        assert prediction.label == row["hyp"]
        if "hyp_tokens" in row:
            assert " ".join(prediction.emotion_phonemes) == row["hyp_tokens"]


@pytest.mark.parametrize("name", FAMILIES)
def test_training_run_writes_the_fold_files_and_its_export_reproduces_the_test_predictions(name, corpus, tmp_path):
    out = tmp_path / "exp" / "fold01"
    scores = train_fold(hparams_for(name, corpus, out), RUN_OPTS)
    assert 0 <= scores["UA"] <= 1 and expdir.is_done(out)
    config = expdir.read_model_config(out)
    assert config["family"] == name and config["classes"] == CLASSES
    rows = read_rows(out / expdir.PREDICTIONS_FILE)
    assert [row["utt"] for row in rows] == (corpus["fold"] / "test").read_text().split()
    assert expdir.read_history(out / expdir.HISTORY_FILE)[-1]["valid_UA"] is not None
    best = expdir.select_checkpoint(expdir.list_checkpoints(out), "best")
    assert best.valid_ua is not None
    assert expdir.FILE_SIZES_KEY in best.meta  # saved by the safe checkpointer (serkit.training.checkpoints), every family
    model_from_config(config)  # the plain-data config rebuilds the network
    (run,) = expdir.read_provenance(out)["runs"]  # every family, the closed-form floor too, records its run
    assert run["family"] == name and run["device"] == "cpu" and run["processes"] == 1
    assert run["precision"]["train"] in {"fp32", "bf16", "fp64"} and run["precision"]["train_reason"]
    assert {"python", "torch", "speechbrain", "numpy", "scikit-learn", "opensmile", "cpu"} <= set(run["environment"])
    assert torch.__version__.startswith(run["environment"]["torch"])  # the torch that trained, not a guess
    assert run["git"]["commit"] == git_head() and isinstance(run["git"]["dirty"], bool)
    assert run["command"] is None  # train_fold called from Python: no command line to record

    assert_export_reproduces(export_model(out, tmp_path / "export"), rows, corpus["wav"])
    with pytest.raises(TrainError, match="already trained"):
        train_fold(hparams_for(name, corpus, out), RUN_OPTS)


@pytest.mark.parametrize("name", [n for n in NEURAL if "mtl_lambda" in get_family(n).options])
def test_ctc_head_on_any_frame_family(name, corpus, tmp_path):
    """mtl_lambda > 0 trains the shared emotion-phoneme CTC head over the family's frame features."""
    out = tmp_path / "fold01"
    scores = train_fold(hparams_for(name, corpus, out, mtl_lambda=0.5, lang_dir=str(corpus["lang"]),
                                    number_of_epochs=1), RUN_OPTS)
    assert scores["PER"] is not None
    config = json.loads((out / expdir.MODEL_CONFIG_FILE).read_text())
    assert config["n_tokens"] == 25 and config["options"]["mtl_lambda"] == 0.5
    header = (out / expdir.PREDICTIONS_FILE).read_text().splitlines()[0].split("\t")
    assert header[-2:] == ["ref_tokens", "hyp_tokens"]
    record = expdir.read_history(out / expdir.HISTORY_FILE)[0]
    assert record["valid_PR"] > 0 and record["valid_PER"] is not None
    export = export_model(out, tmp_path / "export")
    assert (export / "tokens.txt").read_text().split()[::2] == (corpus["lang"] / "tokens.txt").read_text().split()[::2]
    assert_export_reproduces(export, read_rows(out / expdir.PREDICTIONS_FILE), corpus["wav"])


# ----------------------------------------------------------------------------- experiment names


def test_experiment_names_carry_only_the_options_a_family_has(tmp_path):
    recipe_conf = tmp_path / "conf"
    recipe_conf.mkdir()
    experiments = plan(["w2v2_mtl", "tim_net", "egemaps_svm"], [], "4class", 1, str(CONF), str(recipe_conf))
    assert [e.tag for e in experiments] == ["w2v2_mtl_4class_lambda0.1_seed1", "tim_net_4class_seed1",
                                            "egemaps_svm_4class_seed1"]
    assert [e.ctc_targets for e in experiments] == ["emophone", None, None]
    ablation = plan(["w2v2_mtl", "tim_net", "egemaps_svm"], ["0", "0.1"], "4class", 1, str(CONF), str(recipe_conf))
    assert [e.tag for e in ablation] == ["w2v2_mtl_4class_lambda0_seed1", "w2v2_mtl_4class_lambda0.1_seed1",
                                         "tim_net_4class_lambda0_seed1", "tim_net_4class_lambda0.1_seed1",
                                         "egemaps_svm_4class_seed1"]
    assert ablation[3].args == ("--mtl_lambda", "0.1") and ablation[4].args == ()


def test_ctc_target_kinds_are_one_more_row_each(tmp_path):
    experiments = plan(["w2v2_mtl", "egemaps_svm"], [], "4class", 1, str(CONF), str(tmp_path),
                       ctc_targets=["emophone", "char"])
    assert [(e.tag, e.ctc_targets, e.args) for e in experiments] == [
        ("w2v2_mtl_4class_lambda0.1_seed1", "emophone", ()),
        ("w2v2_mtl_4class_lambda0.1_char_seed1", "char", ("--ctc_targets", "char")),
        ("egemaps_svm_4class_seed1", None, ())]


def test_precision_is_named_and_passed_only_to_trained_networks(tmp_path):
    experiments = plan(["w2v2_mtl", "egemaps_svm"], [], "4class", 1, str(CONF), str(tmp_path), precision="fp32")
    assert [(e.tag, e.args) for e in experiments] == [
        ("w2v2_mtl_4class_lambda0.1_fp32_seed1", ("--precision", "fp32")), ("egemaps_svm_4class_seed1", ())]
    with pytest.raises(PlanError, match="--precision must be one of auto, fp32, bf16, fp16, got 'fp64'"):
        plan(["w2v2_mtl"], [], "4class", 1, str(CONF), str(tmp_path), precision="fp64")


class _OptionsFamily(get_family("tim_net").__class__):
    """TIM-Net with two options of its own, as an ablation's family has."""

    name = "with_options"
    options = ("gender_prior", "centre_weight")


def test_a_grid_runs_every_combination_of_a_familys_own_options_named_by_them(tmp_path, monkeypatch):
    from serkit.model import registry

    monkeypatch.setitem(registry.FAMILIES, "with_options", f"{__name__}:_OptionsFamily")
    (tmp_path / "with_options.yaml").write_text("model: with_options\ngender_prior: False\ncentre_weight: 0\n")
    (tmp_path / "tim_net.yaml").write_text((CONF / "tim_net.yaml").read_text())
    grid = ["gender_prior=False,True", "centre_weight=0,0.01", "other_option=1,2"]
    experiments = plan(["with_options", "tim_net"], [], "4class", 1, str(tmp_path), str(tmp_path / "none"), grid=grid)
    assert [(e.tag, e.args) for e in experiments] == [
        ("with_options_4class_gender_priorFalse_centre_weight0_seed1", ("--gender_prior", "False", "--centre_weight", "0")),
        ("with_options_4class_gender_priorFalse_centre_weight0.01_seed1",
         ("--gender_prior", "False", "--centre_weight", "0.01")),
        ("with_options_4class_gender_priorTrue_centre_weight0_seed1", ("--gender_prior", "True", "--centre_weight", "0")),
        ("with_options_4class_gender_priorTrue_centre_weight0.01_seed1",
         ("--gender_prior", "True", "--centre_weight", "0.01")),
        ("tim_net_4class_seed1", ())]  # TIM-Net has none of these options
    # without a grid the config's values name the experiment, so a switched run never takes its folds
    assert [e.tag for e in plan(["with_options"], [], "4class", 1, str(tmp_path), str(tmp_path / "none"))] == [
        "with_options_4class_gender_priorFalse_centre_weight0_seed1"]
    for bad in (["gender_prior"], ["gender_prior=True", "gender_prior=False"], ["mtl_lambda=0,1"]):
        with pytest.raises(PlanError, match="--grid"):
            plan(["with_options"], [], "4class", 1, str(tmp_path), str(tmp_path / "none"), grid=bad)
