"""Spectral feature kinds: log-Mel with deltas (``log_mel_deltas``) and MFCC (``mfcc``).

Framing convention (one for every spectral feature): centred frames with zero padding of half an FFT
at both ends, ``n_frames = 1 + n_samples // hop``, Hann window, FFT size the next power of two at or
above the window. Any non-empty waveform gives at least one frame. The Mel filter bank uses the
Slaney Mel scale with Slaney area normalisation -- librosa's defaults, which the feature code
released with TIM-Net (Ye et al. 2023) used; one convention for both features keeps them comparable.
"""
from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import torch
import torchaudio
from torch import Tensor

from serkit.features.base import FeatureError, FeatureKind, check_waveform, register

LOG_FLOOR = 1e-6  # added to Mel power before the log: silence (digital zeros) stays finite


def _samples(ms: float, sample_rate: int) -> int:
    return max(1, int(round(ms * sample_rate / 1000.0)))


def _fft_size(win_length: int) -> int:
    return 1 << (win_length - 1).bit_length()


def frame_count(n_samples: int, sample_rate: int, hop_ms: float) -> int:
    """Frames the centred framing gives for ``n_samples`` (see the module docstring)."""
    return 1 + int(n_samples) // _samples(hop_ms, sample_rate)


def _mel_settings(sample_rate: int, n_mels: int, win_ms: float, hop_ms: float) -> dict[str, Any]:
    """torchaudio Mel-spectrogram arguments for the framing convention of the module docstring."""
    win_length = _samples(win_ms, sample_rate)
    return dict(n_fft=_fft_size(win_length), win_length=win_length, hop_length=_samples(hop_ms, sample_rate),
                n_mels=n_mels, center=True, pad_mode="constant", norm="slaney", mel_scale="slaney")


@lru_cache(maxsize=16)
def _mel_spectrogram(sample_rate: int, n_mels: int, win_ms: float, hop_ms: float) -> torchaudio.transforms.MelSpectrogram:
    """The Mel power-spectrogram transform for these settings (built once: its filter bank is reused)."""
    return torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, power=2.0,
                                                **_mel_settings(sample_rate, n_mels, win_ms, hop_ms))


@lru_cache(maxsize=16)
def _mfcc_transform(sample_rate: int, n_mfcc: int, n_mels: int, win_ms: float, hop_ms: float) -> torchaudio.transforms.MFCC:
    """The MFCC transform: Mel power in dB (top 80 dB kept, as librosa's power_to_db) -> orthonormal DCT-II."""
    return torchaudio.transforms.MFCC(sample_rate=sample_rate, n_mfcc=n_mfcc, dct_type=2, norm="ortho", log_mels=False,
                                      melkwargs=_mel_settings(sample_rate, n_mels, win_ms, hop_ms))


def log_mel_deltas(waveform: Tensor, sample_rate: int, n_mels: int = 64, win_ms: float = 25.0,
                   hop_ms: float = 10.0, delta_window: int = 5) -> Tensor:
    """Log-Mel spectrogram with its first and second deltas: [T] -> [frames, 3, n_mels] ([B, T] -> [B, frames, 3, n_mels]).

    Channel 0 is ``log(mel power + 1e-6)``, channels 1 and 2 the first and second time derivatives
    (regression over ``delta_window`` frames, edges replicated -- Kaldi's ``add-deltas`` recipe), the
    "3-D log-Mel" of STA-CRNN. A [B, T] batch must hold equal-length signals (no padding inside).
    """
    waveform = check_waveform(waveform)
    mel = _mel_spectrogram(int(sample_rate), int(n_mels), float(win_ms), float(hop_ms))(waveform)  # [..., M, F]
    log_mel = torch.log(mel + LOG_FLOOR)
    delta = torchaudio.functional.compute_deltas(log_mel, win_length=delta_window)
    delta2 = torchaudio.functional.compute_deltas(delta, win_length=delta_window)
    return torch.stack([log_mel, delta, delta2], dim=-3).movedim(-1, -3)  # [..., frames, 3, M]


def mfcc(waveform: Tensor, sample_rate: int, n_mfcc: int = 39, n_mels: int = 128, win_ms: float = 25.0,
         hop_ms: float = 10.0) -> Tensor:
    """MFCCs: [T] -> [frames, n_mfcc] ([B, T] -> [B, frames, n_mfcc]).

    Mel power in dB with the floor 80 dB below the utterance's peak (librosa's ``power_to_db``), then
    an orthonormal DCT-II. The floor depends on the whole utterance, so each row of a batch is
    computed on its own: a loud neighbour must not change a quiet utterance's features.
    """
    waveform = check_waveform(waveform)
    transform = _mfcc_transform(int(sample_rate), int(n_mfcc), int(n_mels), float(win_ms), float(hop_ms))
    if waveform.dim() == 2:
        return torch.stack([transform(row).transpose(0, 1) for row in waveform])
    return transform(waveform).transpose(0, 1)


def _settings(function) -> dict[str, Any]:
    """The keyword settings of a feature function with their defaults (one source for both)."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


class _Framed(FeatureKind):
    """A kind computed on centred frames every ``hop_ms`` (see the module docstring)."""

    def n_frames(self, n_samples: int) -> int:
        return frame_count(n_samples, self.sample_rate, self.params["hop_ms"])


@register
class LogMelDeltas(_Framed):
    """``log_mel_deltas``: [frames, 3, n_mels], the log-Mel spectrogram and its two deltas (:func:`log_mel_deltas`)."""

    kind = "log_mel_deltas"
    defaults = _settings(log_mel_deltas)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (3, int(self.params["n_mels"]))

    def _compute(self, waveform: Tensor) -> Tensor:
        return log_mel_deltas(waveform, self.sample_rate, **self.params)


@register
class MFCC(_Framed):
    """``mfcc``: [frames, n_mfcc] (:func:`mfcc`)."""

    kind = "mfcc"
    defaults = _settings(mfcc)

    def check(self) -> None:
        if not 1 <= int(self.params["n_mfcc"]) <= int(self.params["n_mels"]):
            raise FeatureError(f"mfcc: n_mfcc {self.params['n_mfcc']} must lie in 1..n_mels ({self.params['n_mels']}); "
                               "lower n_mfcc or raise n_mels")

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (int(self.params["n_mfcc"]),)

    def _compute(self, waveform: Tensor) -> Tensor:
        return mfcc(waveform, self.sample_rate, **self.params)
