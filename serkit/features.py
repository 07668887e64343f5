"""Acoustic features as their own layer: raw waveform, log-Mel with deltas, MFCC, eGeMAPS functionals;
and CMVN statistics.

Model families declare the input they need as a :class:`FeatureSpec` (plain data, so an export can
rebuild the exact front end); the data layer calls :meth:`FeatureSpec.compute` on each utterance at
its true length, so padding added later for batching can never leak into a feature.
:class:`FeatureStats` holds per-dimension mean/std accumulated over a fold's *training* utterances
only (cepstral mean and variance normalisation, CMVN), so nothing about the test speaker shapes the
input of the model that is scored on it.

Framing convention (one for every spectral feature): centred frames with zero padding of half an FFT
at both ends, ``n_frames = 1 + n_samples // hop``, Hann window, FFT size the next power of two at or
above the window. Any non-empty waveform gives at least one frame. The Mel filter bank uses the
Slaney Mel scale with Slaney area normalisation -- librosa's defaults, which the feature code
released with TIM-Net (Ye et al. 2023) used; one convention for both features keeps them comparable.

eGeMAPSv02 functionals (Eyben et al. 2016; openSMILE's own implementation through the ``opensmile``
package) are one 88-dimensional "frame" per utterance: the input of the classical floor family.

``ssl_layers`` are the hidden states of a frozen wav2vec 2.0 encoder, [frames, L, D] in float16
(:mod:`serkit.ssl_layers`): the input of the SSL probe. Their spec names the encoder (``source``) and
a digest of its weights, so the spec's hash, and with it the cache folder, changes with the weights.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torchaudio
from torch import Tensor

from serkit.errors import SerkitError

FEATURE_KINDS = ("waveform", "log_mel_deltas", "mfcc", "egemaps", "ssl_layers")
N_FUNCTIONALS = 88  # eGeMAPSv02
LOG_FLOOR = 1e-6  # added to Mel power before the log: silence (digital zeros) stays finite


class FeatureError(SerkitError):
    """A feature specification or an input waveform that cannot be turned into features."""


# ----------------------------------------------------------------------------- framing
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


def _check_waveform(waveform: Tensor) -> Tensor:
    waveform = torch.as_tensor(waveform)
    if waveform.dim() not in (1, 2) or waveform.shape[-1] == 0:
        raise FeatureError(f"expected a non-empty waveform of shape [T] or [B, T], got {tuple(waveform.shape)}; "
                           "read audio with serkit.audio.read_audio")
    return waveform.to(torch.float32)


def log_mel_deltas(waveform: Tensor, sample_rate: int, n_mels: int = 64, win_ms: float = 25.0,
                   hop_ms: float = 10.0, delta_window: int = 5) -> Tensor:
    """Log-Mel spectrogram with its first and second deltas: [T] -> [frames, 3, n_mels] ([B, T] -> [B, frames, 3, n_mels]).

    Channel 0 is ``log(mel power + 1e-6)``, channels 1 and 2 the first and second time derivatives
    (regression over ``delta_window`` frames, edges replicated -- Kaldi's ``add-deltas`` recipe), the
    "3-D log-Mel" of STA-CRNN. A [B, T] batch must hold equal-length signals (no padding inside).
    """
    waveform = _check_waveform(waveform)
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
    waveform = _check_waveform(waveform)
    transform = _mfcc_transform(int(sample_rate), int(n_mfcc), int(n_mels), float(win_ms), float(hop_ms))
    if waveform.dim() == 2:
        return torch.stack([transform(row).transpose(0, 1) for row in waveform])
    return transform(waveform).transpose(0, 1)


# ----------------------------------------------------------------------------- eGeMAPS
@lru_cache(maxsize=1)
def _smile():
    """One openSMILE extractor per process (building it parses the config, ~0.1 s)."""
    import opensmile  # imported here: only the eGeMAPS floor needs it

    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.Functionals)


def functional_names() -> list[str]:
    """The 88 eGeMAPSv02 functional names in column order (e.g. ``F0semitoneFrom27.5Hz_sma3nz_amean``)."""
    return list(_smile().feature_names)


def egemaps_functionals(waveform: Tensor, sample_rate: int) -> Tensor:
    """The 88 eGeMAPSv02 functionals of a mono [T] waveform: float64 [1, 88].

    openSMILE fills every functional with NaN when the signal is shorter than its analysis windows
    (about 0.1 s); that is an error rather than a row that would poison the standardisation.
    Digital silence is fine: openSMILE returns finite values for it.
    """
    waveform = _check_waveform(waveform)
    if waveform.dim() != 1:
        raise FeatureError(f"eGeMAPS functionals need one mono [T] waveform, got shape {tuple(waveform.shape)}")
    samples = waveform.detach().to(torch.float32).cpu().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Segment too short": reported below
        row = _smile().process_signal(samples, int(sample_rate)).to_numpy(dtype=np.float64)
    if row.shape != (1, N_FUNCTIONALS):
        raise FeatureError(f"openSMILE returned shape {row.shape}, expected (1, {N_FUNCTIONALS})")
    if not np.isfinite(row).all():
        raise FeatureError(f"{int((~np.isfinite(row)).sum())} of {N_FUNCTIONALS} eGeMAPS functionals are not finite "
                           f"for {samples.shape[0] / sample_rate:.3f} s of audio (too short or corrupt); remove the "
                           "utterance from the data directory or fix its recording")
    return torch.from_numpy(row.copy())


# ----------------------------------------------------------------------------- spec
def _settings(function) -> dict[str, Any]:
    """The keyword settings of a feature function with their defaults (one source for both)."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


_DEFAULTS: dict[str, dict[str, Any]] = {"waveform": {}, "log_mel_deltas": _settings(log_mel_deltas),
                                        "mfcc": _settings(mfcc), "egemaps": {},
                                        "ssl_layers": {"source": None, "digest": None}}


@dataclass
class FeatureSpec:
    """Which feature a model consumes, with its parameters: plain data that an export stores.

    ``params`` may leave settings out; they take the defaults of the feature function, and
    :meth:`to_dict` writes every setting so an export never depends on a later change of defaults.
    """

    kind: str = "waveform"
    sample_rate: int = 16000
    params: dict[str, Any] = field(default_factory=dict)
    # ssl_layers: the encoder whose geometry gives frame counts and shapes, looked up once per spec
    # (n_frames runs for every cropped item; its weights are checked where features are computed)
    _geometry: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise FeatureError(f"unknown feature kind {self.kind!r}; choose one of {', '.join(FEATURE_KINDS)}")
        unknown = sorted(set(self.params) - set(_DEFAULTS[self.kind]))
        if unknown:
            raise FeatureError(f"feature {self.kind!r} has no setting(s) {', '.join(unknown)}; "
                               f"known: {', '.join(_DEFAULTS[self.kind]) or 'none'}")
        self.params = {**_DEFAULTS[self.kind], **self.params}
        if self.kind == "mfcc" and not 1 <= int(self.params["n_mfcc"]) <= int(self.params["n_mels"]):
            raise FeatureError(f"mfcc: n_mfcc {self.params['n_mfcc']} must lie in 1..n_mels ({self.params['n_mels']}); "
                               "lower n_mfcc or raise n_mels")
        if self.kind == "ssl_layers":
            self._bind_encoder()

    def _bind_encoder(self) -> None:
        """Load the frozen encoder once per process and pin the spec to its weights (see the module docstring).

        A local folder is named by its absolute path, so the spec means the same from any directory.
        """
        source = self.params["source"]
        if not source:
            raise FeatureError("ssl_layers: params.source must name the frozen encoder (hub id or folder; the "
                               "family sets it from encoder_source)")
        folder = Path(str(source)).expanduser()
        self.params["source"] = str(folder.resolve()) if folder.is_dir() else str(source)
        self.params["digest"] = self._ssl().check_digest(self.params["source"], self.params["digest"])

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one frame: () for a waveform sample, (3, n_mels) or (n_mfcc,)."""
        if self.kind == "log_mel_deltas":
            return (3, int(self.params["n_mels"]))
        if self.kind == "mfcc":
            return (int(self.params["n_mfcc"]),)
        if self.kind == "egemaps":
            return (N_FUNCTIONALS,)
        if self.kind == "ssl_layers":
            return self._ssl().layer_shape(self._geometry_encoder())
        return ()

    def n_frames(self, n_samples: int) -> int:
        """Frames :meth:`compute` returns for a waveform of ``n_samples`` samples."""
        if self.kind == "waveform":
            return int(n_samples)
        if self.kind == "egemaps":
            return 1  # one row of functionals per utterance
        if self.kind == "ssl_layers":
            return self._ssl().n_frames(self._geometry_encoder(), n_samples)
        return frame_count(n_samples, self.sample_rate, self.params["hop_ms"])

    def compute(self, waveform: Tensor, sample_rate: int) -> Tensor:
        """Features of one utterance [T] (or equal-length rows [B, T]): [frames, *frame_shape]."""
        if int(sample_rate) != self.sample_rate:
            raise FeatureError(f"audio at {sample_rate} Hz, but the {self.kind} features are defined at "
                               f"{self.sample_rate} Hz; resample it (serkit.audio.read_audio does)")
        if self.kind == "log_mel_deltas":
            return log_mel_deltas(waveform, self.sample_rate, **self.params)
        if self.kind == "mfcc":
            return mfcc(waveform, self.sample_rate, **self.params)
        if self.kind == "egemaps":
            return egemaps_functionals(waveform, self.sample_rate)
        if self.kind == "ssl_layers":
            return self._ssl().ssl_layers(_check_waveform(waveform), self._encoder())
        return _check_waveform(waveform)

    @staticmethod
    def _ssl():
        """:mod:`serkit.ssl_layers`, imported on use: transformers is only needed for that kind."""
        from serkit import ssl_layers

        return ssl_layers

    def _encoder(self):
        """The spec's encoder; refuses weights changed since the spec was made (they would fill its cache)."""
        self._ssl().check_digest(self.params["source"], self.params["digest"])
        return self._ssl().frozen_encoder(self.params["source"])[0]

    def _geometry_encoder(self):
        if self._geometry is None:
            self._geometry = self._encoder()
        return self._geometry

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "sample_rate": self.sample_rate, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FeatureSpec":
        unknown = sorted(set(data) - {"kind", "sample_rate", "params"})
        if unknown:
            raise FeatureError(f"feature spec has unknown key(s) {', '.join(unknown)}; "
                               "expected kind, sample_rate, params")
        return cls(kind=data.get("kind", "waveform"), sample_rate=int(data.get("sample_rate", 16000)),
                   params=dict(data.get("params", {})))


# ----------------------------------------------------------------------------- CMVN
class FeatureStats:
    """Per-dimension mean and standard deviation over all frames of the utterances it has seen.

    Streaming (Chan et al.'s pairwise update of mean and sum of squared deviations) in float64, so
    a fold's training set is read once, one utterance at a time, without cancellation error. Feed it
    the fold's *training* utterances only. The std is the population std (numpy's default, ddof=0).
    """

    def __init__(self, frame_shape: tuple[int, ...] | None = None) -> None:
        self.count = 0
        self.frame_shape = None if frame_shape is None else tuple(frame_shape)
        self._mean: Tensor | None = None
        self._m2: Tensor | None = None

    def accumulate(self, feats: Tensor) -> None:
        """Add the frames of one utterance, ``feats`` [frames, *frame_shape]."""
        feats = torch.as_tensor(feats).detach().to(torch.float64)
        if feats.dim() < 1 or feats.shape[0] == 0:
            raise FeatureError(f"expected features [frames, ...] with at least one frame, got {tuple(feats.shape)}")
        if self.frame_shape is None:
            self.frame_shape = tuple(feats.shape[1:])
        if tuple(feats.shape[1:]) != self.frame_shape:
            raise FeatureError(f"frame shape {tuple(feats.shape[1:])} differs from the {self.frame_shape} "
                               "accumulated so far; one FeatureStats per feature type")
        n = feats.shape[0]
        mean = feats.mean(dim=0)
        m2 = (feats - mean).pow(2).sum(dim=0)
        if self._mean is None:
            self.count, self._mean, self._m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + m2 + delta.pow(2) * (self.count * n / total)
        self.count = total

    def _require(self) -> None:
        if self._mean is None:
            raise FeatureError("no frames accumulated: compute the statistics over the fold's training set first")

    @property
    def mean(self) -> Tensor:
        self._require()
        return self._mean

    @property
    def std(self) -> Tensor:
        self._require()
        return torch.sqrt(self._m2 / self.count)

    def normalise(self, feats: Tensor, floor: float = 1e-5) -> Tensor:
        """``(feats - mean) / max(std, floor)`` over the trailing frame dimensions; keeps ``feats``' dtype.

        Works on [frames, *frame_shape] and on padded batches [B, frames, *frame_shape]. The floor
        keeps a dimension that was constant in training (std 0) from blowing up on test data.
        """
        feats = torch.as_tensor(feats)
        mean = self.mean.to(feats.dtype)
        std = self.std.clamp_min(floor).to(feats.dtype)
        return (feats - mean) / std

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists), e.g. for a JSON file next to an exported model."""
        self._require()
        return {"count": self.count, "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FeatureStats":
        try:
            mean = torch.tensor(data["mean"], dtype=torch.float64)
            std = torch.tensor(data["std"], dtype=torch.float64)
            count = int(data["count"])
        except (KeyError, TypeError, ValueError) as error:
            raise FeatureError(f"feature statistics need count, mean and std lists ({error}); "
                               "recompute them on the training set") from None
        if mean.shape != std.shape or count < 1:
            raise FeatureError(f"feature statistics are inconsistent (mean {tuple(mean.shape)}, std "
                               f"{tuple(std.shape)}, count {count}); recompute them on the training set")
        stats = cls(tuple(mean.shape))
        stats.count, stats._mean, stats._m2 = count, mean, std.pow(2) * count
        return stats
