"""Tests of the feature layer (serkit.features): shapes and frame counts, deltas, MFCC independence of
batch neighbours, the spec's plain-data round trip, and CMVN statistics against numpy."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from serkit.features import FeatureError, FeatureStats, feature_from_dict, log_mel_deltas, make_feature, mfcc

SR = 16000


def tone(n_samples: int, freq: float = 440.0, seed: int = 0) -> torch.Tensor:
    """A sine with a little noise: a waveform with energy in every band (no log of 0)."""
    t = torch.arange(n_samples, dtype=torch.float32) / SR
    noise = torch.randn(n_samples, generator=torch.Generator().manual_seed(seed))
    return 0.5 * torch.sin(2 * torch.pi * freq * t) + 0.01 * noise


@pytest.mark.parametrize("n_samples", [1, 159, 160, 161, 16000, 16385])
def test_frame_counts_match_n_frames(n_samples):
    for spec in (make_feature("log_mel_deltas", params={"n_mels": 40}), make_feature("mfcc", params={"n_mfcc": 13}),
                 make_feature("waveform")):
        feats = spec.compute(tone(n_samples), SR)
        assert feats.shape == (spec.n_frames(n_samples), *spec.frame_shape)
    # 10 ms hop at 16 kHz = 160 samples; centred frames: 1 + n // 160
    assert make_feature("mfcc").n_frames(n_samples) == 1 + n_samples // 160


def test_log_mel_deltas_shapes_and_batch():
    wave = torch.stack([tone(8000, 300.0), tone(8000, 1200.0)])
    batch = log_mel_deltas(wave, SR, n_mels=32, win_ms=25, hop_ms=10)
    assert batch.shape == (2, 51, 3, 32)
    single = log_mel_deltas(wave[1], SR, n_mels=32, win_ms=25, hop_ms=10)
    torch.testing.assert_close(batch[1], single)
    # channel 0 is the log-Mel itself: the 1200 Hz tone has more energy in a higher band than the 300 Hz one
    assert batch[0, 25, 0].argmax() < batch[1, 25, 0].argmax()


def test_deltas_of_a_constant_spectrum_are_zero():
    """White noise stays stationary but not exactly; a constant DC-free periodic signal whose period
    divides the hop gives identical frames in the interior, so both deltas are 0 there."""
    n = 16000
    t = torch.arange(n, dtype=torch.float32)
    wave = torch.sin(2 * torch.pi * t / 80)  # period 80 samples: every 160-sample hop sees the same window
    feats = log_mel_deltas(wave, SR, n_mels=24, win_ms=25, hop_ms=10)
    bands = feats[:, 0].mean(dim=0) > -5  # bands with energy: the others sit at log(1e-6) = -13.8
    assert bands.sum() >= 2
    interior = feats[8:-8][:, :, bands]  # edge frames see the zero padding, and deltas spread it 4 frames
    assert interior[:, 0].std(dim=0).max() < 1e-3  # the log-Mel frames really are constant
    assert interior[:, 1].abs().max() < 1e-3
    assert interior[:, 2].abs().max() < 1e-3
    # and at the edges (zero padding of the centred frames) the first delta is not 0: deltas are live
    assert feats[0, 1].abs().max() > 0.1


def test_first_delta_is_the_slope_of_a_growing_tone():
    """A periodic tone whose amplitude grows as exp(k t) has log-Mel power rising by 2 k hop per frame
    in every band: the first delta is that slope, the second delta 0."""
    k, n = 3.0, 16000
    t = torch.arange(n, dtype=torch.float64)
    wave = (torch.exp(k * t / SR) * torch.sin(2 * torch.pi * t / 80)).float()
    feats = log_mel_deltas(wave, SR, n_mels=24, win_ms=25, hop_ms=10)[10:-10]
    slope = 2 * k * 0.010
    bands = feats[:, 0].mean(dim=0) > -5  # bands with energy, not at the log floor
    assert bands.sum() >= 2
    torch.testing.assert_close(feats[:, 1][:, bands], torch.full_like(feats[:, 1][:, bands], slope), atol=2e-3, rtol=0)
    assert feats[:, 2][:, bands].abs().max() < 2e-3


def test_mfcc_rows_are_independent_of_batch_neighbours():
    quiet, loud = 0.001 * tone(8000, seed=1), tone(8000, 700.0, seed=2)
    batch = mfcc(torch.stack([quiet, loud]), SR, n_mfcc=20)
    assert batch.shape == (2, 51, 20)
    torch.testing.assert_close(batch[0], mfcc(quiet, SR, n_mfcc=20))


def test_spec_round_trip_and_errors():
    spec = make_feature("mfcc", sample_rate=16000, params={"n_mfcc": 40, "hop_ms": 20})
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["params"] == {"n_mfcc": 40, "n_mels": 128, "win_ms": 25.0, "hop_ms": 20}
    again = feature_from_dict(data)
    assert again == spec
    wave = tone(4000)
    torch.testing.assert_close(again.compute(wave, SR), spec.compute(wave, SR))
    with pytest.raises(FeatureError, match="unknown feature kind"):
        make_feature("spectrogram")
    with pytest.raises(FeatureError, match="no setting"):
        make_feature("mfcc", params={"n_mel": 40})
    with pytest.raises(FeatureError, match="lower n_mfcc"):
        make_feature("mfcc", params={"n_mfcc": 40, "n_mels": 32})
    with pytest.raises(FeatureError, match="resample"):
        spec.compute(wave, 22050)
    with pytest.raises(FeatureError, match="non-empty"):
        spec.compute(torch.zeros(0), SR)


def test_stats_equal_numpy_on_concatenated_frames():
    rng = np.random.default_rng(0)
    utts = [rng.normal(loc=3.0, scale=2.0, size=(n, 3, 5)).astype(np.float32) for n in (7, 1, 30, 12)]
    stats = FeatureStats()
    for utt in utts:
        stats.accumulate(torch.from_numpy(utt))
    frames = np.concatenate(utts).astype(np.float64)
    assert stats.count == frames.shape[0] == 50
    np.testing.assert_allclose(stats.mean.numpy(), frames.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.std.numpy(), frames.std(axis=0), rtol=1e-10)
    normed = stats.normalise(torch.from_numpy(np.concatenate(utts))).double().numpy()
    np.testing.assert_allclose(normed.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(normed.std(axis=0), 1.0, atol=1e-6)


def test_stats_round_trip_and_padded_batches():
    stats = FeatureStats()
    stats.accumulate(torch.randn(20, 4) * 3 + 1)
    again = FeatureStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert again.count == 20
    torch.testing.assert_close(again.mean, stats.mean)
    torch.testing.assert_close(again.std, stats.std)
    batch = torch.randn(2, 6, 4)
    torch.testing.assert_close(again.normalise(batch)[1], stats.normalise(batch[1]))
    # accumulation continues from a loaded state as if it never stopped
    extra = torch.randn(5, 4)
    stats.accumulate(extra)
    again.accumulate(extra)
    torch.testing.assert_close(again.std, stats.std)


def test_stats_errors():
    with pytest.raises(FeatureError, match="training set"):
        FeatureStats().normalise(torch.zeros(3, 2))
    stats = FeatureStats()
    stats.accumulate(torch.zeros(3, 2))
    with pytest.raises(FeatureError, match="frame shape"):
        stats.accumulate(torch.zeros(3, 5))
    with pytest.raises(FeatureError, match="count, mean and std"):
        FeatureStats.from_dict({"mean": [0.0]})
    # a dimension constant in training does not blow up on new data
    assert torch.isfinite(stats.normalise(torch.ones(2, 2))).all()
