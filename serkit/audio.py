"""Reading audio the way every serkit stage needs it: mono float32 at a fixed sample rate.

Corpora differ (48 kHz RAVDESS, the odd stereo file, int16 or float wavs); models want 16 kHz mono.
One function does the conversion so that data preparation, training and inference agree, and every
failure names the file and says what to do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

from serkit.errors import SerkitError


class AudioError(SerkitError):
    """An audio file is missing, unreadable, empty or not audio."""


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file."""

    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def audio_info(path: str | Path) -> AudioInfo:
    """Read only the header of ``path``; raise :class:`AudioError` if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found (check the corpus copy or the wav.scp entry)")
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: not a readable audio file ({error}); re-copy or convert it to wav") from None
    return AudioInfo(sample_rate=int(info.samplerate), channels=int(info.channels), frames=int(info.frames))


def to_mono(signal: np.ndarray | torch.Tensor, channels_first: bool | None = None) -> torch.Tensor:
    """Downmix a [T], [C, T] or [T, C] signal to a float32 [T] tensor by averaging channels.

    With ``channels_first=None`` the channel axis is guessed as the shorter one, which is right for
    any real recording (fewer channels than samples).
    """
    tensor = torch.as_tensor(signal)
    if tensor.dtype == torch.uint8:
        # 8-bit PCM is unsigned with its zero at 128 (the WAV convention).
        tensor = (tensor.to(torch.float32) - 128.0) / 128.0
    elif not tensor.is_floating_point():
        # Signed integer PCM: scale to [-1, 1) like soundfile does for float reads.
        scale = float(torch.iinfo(tensor.dtype).max) + 1.0
        tensor = tensor.to(torch.float32) / scale
    tensor = tensor.to(torch.float32)
    if tensor.dim() == 1:
        return tensor
    if tensor.dim() != 2:
        raise AudioError(f"expected a 1-D or 2-D waveform, got shape {tuple(tensor.shape)}")
    if channels_first is None:
        channels_first = tensor.shape[0] <= tensor.shape[1]
    return tensor.mean(dim=0 if channels_first else 1)


def resample(signal: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample a [T] waveform (band-limited sinc interpolation from torchaudio)."""
    if orig_sr == target_sr:
        return signal
    return torchaudio.functional.resample(signal, orig_sr, target_sr)


def read_audio(path: str | Path, target_sr: int | None = 16000, mono: bool = True) -> tuple[torch.Tensor, int]:
    """Load ``path`` as float32, downmixed to mono and resampled to ``target_sr`` (None keeps it).

    Returns ``(waveform, sample_rate)``; the waveform is [T] when ``mono`` else [C, T].
    """
    path = Path(path)
    audio_info(path)  # clear errors for missing or non-audio files
    try:
        data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: could not decode audio ({error}); the file may be truncated or corrupt") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio file has no samples (empty recording); remove it from the data directory")
    waveform = torch.from_numpy(data.T.copy())  # [C, T]
    if mono:
        waveform = waveform.mean(dim=0)
        if target_sr is not None:
            waveform = resample(waveform, sample_rate, target_sr)
    elif target_sr is not None:
        waveform = torchaudio.functional.resample(waveform, sample_rate, target_sr)
    return waveform, (target_sr or sample_rate)
