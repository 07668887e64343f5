"""The switches for recipes that generalise across speakers (docs/models.md, "Generalising across
speakers"): early stopping (``patience``), averaging the best checkpoints (``average_nbest``),
per-speaker feature normalisation (``normalisation: speaker``) and training augmentation
(``augment``). Real training runs of a tiny TIM-Net on a tiny synthetic corpus."""
from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import pytest
import speechbrain as sb
import torch
import yaml
from tiny_corpus import noisy_tones, write_tiny_corpus

import serkit.targets.emotion
import serkit.training.train
from serkit.bin.train import load_hparams
from serkit.training.expdir import read_history
from serkit.scoring.metrics import classification_scores as real_classification_scores
from serkit.training.train import SERBrain, TrainError, average_nbest_setting, early_stop_patience, improvement_state, train_fold

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
        patch.setattr(serkit.targets.emotion, "classification_scores", classification_scores)
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


@pytest.mark.parametrize("setting, name", [(early_stop_patience, "patience"), (average_nbest_setting, "average_nbest")])
def test_patience_and_average_nbest_take_a_positive_count_or_null(setting, name):
    assert setting({}) is None and setting({name: None}) is None and setting({name: 3}) == 3
    for bad in (0, -2, 1.5, "2", True):
        with pytest.raises(TrainError, match=f"{name} must be a positive number of .* or null.*{bad!r}"):
            setting({name: bad})


# ----------------------------------------------------------------------------- per-speaker normalisation


def fold_datasets(corpus: dict, feature: dict) -> dict:
    from serkit.data.dataio import load_fold_data
    from serkit.features import feature_from_dict
    from serkit.targets import TargetSet

    data = load_fold_data(corpus["data"], corpus["fold"], TargetSet.from_config({"data_dir": corpus["data"]}),
                          features=[feature_from_dict(feature)], cache_dir=corpus["root"] / "dump")
    return {"train": data.train, "valid": data.valid, "test": data.test}


@pytest.mark.parametrize("feature", [TINY_TIM_NET["feature"], {"kind": "log_mel_deltas", "params": {"n_mels": 16}},
                                     {"kind": "egemaps"}], ids=["mfcc", "log_mel_deltas", "egemaps"])
def test_speaker_normalised_features_have_zero_mean_unit_variance_per_speaker(corpus, feature):
    from serkit.features.speaker_norm import normalise_per_speaker

    datasets = fold_datasets(corpus, feature)
    raw = {split: [d.inputs(i) for i in range(len(d))] for split, d in datasets.items()}
    normalise_per_speaker(datasets, corpus["data"])
    for split, dataset in datasets.items():
        speakers = sorted({u.utt_id.split("-")[0] for u in dataset.utterances})
        assert len(speakers) == {"train": 4, "valid": 1, "test": 1}[split]
        for speaker in speakers:
            rows = [i for i, u in enumerate(dataset.utterances) if u.utt_id.startswith(speaker + "-")]
            frames = torch.cat([dataset.inputs(i) for i in rows]).double()
            assert torch.allclose(frames.mean(0), torch.zeros(()).double(), atol=1e-5)
            varying = torch.cat([raw[split][i] for i in rows]).double().std(0) > 1e-6
            assert torch.allclose(frames.std(0, unbiased=False)[varying], torch.ones(()).double(), atol=1e-4)
    # the level of a speaker is gone: two speakers' raw c0 means differ, normalised ones do not
    assert not torch.allclose(raw["train"][0][:, 0].mean(), raw["train"][4][:, 0].mean(), atol=0.1) \
        if feature["kind"] == "mfcc" else True


def test_speaker_normalisation_needs_a_feature_it_can_normalise():
    from serkit.features.speaker_norm import NormalisationError, check_normalisation

    assert check_normalisation(None, "mfcc") == "global"
    assert check_normalisation("speaker", "egemaps") == "speaker"
    with pytest.raises(NormalisationError, match="waveform"):
        check_normalisation("speaker", "waveform")
    with pytest.raises(NormalisationError, match="one of"):
        check_normalisation("utterance", "mfcc")


