"""Poisoned, truncated and long recordings at inference time (serkit.data.audio, serkit.serving.inference, serkit-infer).

Bad files (NaN or infinite samples, all zeros, a WAV cut short behind an intact header) are
per-file errors naming the file while the good files are still scored, and ``--json`` stays valid
JSON. Long files are streamed and scored in windows whose posteriors combine by duration.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile
import torch
from test_export_infer import CLASSES, make_model, model_config, signal, write_fold

from serkit.data.audio import AudioError, audio_problem, check_samples, read_audio, stream_audio, wav_truncation
from serkit.bin import infer as infer_cli
from serkit.serving.export import export_model
from serkit.serving.inference import EmotionRecognizer
from serkit.model import build_tiny_w2v2

SR = 16000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    net = make_model(build_tiny_w2v2(root / "tiny_w2v2"), seed=1)
    write_fold(root / "exp" / "fold01", [(net, 0.6)])
    return {"net": net, "export": export_model(root / "exp" / "fold01", root / "export")}


def write_float_wav(path, samples, rate=SR):
    soundfile.write(str(path), np.asarray(samples, dtype=np.float32), rate, subtype="FLOAT")
    return path


@pytest.fixture
def bad_files(tmp_path) -> dict:
    """One file of each kind of poisoned audio, plus the problem each must be named for."""
    nan = signal(SR, 1.0, seed=1)
    nan[5000] = np.nan
    inf = signal(SR, 1.0, seed=2)
    inf[100] = np.inf
    truncated = tmp_path / "truncated.wav"
    write_float_wav(truncated, signal(SR, 1.0, seed=3))
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) * 6 // 10])  # header intact, 40 % of the samples gone
    return {
        write_float_wav(tmp_path / "nan.wav", nan): "NaN or infinite",
        write_float_wav(tmp_path / "inf.wav", inf): "NaN or infinite",
        write_float_wav(tmp_path / "zeros.wav", np.zeros(SR)): "all samples are zero",
        truncated: "truncated",
    }


def test_audio_problem_names_each_kind_of_bad_file(bad_files, tmp_path):
    good = write_float_wav(tmp_path / "good.wav", signal(SR, 1.0))
    assert audio_problem(good) is None and wav_truncation(good) is None
    for path, problem in bad_files.items():
        found = audio_problem(path)
        assert found and (problem in found or (problem == "truncated" and "header announces" in found)), (path, found)
    assert "the first at sample 5000" in audio_problem(tmp_path / "nan.wav")
    assert "header announces 16000 frames but the file holds only 95" in wav_truncation(tmp_path / "truncated.wav")
    assert check_samples(np.array([0.0, 1.0], dtype=np.float32)) is None
    assert check_samples(np.array([[0.0, np.inf]], dtype=np.float32)) == \
        "1 NaN or infinite sample value(s), the first at sample 0"


def test_reading_refuses_truncated_and_non_finite_audio(bad_files, tmp_path):
    with pytest.raises(AudioError, match=r"truncated\.wav: truncated: the header announces"):
        read_audio(tmp_path / "truncated.wav")
    with pytest.raises(AudioError, match=r"nan\.wav: 1 NaN or infinite"):
        read_audio(tmp_path / "nan.wav")
    with pytest.raises(AudioError, match=r"nan\.wav: 1 NaN or infinite.*0\.31 s into the file"):
        list(stream_audio(tmp_path / "nan.wav", block_seconds=0.1))


def test_infer_cli_scores_good_files_names_bad_ones_and_json_stays_valid(model, bad_files, tmp_path, capsys):
    good = [write_float_wav(tmp_path / "a.wav", signal(SR, 0.8, seed=5)),
            write_float_wav(tmp_path / "b.wav", signal(SR, 0.6, seed=6))]
    inputs = [str(good[0]), *map(str, bad_files), str(good[1])]
    assert infer_cli.main([str(model["export"]), *inputs, "--json", "--batch-size", "2"]) == 1
    out, err = capsys.readouterr()

    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    records = [json.loads(line, parse_constant=no_constants) for line in out.splitlines()]
    assert [r["path"] for r in records] == [str(p) for p in good]
    assert all(math.isfinite(p) for r in records for p in r["probs"].values())
    for path, problem in bad_files.items():
        line = next(line for line in err.splitlines() if path.name in line)
        assert "error" in line and (problem in line or "truncated" in line), line
    assert "4 of 6 input(s) failed" in err


def test_api_refuses_silence_and_nan_waveforms(model):
    recognizer = EmotionRecognizer(model["net"], model_config(model["net"]))
    with pytest.raises(AudioError, match="all samples are zero"):
        recognizer.predict_waveform(np.zeros(SR, dtype=np.float32), SR)
    poisoned = signal(SR, 1.0)
    poisoned[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        recognizer.predict_waveform(poisoned, SR)


def test_long_file_is_scored_in_windows_with_a_duration_weighted_mean(model, tmp_path, monkeypatch):
    """3.3 s with 1 s windows every 0.5 s: windows at 0, 0.5, ... 2.0 s and a 0.8 s tail from 2.5 s.
    The file's posterior is the length-weighted mean of the windows scored on their own, and the
    model never sees more than one window."""
    samples = signal(SR, 3.3, seed=7)
    path = write_float_wav(tmp_path / "long.wav", samples)
    recognizer = EmotionRecognizer(model["net"], model_config(model["net"]), window_s=1.0, hop_s=0.5)
    seen = []
    forward = recognizer._forward
    monkeypatch.setattr(recognizer, "_forward", lambda waves: (seen.extend(w.shape[0] for w in waves), forward(waves))[1])
    prediction = recognizer.predict_file(path)
    assert max(seen) == SR  # one window at a time
    assert [(w.start, w.end) for w in prediction.windows] == [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5),
                                                              (2.0, 3.0), (2.5, 3.3)]
    alone = [recognizer.predict_batch([torch.from_numpy(samples[int(w.start * SR):int(round(w.end * SR))])])[0]
             for w in prediction.windows]
    weights = np.array([w.end - w.start for w in prediction.windows])
    expected = sum(wt * np.array([p.probs[c] for c in CLASSES]) for wt, p in zip(weights, alone)) / weights.sum()
    np.testing.assert_allclose([prediction.probs[c] for c in CLASSES], expected, atol=1e-6)
    assert prediction.label == CLASSES[int(np.argmax(expected))]
    for window, single in zip(prediction.windows, alone):
        np.testing.assert_allclose([window.probs[c] for c in CLASSES], [single.probs[c] for c in CLASSES], atol=1e-6)
    assert len({w.label for w in prediction.windows}) > 1  # a timeline that says something
    in_memory = recognizer.predict_waveform(samples, SR)
    np.testing.assert_allclose([in_memory.probs[c] for c in CLASSES], expected, atol=1e-6)
    assert in_memory.emotion_phonemes == prediction.emotion_phonemes and prediction.emotion_phonemes


def test_short_files_are_scored_whole_as_before(model, tmp_path):
    path = write_float_wav(tmp_path / "short.wav", signal(SR, 1.2, seed=4))
    recognizer = EmotionRecognizer(model["net"], model_config(model["net"]))
    assert recognizer.window == 8 * SR and recognizer.hop == 8 * SR  # the family's default
    prediction = recognizer.predict_file(path)
    whole = recognizer.predict_batch([read_audio(path)[0]])[0]
    assert prediction.probs == whole.probs and [(w.start, w.end) for w in prediction.windows] == [(0.0, 1.2)]


def test_streaming_resampler_equals_resampling_the_whole_file(tmp_path):
    for rate in (8000, 22050, 44100):
        path = write_float_wav(tmp_path / f"r{rate}.wav", signal(rate, 2.3, seed=rate), rate)
        whole, _ = read_audio(path, SR)
        pieces = list(stream_audio(path, SR, block_seconds=0.3))
        assert max(p.shape[0] for p in pieces) < 0.3 * SR + 400  # a block plus the resampler's context
        torch.testing.assert_close(torch.cat(pieces), whole, atol=1e-6, rtol=0)


def test_infer_cli_timeline_text_and_json(model, tmp_path, capsys):
    path = write_float_wav(tmp_path / "long.wav", signal(SR, 2.5, seed=8))
    args = [str(model["export"]), str(path), "--window", "1", "--hop", "1"]
    assert infer_cli.main(args + ["--timeline"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[1] for line in lines[1:]] == ["[0.00-1.00]", "[1.00-2.00]", "[2.00-2.50]"]
    assert infer_cli.main(args + ["--timeline", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [(w["start"], w["end"]) for w in record["windows"]] == [(0.0, 1.0), (1.0, 2.0), (2.0, 2.5)]
    assert record["label"] == lines[0].split("  ")[1]
    assert infer_cli.main(args[:2] + ["--hop", "9"]) == 2  # a hop longer than the window
