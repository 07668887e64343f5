"""Tests of stage 3 (serkit.training.train, serkit.bin.train): real training runs of a tiny wav2vec 2.0 on a
tiny synthetic corpus, with interruption and resumption, model selection and the output files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch
import yaml
from tiny_corpus import CLASSES, TOKENS, noisy_tones, write_tiny_corpus

import serkit.training.precision
import serkit.targets.emotion
import serkit.training.train
from serkit.bin import train as train_cli
from serkit.bin.train import load_hparams, merged_overrides
from serkit.scoring.metrics import classification_scores as real_classification_scores
from serkit.training.expdir import read_history, read_provenance, write_history
from serkit.model import build_tiny_w2v2, load_encoder
from serkit.model.build import model_from_config
from serkit.training.train import SERBrain, TrainError, precision_run_opts, train_fold

CONF = Path(__file__).resolve().parents[1] / "conf" / "w2v2_mtl.yaml"
RUN_OPTS = {"device": "cpu", "noprogressbar": True}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """16 utterances (4 speakers x 4 emotions, tones + noise, 0.5-1.0 s), data/lang/fold dirs and a
    tiny encoder. Fold: train = spk0+spk1, valid = spk2, test = spk3. ``spk0-u00`` has no phones."""
    root = tmp_path_factory.mktemp("corpus")
    paths = write_tiny_corpus(root, 16, seconds=lambda i: 0.5 + 0.125 * (i % 5), waveform=noisy_tones(200, 150),
                              splits={"train": range(0, 8), "valid": range(8, 12), "test": range(12, 16)},
                              phoneless={0})
    encoder = build_tiny_w2v2(root / "tiny_w2v2")
    return {"root": root, "data": paths["data"], "lang": paths["lang"], "fold": paths["fold"], "encoder": encoder}


def fold_overrides(corpus: dict[str, Path], out: Path, **extra) -> dict:
    overrides = {"data_dir": str(corpus["data"]), "fold_dir": str(corpus["fold"]), "lang_dir": str(corpus["lang"]),
                 "output_folder": str(out), "encoder_source": str(corpus["encoder"]), "batch_size": 4,
                 "num_workers": 0, "ckpt_interval_minutes": 0, "number_of_epochs": 3}
    overrides.update(extra)
    return overrides


class Interrupted(Exception):
    """Stands in for a killed job."""


def run_fold(overrides: dict, run_opts: dict = RUN_OPTS, stop_at_epoch: int | None = None) -> list[int]:
    """Train a fold as a fresh process would (config loaded anew); returns the epochs it trained.

    With ``stop_at_epoch`` the run is interrupted when that epoch's training starts.
    """
    trained: list[int] = []
    original = SERBrain.on_stage_start

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            if epoch == stop_at_epoch:
                raise Interrupted(f"killed at the start of epoch {epoch}")
            trained.append(epoch)
        original(self, stage, epoch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SERBrain, "on_stage_start", on_stage_start)
        train_fold(load_hparams(str(CONF), overrides), run_opts)
    return trained


def checkpoints(out: Path) -> list[tuple[Path, dict]]:
    """(directory, meta) of every checkpoint in out/save, oldest first."""
    found = [(d, yaml.safe_load((d / "CKPT.yaml").read_text())) for d in (out / "save").glob("CKPT+*")]
    return sorted(found, key=lambda item: item[1]["unixtime"])


def read_predictions(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


VALID_UA_BY_EPOCH = [0.2, 0.9, 0.4]


@pytest.fixture(scope="module")
def mtl_run(corpus, tmp_path_factory) -> dict:
    """A 3-epoch lambda=0.1 run, killed when epoch 2 starts, then started again to the end.

    A random tiny model scores the same chance-level UA every epoch, which would hide which
    checkpoint gets selected. So the validation UA of epochs 1-3 is set to VALID_UA_BY_EPOCH (WA
    and all else are computed for real, and the test set's UA is untouched): the best epoch (2) is
    then neither the first nor the newest.
    """
    out = tmp_path_factory.mktemp("exp") / "fold01"
    overrides = fold_overrides(corpus, out, lr_heads=1e-3, lr_encoder=1e-4)
    dictated = list(VALID_UA_BY_EPOCH)

    def classification_scores(refs, hyps, n_classes):
        scores = real_classification_scores(refs, hyps, n_classes)
        if dictated:  # the three validation passes come first; the test pass is left alone
            scores["UA"] = dictated.pop(0)
        return scores

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serkit.targets.emotion, "classification_scores", classification_scores)
        with pytest.raises(Interrupted):
            run_fold(overrides, stop_at_epoch=2)
        state = {"history": read_history(out / "history.jsonl"), "done": (out / "train.done").exists(),
                 "checkpoint_epochs": [meta["epoch"] for _, meta in checkpoints(out)]}
        resumed_epochs = run_fold(overrides)
    assert not dictated
    return {"out": out, "after_interrupt": state, "resumed_epochs": resumed_epochs}


# ----------------------------------------------------------------------------- the lambda = 0.1 run


def test_interrupted_run_resumes_from_its_last_checkpoint(mtl_run):
    before = mtl_run["after_interrupt"]
    assert [r["epoch"] for r in before["history"]] == [1] and before["checkpoint_epochs"] == [1]
    assert not before["done"]
    assert mtl_run["resumed_epochs"] == [2, 3]  # continued, not restarted from scratch
    runs = read_provenance(mtl_run["out"])["runs"]  # the resumed run is recorded beside the first
    assert len(runs) == 2 and runs[0]["started"] <= runs[1]["started"]
    history = read_history(mtl_run["out"] / "history.jsonl")
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[0] == before["history"][0]
    assert (mtl_run["out"] / "train.done").exists()


def test_history_has_the_documented_fields(mtl_run):
    for record in read_history(mtl_run["out"] / "history.jsonl"):
        assert set(record) == {"epoch", "train_loss", "valid_loss", "valid_WA", "valid_UA", "valid_PER",
                               "lr_encoder", "lr_heads", "train_ER", "train_PR", "valid_ER", "valid_PR"}
        assert record["valid_loss"] == pytest.approx(record["valid_ER"] + 0.1 * record["valid_PR"], rel=1e-5)
        assert 0 <= record["valid_WA"] <= 1 and 0 <= record["valid_UA"] <= 1 and record["valid_PER"] >= 0
        assert (record["lr_encoder"], record["lr_heads"]) == pytest.approx((1e-4, 1e-3))
        assert np.isfinite(record["train_loss"]) and np.isfinite(record["valid_loss"])


def test_checkpoints_keep_the_newest_and_the_best_by_valid_ua(mtl_run):
    out = mtl_run["out"]
    kept = checkpoints(out)
    history = read_history(out / "history.jsonl")
    assert [r["valid_UA"] for r in history] == VALID_UA_BY_EPOCH
    assert [meta["epoch"] for _, meta in kept] == [2, 3]  # the best (0.9) and the newest, to resume from
    for directory, meta in kept:
        assert (directory / "model.ckpt").is_file()
        assert {"UA", "WA", "PER", "loss", "epoch"} <= set(meta)
        assert meta["UA"] == history[meta["epoch"] - 1]["valid_UA"]


def test_test_predictions_come_from_the_best_valid_checkpoint(mtl_run, corpus):
    """The network rebuilt from model_config.json and the best-by-valid-UA checkpoint (epoch 2)
    reproduces test_predictions.tsv; the newest checkpoint (epoch 3) does not."""
    out = mtl_run["out"]
    config = json.loads((out / "model_config.json").read_text())
    assert config["classes"] == CLASSES and config["tokens"] == TOKENS and config["n_tokens"] == 25
    assert config["family"] == "w2v2_mtl" and config["options"] == {"mtl_lambda": 0.1}
    assert config["ctc_targets"] == "emophone" and config["sample_rate"] == 16000
    _, rows = read_predictions(out / "test_predictions.tsv")
    written = np.array([[float(p) for p in row[3:7]] for row in rows])
    wavs = dict(line.split(" ", 1) for line in (corpus["data"] / "wav.scp").read_text().splitlines())

    def test_probabilities(checkpoint_dir: Path) -> np.ndarray:
        model = model_from_config(config)
        model.load_state_dict(torch.load(checkpoint_dir / "model.ckpt", weights_only=True))
        model.eval()
        probs = []
        for row in rows:
            signal, _ = sf.read(wavs[row[0]], dtype="float32")
            with torch.no_grad():
                logits = model(torch.from_numpy(signal)[None], torch.ones(1)).emo_logits
            probs.append(torch.softmax(logits, dim=-1)[0].numpy())
        return np.array(probs)

    (best_dir, best_meta), (newest_dir, _) = checkpoints(out)
    assert best_meta["UA"] == max(VALID_UA_BY_EPOCH)
    assert np.abs(test_probabilities(best_dir) - written).max() < 1e-4
    assert np.abs(test_probabilities(newest_dir) - written).max() > 1e-3


def test_test_predictions_list_every_test_utterance(mtl_run, corpus):
    header, rows = read_predictions(mtl_run["out"] / "test_predictions.tsv")
    assert header == ["utt", "ref", "hyp", "p_ang", "p_hap", "p_sad", "p_neu", "ref_tokens", "hyp_tokens"]
    assert [row[0] for row in rows] == (corpus["fold"] / "test").read_text().split()
    utt2emo = dict(line.split() for line in (corpus["data"] / "utt2emo").read_text().splitlines())
    utt2phn = dict(line.partition(" ")[::2] for line in (corpus["data"] / "utt2phn").read_text().splitlines())
    for row in rows:
        probs = [float(p) for p in row[3:7]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert row[1] == utt2emo[row[0]]
        assert row[2] == CLASSES[int(np.argmax(probs))]
        assert row[7] == utt2phn[row[0]]
        assert all(token in TOKENS[1:] for token in row[8].split())


def test_layer_weights_are_a_distribution_over_all_layers(mtl_run):
    weights = json.loads((mtl_run["out"] / "layer_weights.json").read_text())["weights"]
    assert len(weights) == 4  # the tiny encoder: 3 Transformer layers + the CNN projection
    assert sum(weights) == pytest.approx(1.0, abs=1e-5) and min(weights) > 0


def test_encoder_is_fine_tuned_but_the_cnn_stays_frozen(mtl_run, corpus):
    pretrained = load_encoder(str(corpus["encoder"])).state_dict()
    trained = torch.load(checkpoints(mtl_run["out"])[-1][0] / "model.ckpt", weights_only=True)
    cnn = [k for k in pretrained if k.startswith("feature_extractor.")]
    transformer = [k for k in pretrained if k.startswith("encoder.layers.")]
    assert cnn and transformer
    assert all(torch.equal(trained[f"network.encoder.{k}"], pretrained[k]) for k in cnn)
    assert any(not torch.equal(trained[f"network.encoder.{k}"], pretrained[k]) for k in transformer)


def test_a_finished_fold_is_not_trained_again(mtl_run, corpus):
    with pytest.raises(TrainError, match="train.done"):
        train_fold(load_hparams(str(CONF), fold_overrides(corpus, mtl_run["out"])), RUN_OPTS)


# ----------------------------------------------------------------------------- other runs


def test_run_interrupted_mid_epoch_loses_no_finished_batch(corpus, tmp_path):
    """With a checkpoint after every batch, a run killed in its third batch redoes only that batch."""
    out = tmp_path / "fold01"
    overrides = fold_overrides(corpus, out, number_of_epochs=1, batch_size=2)
    run_opts = dict(RUN_OPTS, ckpt_interval_steps=1)
    seen: list[list[str]] = []
    original = SERBrain.fit_batch

    def fit_batch(self, batch):
        if len(seen) == 2 and not resumed:
            raise Interrupted("killed in the third batch")
        seen.append(list(batch.id))
        return original(self, batch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SERBrain, "fit_batch", fit_batch)
        resumed = False
        with pytest.raises(Interrupted):
            train_fold(load_hparams(str(CONF), overrides), run_opts)
        resumed = True
        train_fold(load_hparams(str(CONF), overrides), run_opts)
    assert len(seen) == 4  # 2 batches before the kill, the 2 remaining after it
    trained = sorted(utt for batch in seen for utt in batch)
    assert trained == (corpus["fold"] / "train").read_text().split()  # each utterance once
    assert [r["epoch"] for r in read_history(out / "history.jsonl")] == [1]


def test_single_task_run_through_the_command_line(corpus, tmp_path):
    """lambda = 0 via an overrides file, without utt2phn, encoder frozen throughout, gradient
    accumulation over 2 batches; also checks the command line's files and the train.done skip."""
    data = tmp_path / "data"
    shutil.copytree(corpus["data"], data)
    (data / "utt2phn").unlink()
    out = tmp_path / "exp"
    override_file = tmp_path / "single_task.yaml"
    override_file.write_text("mtl_lambda: 0\nfreeze_encoder_steps: 1000\nnumber_of_epochs: 2\nbatch_size: 8\n")
    args = [str(CONF), "--overrides", str(override_file), "--data_dir", str(data), "--fold_dir", str(corpus["fold"]),
            "--lang_dir", str(corpus["lang"]), "--output_folder", str(out), "--encoder_source", str(corpus["encoder"]),
            "--number_of_epochs", "1", "--batch_size", "4", "--num_workers", "0", "--ckpt_interval_minutes", "0",
            "--grad_accumulation_factor", "2", "--device", "cpu", "--noprogressbar"]
    assert train_cli.main(args) == 0

    config = json.loads((out / "model_config.json").read_text())
    assert config["n_tokens"] == 0 and config["options"] == {"mtl_lambda": 0} and config["tokens"] == []
    history = read_history(out / "history.jsonl")
    assert [r["epoch"] for r in history] == [1]  # the command line's 1 epoch beat the file's 2
    assert history[0]["valid_PER"] is None
    header, rows = read_predictions(out / "test_predictions.tsv")
    assert len(rows) == 4 and header[-1] == "p_neu"  # no CTC head: no token columns

    (directory, meta), = checkpoints(out)
    state = torch.load(directory / "model.ckpt", weights_only=True)
    assert not any(key.startswith("ctc_head") for key in state)
    pretrained = load_encoder(str(corpus["encoder"])).state_dict()
    assert all(torch.equal(state[f"network.encoder.{k}"], v) for k, v in pretrained.items())  # frozen all along
    brain_state = yaml.safe_load((directory / "brain.ckpt").read_text())
    assert brain_state["optimizer_step"] == 1  # 2 batches of 4, one step per 2 batches

    assert "epoch 1 |" in (out / "train_log.txt").read_text()
    assert "mtl_lambda: 0" in (out / "hyperparams.yaml").read_text()
    (run,) = read_provenance(out)["runs"]  # the command line's run: command, config, overrides, config as used
    assert run["command"].startswith("python -m serkit.bin.train ") and f"--output_folder {out}" in run["command"]
    assert run["config"] == str(CONF) and run["cwd"] == str(Path.cwd())
    assert run["overrides"]["number_of_epochs"] == 1 and run["overrides"]["freeze_encoder_steps"] == 1000
    assert "mtl_lambda: 0" in run["resolved_config"] and "number_of_epochs: 1" in run["resolved_config"]
    assert run["family"] == "w2v2_mtl" and run["device"] == "cpu" and run["precision"]["train"] in {"fp32", "bf16"}
    assert train_cli.main(args) == 0  # train.done: nothing to do
    assert len(read_provenance(out)["runs"]) == 1  # a finished fold is not a new run
    assert "nothing to do" in (out / "train_log.txt").read_text()


# ----------------------------------------------------------------------------- command line and helpers


def test_command_line_reports_a_missing_path(corpus, tmp_path, capsys):
    args = [str(CONF), "--fold_dir", str(corpus["fold"]), "--lang_dir", str(corpus["lang"]),
            "--output_folder", str(tmp_path / "exp")]
    assert train_cli.main(args) == 1
    assert "'data_dir' has no value; pass --data_dir" in capsys.readouterr().err
    assert train_cli.main(args + ["--data_dir", str(tmp_path / "nowhere")]) == 1
    error = capsys.readouterr().err
    assert "--data_dir" in error and "nowhere: directory not found" in error


def test_command_line_reports_an_unknown_option(corpus, tmp_path, capsys):
    args = [str(CONF), "--data_dir", str(corpus["data"]), "--fold_dir", str(corpus["fold"]),
            "--lang_dir", str(corpus["lang"]), "--output_folder", str(tmp_path / "exp"), "--number_of_epoch", "3"]
    assert train_cli.main(args) == 1
    assert "number_of_epoch" in capsys.readouterr().err


def test_command_line_overrides_win_over_the_overrides_file(tmp_path):
    override_file = tmp_path / "recipe.yaml"
    override_file.write_text("number_of_epochs: 5\nbatch_size: 8\n")
    merged = merged_overrides(str(override_file), {"batch_size": 2, "data_dir": "/d"})
    assert dict(merged) == {"number_of_epochs": 5, "batch_size": 2, "data_dir": "/d"}
    hparams = load_hparams(str(CONF), dict(merged, fold_dir="/f", lang_dir="/l", output_folder="/o"))
    assert hparams["epoch_counter"].limit == 5 and hparams["batch_size"] == 2


def test_precision_is_resolved_for_the_device_and_recorded(monkeypatch):
    monkeypatch.setattr(serkit.training.precision, "cpu_bf16_units", lambda cpuinfo="": "avx512_bf16")
    run_opts, info = precision_run_opts({"precision": "auto", "eval_precision": "fp32"}, {"device": "cpu"})
    assert (run_opts.precision, run_opts.eval_precision) == ("bf16", "fp32")
    assert {"precision", "eval_precision"} <= run_opts.overridden_args  # SpeechBrain must not read "auto"
    assert info["train"] == "bf16" and "avx512_bf16" in info["train_reason"] and info["eval"] == "fp32"
    monkeypatch.setattr(serkit.training.precision, "cpu_bf16_units", lambda cpuinfo="": None)
    assert precision_run_opts({"precision": "auto"}, {"device": "cpu"})[0].precision == "fp32"
    assert precision_run_opts({"precision": "fp16"}, {"device": "cpu"})[0].precision == "fp32"  # no CPU fp16
    # the command line wins over the config
    assert precision_run_opts({"precision": "auto"}, {"device": "cpu", "precision": "bf16"})[0].precision == "bf16"
    with pytest.raises(TrainError, match="precision must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        precision_run_opts({"precision": "fp8"}, {"device": "cpu"})


def test_reading_losses_back_every_few_steps_changes_no_result(corpus, tmp_path):
    """sync_every 3 (what a GPU does with 50: losses stay on the device between reads) logs the same
    history and predicts the same as reading every step."""
    runs = {}
    for sync_every in ("auto", 3):
        out = tmp_path / f"sync{sync_every}"
        run_fold(fold_overrides(corpus, out, number_of_epochs=2, batch_size=2, sync_every=sync_every))
        runs[sync_every] = ((out / "history.jsonl").read_text(), (out / "test_predictions.tsv").read_text())
    assert runs["auto"] == runs[3]
    history = [json.loads(line) for line in runs[3][0].splitlines()]
    assert len(history) == 2 and all(np.isfinite(record["train_loss"]) for record in history)


def test_bf16_training_runs_under_autocast_and_is_recorded(corpus, tmp_path):
    """precision bf16: the heads see bf16 activations in training, fp32 in the (fp32) test pass, and
    model_config.json records what was used."""
    seen = {}

    def record(module, inputs, output):
        seen.setdefault("train" if module.training else "eval", set()).add(output.dtype)

    original = serkit.training.train.build_model

    def build_model(*args, **kwargs):
        model = original(*args, **kwargs)
        model.network.emotion_head.register_forward_hook(record)
        return model

    out = tmp_path / "fold01"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serkit.training.train, "build_model", build_model)
        run_fold(fold_overrides(corpus, out, number_of_epochs=1, precision="bf16", eval_precision="fp32"))
    assert seen == {"train": {torch.bfloat16}, "eval": {torch.float32}}
    precision = json.loads((out / "model_config.json").read_text())["precision"]
    assert precision["train"] == "bf16" and precision["eval"] == "fp32" and precision["device"] == "cpu"
    assert (out / "train.done").is_file()


def test_history_replaces_epochs_that_are_trained_again(tmp_path):
    path = tmp_path / "history.jsonl"
    for epoch in (1, 2, 3):
        write_history(path, {"epoch": epoch, "valid_UA": 0.1 * epoch})
    write_history(path, {"epoch": 2, "valid_UA": 0.9})  # a resumed run repeating epoch 2
    assert read_history(path) == [{"epoch": 1, "valid_UA": 0.1}, {"epoch": 2, "valid_UA": 0.9}]
