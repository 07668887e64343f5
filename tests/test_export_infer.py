"""Stage 5: export a trained fold, load it back safely, and run inference (API and serkit-infer CLI).

A tiny random wav2vec 2.0 stands in for the pretrained encoder. Its heads are scaled up so the
posteriors depend strongly on the input: a near-uniform random model would let wrong inference
code pass the "same result" checks.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from speechbrain.utils.checkpoints import Checkpointer
from tiny_corpus import CLASSES, TOKENS, write_tiny_corpus

from serkit.data.audio import AudioError
from serkit.bin import export_model as export_cli
from serkit.bin import infer as infer_cli
from serkit.serving.export import ExportError, best_fold, export_model, load_export, resolve_fold_dir
from serkit.serving.inference import EmotionRecognizer, Prediction
from serkit.model import SERModel, W2V2Network, build_tiny_w2v2
from serkit.model.build import model_from_config

SR = 16000


# ----------------------------------------------------------------------------- helpers


def make_model(encoder_dir: Path, seed: int) -> SERModel:
    """A 'trained' network: tiny encoder + heads drawn with ``seed`` and sharpened."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SERModel(W2V2Network.from_pretrained(str(encoder_dir), n_emotions=len(CLASSES)), n_tokens=len(TOKENS))
        with torch.no_grad():
            model.network.emotion_head.weight.normal_(0.0, 1.0)
            model.ctc_head.linear.weight.normal_(0.0, 3.0)
            model.network.fusion_weights.normal_(0.0, 1.0)
    return model.eval()


def model_config(model: SERModel) -> dict:
    """model_config.json as stage 3 writes it for W2V2-MTL with lambda 0.1."""
    return {"family": "w2v2_mtl", "network": model.network.config_dict(), "feature": {"kind": "waveform",
            "sample_rate": SR}, "input_dims": None, "n_emotions": len(CLASSES), "n_tokens": len(TOKENS),
            "ctc_targets": "emophone", "options": {"mtl_lambda": 0.1}, "classes": CLASSES, "tokens": TOKENS,
            "sample_rate": SR}


def write_fold(fold_dir: Path, checkpoints: list[tuple[SERModel, float]]) -> None:
    """A fold directory as stage 3 leaves it: model_config.json + SpeechBrain checkpoints with meta."""
    fold_dir.mkdir(parents=True)
    net = checkpoints[0][0]
    (fold_dir / "model_config.json").write_text(json.dumps(model_config(net)), encoding="utf-8")
    holder = make_model_like(net)
    checkpointer = Checkpointer(fold_dir / "save", recoverables={"model": holder})
    for epoch, (model, ua) in enumerate(checkpoints, start=1):
        holder.load_state_dict(model.state_dict())
        checkpointer.save_checkpoint(meta={"UA": ua, "WA": ua + 0.01, "PER": 0.5, "loss": 1.0, "epoch": epoch})


def make_model_like(model: SERModel) -> SERModel:
    return model_from_config(model_config(model))


def signal(sample_rate: int, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """The same band-limited (< 3 kHz, inside the 8 kHz passband) continuous signal, sampled at any rate."""
    rng = np.random.default_rng(seed)
    freqs, phases, amps = rng.uniform(150, 3000, 12), rng.uniform(0, 2 * np.pi, 12), rng.uniform(0.2, 1.0, 12)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t + seed)
    x = envelope * sum(a * np.sin(2 * np.pi * f * t + p) for f, p, a in zip(freqs, phases, amps))
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def probs_array(prediction: Prediction) -> np.ndarray:
    return np.array([prediction.probs[c] for c in CLASSES])


def log_probs(prediction: Prediction) -> np.ndarray:
    """Log posteriors: differences stay visible even where a posterior is close to 0 or 1."""
    return np.log(probs_array(prediction))