@pytest.fixture(scope="module")
def speaker_run(corpus, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("spknorm") / "fold01"
    run_fold(overrides(corpus, out, normalisation="speaker", number_of_epochs=6, lr=0.01))
    return {"out": out}


def test_training_with_speaker_normalisation_learns_and_is_recorded(speaker_run):
    history = read_history(speaker_run["out"] / "history.jsonl")
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    config = json.loads((speaker_run["out"] / "model_config.json").read_text())
    assert config["normalisation"] == "speaker"


def test_an_export_with_the_speakers_statistics_reproduces_the_test_predictions(speaker_run, corpus, tmp_path):
    """Inference normalises with the statistics of the test speaker's files, as training did."""
    from serkit.serving.export import export_model
    from serkit.serving.inference import EmotionRecognizer

    export = export_model(speaker_run["out"], tmp_path / "export")
    assert json.loads((export / "config.json").read_text())["normalisation"] == "speaker"
    recognizer = EmotionRecognizer.from_export(export)
    rows = [line.split("\t") for line in predictions(speaker_run["out"]).splitlines()]
    header, rows = rows[0], rows[1:]
    files = [corpus["wav"] / f"{row[0]}.wav" for row in rows]
    recognizer.speaker_stats = recognizer.speaker_statistics(files)
    for row, prediction in zip(rows, recognizer.predict_files(files)):
        expected = [float(row[header.index(f"p_{c}")]) for c in recognizer.classes]
        got = [prediction.probs[c] for c in recognizer.classes]
        assert expected == pytest.approx(got, abs=1e-4)


def test_the_floor_with_speaker_normalisation_fits_and_its_export_needs_the_speaker(corpus, tmp_path, capsys):
    """eGeMAPS + SVM on per-speaker-normalised functionals; serkit-infer --utt2spk gives the fold's posteriors,
    and a lone file without the speaker's statistics is refused rather than normalised to nothing."""
    from serkit.bin import infer
    from serkit.serving.export import export_model

    out = tmp_path / "floor" / "fold01"
    hparams = {"data_dir": str(corpus["data"]), "fold_dir": str(corpus["fold"]), "output_folder": str(out),
               "feature_cache": str(corpus["root"] / "dump"), "normalisation": "speaker", "classifier": "logreg"}
    train_fold(load_hparams(str(ROOT / "conf" / "egemaps_svm.yaml"), hparams), RUN_OPTS)
    export = export_model(out, tmp_path / "export")
    rows = [line.split("\t") for line in predictions(out).splitlines()]
    header, rows = rows[0], rows[1:]
    scp = tmp_path / "wav.scp"
    scp.write_text("".join(f"{row[0]} {corpus['wav'] / (row[0] + '.wav')}\n" for row in rows))
    capsys.readouterr()
    assert infer.main([str(export), "--scp", str(scp), "--json", "--utt2spk", str(corpus["data"] / "utt2spk")]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for row, result in zip(rows, results):
        assert result["id"] == row[0]
        assert [result["probs"][c] for c in result["probs"]] == pytest.approx(
            [float(row[header.index(f"p_{c}")]) for c in result["probs"]], abs=1e-4)
    assert infer.main([str(export), str(corpus["wav"] / (rows[0][0] + ".wav"))]) == 2
    assert "per-speaker normalisation" in capsys.readouterr().err


# ----------------------------------------------------------------------------- experiment names


def test_switches_away_from_their_defaults_name_the_experiment(tmp_path):
    from serkit.training.experiments import plan

    recipe_conf = tmp_path / "conf"
    recipe_conf.mkdir()
    (recipe_conf / "tim_net.yaml").write_text("normalisation: speaker\npatience: 20\n")
    (recipe_conf / "egemaps_svm.yaml").write_text("normalisation: speaker\npatience: 20\n")
    experiments = plan(["tim_net", "egemaps_svm", "sta_crnn"], [], "4class", 1, str(ROOT / "conf"), str(recipe_conf))
    assert [e.tag for e in experiments] == ["tim_net_4class_spknorm_patience20_seed1", "egemaps_svm_4class_spknorm_seed1",
                                            "sta_crnn_4class_seed1"]


# ----------------------------------------------------------------------------- averaging the best checkpoints

AVERAGE_UAS = [0.3, 0.6, 0.5, 0.4]  # the three best: epochs 2, 3, 4


def test_average_state_dicts_means_floats_and_keeps_the_best_integers():
    from serkit.training.averaging import average_state_dicts

    states = [{"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(7)}, {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(9)}]
    averaged = average_state_dicts(states)
    assert torch.equal(averaged["w"], torch.tensor([2.0, 4.0])) and int(averaged["n"]) == 7


@pytest.fixture(scope="module")
def averaged_run(corpus, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("average") / "fold01"
    with _capture() as log:
        run_fold(overrides(corpus, out, average_nbest=3, number_of_epochs=4), AVERAGE_UAS)
    return {"out": out, "log": log.getvalue()}


def test_the_averaged_model_is_the_mean_of_the_best_checkpoints(averaged_run):
    from serkit.training.checkpoints import torch_load_safe
    from serkit.training.expdir import list_checkpoints, select_checkpoint

    checkpoints = list_checkpoints(averaged_run["out"])
    by_epoch = {c.meta["epoch"]: c for c in checkpoints if not c.meta.get("averaged_epochs")}
    assert {2, 3, 4} <= set(by_epoch)  # the three best kept (and the newest)
    averaged = select_checkpoint(checkpoints, "best")
    assert averaged.meta["averaged_epochs"] == [2, 3, 4]
    states = [torch_load_safe(by_epoch[e].path / "model.ckpt") for e in (2, 3, 4)]
    mean = torch_load_safe(averaged.path / "model.ckpt")
    batch_norm = [k for k in mean if k.endswith("running_mean")]
    assert batch_norm  # TIM-Net's batch norm statistics are averaged too
    for key, value in mean.items():
        if torch.is_floating_point(value):
            assert torch.allclose(value, sum(s[key] for s in states) / 3, atol=1e-6), key
        else:
            assert torch.equal(value, states[0][key]), key
    assert not torch.allclose(mean[batch_norm[0]], states[0][batch_norm[0]])


def test_the_test_fold_is_scored_with_the_average_and_history_says_which_epochs(averaged_run, corpus, tmp_path):
    from serkit.serving.export import export_model
    from serkit.serving.inference import EmotionRecognizer

    out = averaged_run["out"]
    assert read_history(out / "history.jsonl")[-1]["averaged_epochs"] == [2, 3, 4]
    assert "averaged the 3 best checkpoints by validation UA: epochs [2, 3, 4]" in averaged_run["log"]
    assert (out / "train.done").exists()
    recognizer = EmotionRecognizer.from_export(export_model(out, tmp_path / "export"))
    rows = [line.split("\t") for line in predictions(out).splitlines()]
    header, rows = rows[0], rows[1:]
    for row, prediction in zip(rows, recognizer.predict_files([corpus["wav"] / f"{row[0]}.wav" for row in rows])):
        assert [prediction.probs[c] for c in recognizer.classes] == pytest.approx(
            [float(row[header.index(f"p_{c}")]) for c in recognizer.classes], abs=1e-4)


# ----------------------------------------------------------------------------- augmentation

AUGMENT = {"speed": [90, 110], "noise": {"snr_low": 10, "snr_high": 20, "colour": "pink"},
           "time_mask": {"drop_length_low": 2, "drop_length_high": 6}, "freq_mask": {"drop_length_low": 1, "drop_length_high": 3}}


def test_augmentation_changes_training_inputs_only_and_repeats_with_the_seed(corpus):
    from serkit.features.augment import make_augmenter
    from serkit.data.dataio import load_fold_data
    from serkit.features import feature_from_dict
    from serkit.targets import TargetSet

    data = load_fold_data(corpus["data"], corpus["fold"], TargetSet.from_config({"data_dir": corpus["data"]}),
                          features=[feature_from_dict(TINY_TIM_NET["feature"])], cache_dir=corpus["root"] / "dump")
    clean = {split: [getattr(data, split)[i]["sig"] for i in range(4)] for split in ("train", "valid", "test")}
    data.train.augmenter = make_augmenter({"augment": AUGMENT}, "mfcc")
    data.train.set_epoch(3, seed=5)
    first = [data.train[i]["sig"] for i in range(4)]
    assert all(a.shape != c.shape or not torch.equal(a, c) for a, c in zip(first, clean["train"]))
    assert any(a.shape[0] != c.shape[0] for a, c in zip(first, clean["train"]))  # speed perturbation
    assert all(torch.equal(a, b) for a, b in zip(first, [data.train[i]["sig"] for i in range(4)]))
    data.train.set_epoch(4, seed=5)
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, [data.train[i]["sig"] for i in range(4)]))
    for split in ("valid", "test"):
        assert all(torch.equal(getattr(data, split)[i]["sig"], c) for i, c in enumerate(clean[split]))
    # the global generator (dropout) draws the same with or without augmentation
    torch.manual_seed(0)
    data.train[0]
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))


def test_masks_fill_stretches_with_the_utterances_mean():
    from serkit.features.augment import Augmenter

    feats = torch.arange(200, dtype=torch.float32).view(40, 5) + 1
    torch.manual_seed(1)
    masked = Augmenter({"time_mask": {"drop_count_low": 1, "drop_count_high": 1, "drop_length_low": 4,
                                      "drop_length_high": 5}}, 16000, "mfcc").mask(feats)
    changed = (masked != feats).all(dim=1)
    assert int(changed.sum()) == 4  # one stretch of 4 frames
    assert torch.equal(masked[changed], feats.mean(0).expand(4, 5))
    with pytest.raises(Exception, match="spectral features"):
        Augmenter({"time_mask": {}}, 16000, "waveform")


@pytest.fixture(scope="module")
def augmented_run(corpus, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("augment") / "fold01"
    run_fold(overrides(corpus, out, augment=AUGMENT, number_of_epochs=6, lr=0.01))
    return {"out": out}


def test_training_with_augmentation_learns(augmented_run):
    history = read_history(augmented_run["out"] / "history.jsonl")
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]


def test_an_augmented_run_resumes_exactly(corpus, augmented_run, tmp_path):
    resumed = tmp_path / "fold01"
    hparams = overrides(corpus, resumed, augment=AUGMENT, number_of_epochs=6, lr=0.01)
    with pytest.raises(Interrupted):
        run_fold(hparams, stop_at_epoch=3)
    assert run_fold(hparams) == [3, 4, 5, 6]
    assert predictions(resumed) == predictions(augmented_run["out"])