class Exploit:
    """Unpickling this runs ``touch MARKER`` (through os.system, as a hostile file would)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_wav(path: Path, seconds: float, seed: int) -> Path:
    soundfile.write(str(path), signal(SR, seconds, seed), SR)
    return path


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """exp/loso/fold01 (best UA 0.6 saved before a worse 0.4 one), fold02 (0.7), and fold01's export."""
    root = tmp_path_factory.mktemp("stage5")
    encoder = build_tiny_w2v2(root / "tiny_w2v2")
    models = {name: make_model(encoder, seed) for name, seed in (("good", 1), ("worse", 2), ("other", 3))}
    exp = root / "exp" / "loso"
    write_fold(exp / "fold01", [(models["good"], 0.6), (models["worse"], 0.4)])
    write_fold(exp / "fold02", [(models["other"], 0.7)])
    export_dir = export_model(exp / "fold01", root / "export")
    return {"root": root, "encoder": encoder, "exp": exp, "export": export_dir, "models": models,
            "recognizer": EmotionRecognizer.from_export(export_dir)}


# ----------------------------------------------------------------------------- export


def test_export_takes_best_validation_checkpoint_not_the_last(setup):
    exported = load_export(setup["export"])
    good, worse = setup["models"]["good"].state_dict(), setup["models"]["worse"].state_dict()
    assert exported.state_dict.keys() == good.keys()
    assert all(torch.equal(exported.state_dict[k], good[k]) for k in good)
    assert not torch.equal(exported.state_dict["network.emotion_head.weight"], worse["network.emotion_head.weight"])
    config = exported.config
    assert config["valid_UA"] == pytest.approx(0.6)
    assert config["epoch"] == 1
    assert Path(config["source_checkpoint"]).parent == setup["exp"] / "fold01" / "save"
    assert {"git_commit", "serkit_version", "family", "network", "options"} <= set(config)
    assert config["family"] == "w2v2_mtl" and "encoder_config" in config["network"]


def test_export_folder_files(setup):
    export_dir = setup["export"]
    assert sorted(p.name for p in export_dir.iterdir()) == ["classes.txt", "config.json", "model.pt", "tokens.txt"]
    assert (export_dir / "classes.txt").read_text().split() == CLASSES
    lines = (export_dir / "tokens.txt").read_text().splitlines()
    assert lines[0] == "<blank> 0" and lines[1] == "S0 1" and lines[-1] == "VS3 24" and len(lines) == 25


def test_export_last_checkpoint_and_by_name(setup, tmp_path):
    export_model(setup["exp"] / "fold01", tmp_path / "last", checkpoint="last")
    worse = setup["models"]["worse"].state_dict()
    assert torch.equal(load_export(tmp_path / "last").state_dict["network.emotion_head.weight"], worse["network.emotion_head.weight"])
    with pytest.raises(ExportError, match="CKPT\\+nope.*not found"):
        export_model(setup["exp"] / "fold01", tmp_path / "x", checkpoint="CKPT+nope")


def test_best_fold_uses_validation_ua_and_skips_untrained_folds(setup, tmp_path, caplog):
    exp = tmp_path / "exp"
    shutil.copytree(setup["exp"], exp)
    untrained = exp / "fold03"
    untrained.mkdir()
    shutil.copy(exp / "fold01" / "model_config.json", untrained)
    assert best_fold(exp) == exp / "fold02"
    assert "fold03" in caplog.text  # the skip is reported, not silent
    with pytest.raises(ExportError, match="3 folds"):
        resolve_fold_dir(exp)
    single = tmp_path / "single"
    shutil.copytree(setup["exp"] / "fold01", single / "fold01")
    assert resolve_fold_dir(single) == single / "fold01"


def test_export_cli(setup, tmp_path, capsys):
    out = tmp_path / "export"
    assert export_cli.main(["--exp", str(setup["exp"]), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert Path(json.loads((out / "config.json").read_text())["source_fold"]).name == "fold02"
    assert export_cli.main(["--exp", str(setup["exp"]), "--fold", "fold09", "--out", str(tmp_path / "x")]) == 1
    assert "fold09" in capsys.readouterr().err


def test_export_is_self_contained(tmp_path, monkeypatch):
    """Delete the experiment and the 'pretrained' encoder: the export alone reproduces the model."""
    encoder = build_tiny_w2v2(tmp_path / "enc", seed=5)
    model = make_model(encoder, seed=7)
    write_fold(tmp_path / "fold01", [(model, 0.5)])
    export_model(tmp_path / "fold01", tmp_path / "export")
    shutil.move(tmp_path / "export", tmp_path / "moved")
    shutil.rmtree(encoder)
    shutil.rmtree(tmp_path / "fold01")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recognizer = EmotionRecognizer.from_export(tmp_path / "moved")
    wav = torch.from_numpy(signal(SR, 0.8, seed=3)).unsqueeze(0)
    with torch.no_grad():
        expected = model(wav, torch.ones(1))
        got = recognizer.model(wav, torch.ones(1))
    torch.testing.assert_close(got.emo_logits, expected.emo_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.phn_log_probs, expected.phn_log_probs, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- safe, strict loading


def test_tampered_model_pt_is_refused_without_running_code(setup, tmp_path):
    bad = tmp_path / "export"
    shutil.copytree(setup["export"], bad)
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    state = dict(torch.load(bad / "model.pt", weights_only=True))
    state["network.emotion_head.weight"] = Payload()
    torch.save(state, bad / "model.pt")
    with pytest.raises(ExportError, match="model.pt.*refused"):
        EmotionRecognizer.from_export(bad)
    assert not marker.exists()
    torch.load(bad / "model.pt", weights_only=False)  # proof the payload is live: unsafe loading runs it
    assert marker.exists()


@pytest.mark.parametrize("damage, message", [
    ("missing_config", "missing config.json"),
    ("truncated_weights", "model.pt: not a readable"),
    ("missing_key", "missing: network.emotion_head.bias"),
    ("bad_json", "config.json: not valid JSON"),
    ("edited_classes", "classes.txt: disagrees"),
])
def test_broken_export_gives_clear_error(setup, tmp_path, damage, message):
    bad = tmp_path / "export"
    shutil.copytree(setup["export"], bad)
    if damage == "missing_config":
        (bad / "config.json").unlink()
    elif damage == "truncated_weights":
        data = (bad / "model.pt").read_bytes()
        (bad / "model.pt").write_bytes(data[: len(data) // 2])
    elif damage == "missing_key":
        state = torch.load(bad / "model.pt", weights_only=True)
        del state["network.emotion_head.bias"]
        torch.save(state, bad / "model.pt")
    elif damage == "bad_json":
        (bad / "config.json").write_text("{ not json")
    elif damage == "edited_classes":
        (bad / "classes.txt").write_text("ang\nhap\nneu\nsad\n")
    with pytest.raises(ExportError, match=message):
        EmotionRecognizer.from_export(bad)


def test_missing_model_dir(tmp_path):
    with pytest.raises(ExportError, match="not found"):
        EmotionRecognizer.from_export(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- inference API


def test_loaded_export_matches_in_memory_model(setup):
    recognizer, model = setup["recognizer"], setup["models"]["good"]
    wav = signal(SR, 1.2, seed=4)
    with torch.no_grad():
        out = model(torch.from_numpy(wav).unsqueeze(0), torch.ones(1))
    prediction = recognizer.predict_waveform(wav, SR)
    expected_probs = torch.softmax(out.emo_logits[0], dim=-1).numpy()
    np.testing.assert_allclose(probs_array(prediction), expected_probs, atol=1e-6)
    assert prediction.label == CLASSES[int(expected_probs.argmax())]
    expected_ids = [i for i in torch.unique_consecutive(out.phn_log_probs[0].argmax(-1)).tolist() if i != 0]
    assert prediction.emotion_phonemes == [TOKENS[i] for i in expected_ids]
    assert math.isclose(sum(prediction.probs.values()), 1.0, abs_tol=1e-5)


def test_other_rates_and_layouts_match_16k_mono(setup):
    recognizer = setup["recognizer"]
    reference = log_probs(recognizer.predict_waveform(signal(SR), SR))
    unrelated = log_probs(recognizer.predict_waveform(signal(SR, seed=9), SR))
    assert np.abs(reference - unrelated).max() > 0.5  # the model does tell different inputs apart
    mono = signal(SR)
    stereo_ct = np.stack([mono + 0.1 * signal(SR, seed=2), mono - 0.1 * signal(SR, seed=2)])  # mean = mono
    int16 = np.round(mono * 32767).astype(np.int16)
    variants = {
        "8 kHz": (signal(8000), 8000),
        "44.1 kHz": (signal(44100), 44100),
        "stereo [C, T]": (stereo_ct, SR),
        "stereo [T, C] tensor": (torch.from_numpy(stereo_ct.T.copy()), SR),
        "int16": (int16, SR),
    }
    for name, (wav, rate) in variants.items():
        got = log_probs(recognizer.predict_waveform(wav, rate))
        # 8 kHz is the loosest case (resampling filter ripple near 3 kHz): measured ~0.03 here
        assert np.abs(got - reference).max() < 0.1, name


def test_resampled_waveform_is_close_to_native(setup):
    recognizer = setup["recognizer"]
    native = torch.from_numpy(signal(SR))
    for rate in (8000, 22050, 44100):
        converted = recognizer.prepare_waveform(signal(rate), rate)
        assert converted.shape == native.shape
        interior = slice(200, -200)  # the sinc filter's edges see zeros beyond the signal
        assert (converted[interior] - native[interior]).abs().max() < 0.02, rate  # amplitude 0.5


def test_batch_equals_one_by_one(setup, tmp_path):
    recognizer = setup["recognizer"]
    paths = [write_wav(tmp_path / f"u{i}.wav", seconds, seed=i) for i, seconds in enumerate([0.4, 1.7, 1.0, 0.9, 0.3])]
    batched = recognizer.predict_files(paths, batch_size=4)
    assert len(batched) == len(paths)
    for path, prediction in zip(paths, batched):
        single = recognizer.predict_file(path)
        np.testing.assert_allclose(probs_array(prediction), probs_array(single), atol=1e-5)
        assert prediction.label == single.label
        assert prediction.emotion_phonemes == single.emotion_phonemes


def test_bad_waveforms_are_clear_errors(setup, tmp_path):
    recognizer = setup["recognizer"]
    with pytest.raises(AudioError, match="channel"):
        recognizer.predict_waveform(np.zeros((200, 300), dtype=np.float32), SR)
    with pytest.raises(AudioError, match="too short"):
        recognizer.predict_waveform(np.zeros(100, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="missing.wav"):
        recognizer.predict_file(tmp_path / "missing.wav")


# ----------------------------------------------------------------------------- serkit-infer


def test_infer_cli_scores_good_files_and_names_bad_ones(setup, tmp_path, capsys):
    good = [write_wav(tmp_path / "a.wav", 0.7, seed=1), write_wav(tmp_path / "b.wav", 1.1, seed=2)]
    broken = tmp_path / "broken.wav"
    broken.write_text("this is not audio")
    missing = tmp_path / "missing.wav"
    args = [str(setup["export"]), str(good[0]), str(broken), str(missing), str(good[1]), "--batch-size", "2"]
    assert infer_cli.main(args) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split("  ")[0] for line in lines] == [str(good[0]), str(good[1])]
    for path, line in zip(good, lines):
        expected = setup["recognizer"].predict_file(path)
        fields = line.split("  ")
        assert fields[1] == expected.label
        assert fields[2] == " ".join(f"{c}={expected.probs[c]:.2f}" for c in CLASSES)
    assert "broken.wav" in err and "missing.wav" in err


def test_infer_cli_json_scp_and_phonemes(setup, tmp_path, capsys):
    a, b = write_wav(tmp_path / "a.wav", 0.8, seed=5), write_wav(tmp_path / "b.wav", 0.6, seed=6)
    scp = tmp_path / "wav.scp"
    scp.write_text(f"spk1-utt1 {a}\nspk1-utt2 {b}\n")
    assert infer_cli.main([str(setup["export"]), str(scp), "--json", "--phonemes"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in records] == ["spk1-utt1", "spk1-utt2"]
    for record, path in zip(records, (a, b)):
        expected = setup["recognizer"].predict_file(path)
        assert record["path"] == str(path) and record["label"] == expected.label
        assert record["probs"] == pytest.approx(expected.probs, abs=1e-6)
        assert record["emotion_phonemes"] == " ".join(expected.emotion_phonemes)


def test_infer_cli_takes_options_anywhere(setup, tmp_path, capsys):
    a, b = write_wav(tmp_path / "a.wav", 0.8, seed=5), write_wav(tmp_path / "b.wav", 0.6, seed=6)
    assert infer_cli.main([str(setup["export"]), "--json", str(a), "--batch-size", "1", str(b)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in records] == [str(a), str(b)]


def test_infer_cli_refuses_a_pickle_in_model_pt_with_exit_code_2(setup, tmp_path, capsys):
    bad = tmp_path / "export"
    shutil.copytree(setup["export"], bad)
    marker = tmp_path / "pwned"
    state = dict(torch.load(bad / "model.pt", weights_only=True))
    state["network.emotion_head.weight"] = Exploit(marker)
    torch.save(state, bad / "model.pt")
    assert infer_cli.main([str(bad), str(write_wav(tmp_path / "a.wav", 0.5, seed=1))]) == 2
    error = capsys.readouterr().err
    assert f"serkit-infer: error: {bad / 'model.pt'}: refused to load: it holds a pickled reference to the " \
           "Python object" in error
    assert "weights_only" not in error and "Traceback" not in error and not marker.exists()


@pytest.mark.parametrize("link", ["classes.txt", "model.pt"])
def test_an_export_with_a_link_out_of_it_is_refused(setup, tmp_path, capsys, link):
    bad = tmp_path / "export"
    shutil.copytree(setup["export"], bad)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(bad / link, outside / link)
    (bad / link).unlink()
    (bad / link).symlink_to(outside / link)
    assert infer_cli.main([str(bad), str(write_wav(tmp_path / "a.wav", 0.5, seed=1))]) == 2
    assert f"{bad / link}: a symbolic link to {outside / link}, outside the export folder" in capsys.readouterr().err
    (bad / link).unlink()
    (bad / link).symlink_to(Path("sub") / link)  # a link that stays inside the folder is fine
    (bad / "sub").mkdir()
    shutil.copy(outside / link, bad / "sub" / link)
    assert EmotionRecognizer.from_export(bad).classes == setup["recognizer"].classes


def test_infer_cli_bad_model_dir(tmp_path, capsys):
    wav = write_wav(tmp_path / "a.wav", 0.5, seed=1)
    assert infer_cli.main([str(tmp_path / "no_model"), str(wav)]) == 2
    assert "no_model" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real stage 3 -> stage 5


def write_mini_corpus(root: Path, encoder: Path) -> dict[str, str]:
    """Data, lang and fold directories (docs/formats.md) for 12 short utterances of 3 speakers
    (train: spk0, valid: spk1, test: spk2), each with its own band-limited :func:`signal`."""
    paths = write_tiny_corpus(root, 12, seconds=lambda i: 0.5 + 0.1 * (i % 3),
                              waveform=lambda i, emo, seconds, rate: signal(rate, seconds, seed=i),
                              splits={"train": range(0, 4), "valid": range(4, 8), "test": range(8, 12)})
    return {"data_dir": str(paths["data"]), "fold_dir": str(paths["fold"]), "lang_dir": str(paths["lang"]),
            "encoder_source": str(encoder)}


def test_export_of_a_real_training_run_reproduces_its_test_predictions(setup, tmp_path):
    """Inference must prepare audio exactly as training did: the exported model, fed the test
    files, gives the posteriors and phoneme strings stage 3 wrote to test_predictions.tsv."""
    from serkit.bin.train import load_hparams
    from serkit.training.train import train_fold

    conf = Path(__file__).resolve().parents[1] / "conf" / "w2v2_mtl.yaml"
    overrides = {**write_mini_corpus(tmp_path / "corpus", setup["encoder"]),
                 "output_folder": str(tmp_path / "exp" / "fold01"), "batch_size": 4, "num_workers": 0,
                 "ckpt_interval_minutes": 0, "number_of_epochs": 2, "lr_heads": 1e-2}
    train_fold(load_hparams(str(conf), overrides), {"device": "cpu", "noprogressbar": True})
    recognizer = EmotionRecognizer.from_export(export_model(tmp_path / "exp", tmp_path / "export"))
    with open(tmp_path / "exp" / "fold01" / "test_predictions.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == 4
    predictions = recognizer.predict_files([tmp_path / "corpus" / "wav" / f"{row['utt']}.wav" for row in rows],
                                           batch_size=3)
    for row, prediction in zip(rows, predictions):
        expected = np.array([float(row[f"p_{c}"]) for c in CLASSES])
        np.testing.assert_allclose(probs_array(prediction), expected, atol=2e-6)  # tsv keeps 6 decimals
        assert prediction.label == row["hyp"]
        assert " ".join(prediction.emotion_phonemes) == row["hyp_tokens"]
