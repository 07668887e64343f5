"""Reading audio the way every serkit stage needs it: mono float32 at a fixed sample rate.

Corpora differ (48 kHz RAVDESS, the odd stereo file, int16 or float wavs); models want 16 kHz mono.
One function does the conversion so that data preparation, training and inference agree, and every
failure names the file and says what to do.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

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
    if path.stat().st_size == 0:  # "not readable" hid that the copy lost the file's content
        raise AudioError(f"{path}: empty file (0 bytes); re-copy it from the corpus release")
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


# ----------------------------------------------------------------------------- poisoned and truncated audio


def check_samples(samples: np.ndarray | torch.Tensor, offset: int = 0, sample_rate: int | None = None) -> str | None:
    """What is wrong with a block of samples ([T] or [T, C]: NaN or infinite values), or None.

    ``offset`` is the index of the block's first sample in its file and ``sample_rate`` its rate,
    so the message points at the first bad sample.
    Only non-finite values are checked here: silence is a property of a whole file (see
    :func:`audio_problem`), not of a block.
    """
    tensor = torch.as_tensor(samples)
    if not tensor.is_floating_point():
        return None  # integer PCM cannot hold NaN or infinity
    bad = ~torch.isfinite(tensor)
    if not bool(bad.any()):
        return None
    flat = bad.reshape(bad.shape[0], -1).any(dim=1) if bad.dim() > 1 else bad
    first = int(torch.nonzero(flat)[0, 0]) + offset
    where = f" ({first / sample_rate:.2f} s into the file)" if sample_rate else ""
    return f"{int(bad.sum())} NaN or infinite sample value(s), the first at sample {first}{where}"


def wav_truncation(path: str | Path) -> str | None:
    """For a WAV file, whether its data chunk is shorter than its header says (a cut-off copy), or None.

    libsndfile silently reports the frames actually present, so the short length would go unnoticed;
    this reads the RIFF chunk headers instead. Other formats (and WAVs whose writer left the size
    open, 0 or 0xFFFFFFFF) are not judged here: a truncated FLAC fails to decode on its own.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                return None
            chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if chunk_id == b"fmt ":
                fmt = handle.read(min(chunk_size, 16))
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                handle.seek(chunk_size - len(fmt) + (chunk_size & 1), 1)
            elif chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):
                    return None
                present = size - handle.tell()
                if present >= chunk_size:
                    return None
                if block_align:
                    return (f"the header announces {chunk_size // block_align} frames but the file holds only "
                            f"{present // block_align} (cut off at {100 * present / chunk_size:.0f}%)")
                return f"the header announces {chunk_size} data bytes but the file holds only {present}"
            else:
                handle.seek(chunk_size + (chunk_size & 1), 1)


def audio_problem(path: str | Path, block_seconds: float = 10.0) -> str | None:
    """Why ``path`` is not usable audio, or None: unreadable, truncated, NaN/Inf samples, or all zeros.

    Reads the file in blocks, so it checks recordings of any length in little memory. This is the
    check for data preparation; :func:`read_audio` and :func:`stream_audio` raise for the same
    problems (except silence, which only inference refuses: see :func:`serkit.serving.inference`).
    """
    try:
        silent = True
        for block in stream_audio(path, target_sr=None, block_seconds=block_seconds):
            silent = silent and not bool(block.any())
    except AudioError as error:
        return str(error).removeprefix(f"{path}: ")
    return "all samples are zero (a silent or blank recording)" if silent else None


def read_audio(path: str | Path, target_sr: int | None = 16000, mono: bool = True) -> tuple[torch.Tensor, int]:
    """Load ``path`` as float32, downmixed to mono and resampled to ``target_sr`` (None keeps it).

    Returns ``(waveform, sample_rate)``; the waveform is [T] when ``mono`` else [C, T]. A truncated
    WAV or NaN/infinite samples raise :class:`AudioError` naming the file.
    """
    path = Path(path)
    audio_info(path)  # clear errors for missing or non-audio files
    _raise_if_truncated(path)
    try:
        data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: could not decode audio ({error}); the file may be truncated or corrupt") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio file has no samples (empty recording); remove it from the data directory")
    problem = check_samples(data, sample_rate=sample_rate)
    if problem:
        raise AudioError(f"{path}: {problem}; the file is corrupt, re-create or remove it")
    waveform = torch.from_numpy(data.T.copy())  # [C, T]
    if mono:
        waveform = waveform.mean(dim=0)
        if target_sr is not None:
            waveform = resample(waveform, sample_rate, target_sr)
    elif target_sr is not None:
        waveform = torchaudio.functional.resample(waveform, sample_rate, target_sr)
    return waveform, (target_sr or sample_rate)


def _raise_if_truncated(path: Path) -> None:
    problem = wav_truncation(path)
    if problem:
        raise AudioError(f"{path}: truncated: {problem}; re-copy the file from the corpus")


# ----------------------------------------------------------------------------- streaming


class StreamResampler:
    """Resample a signal that arrives in pieces, giving exactly what resampling it whole would give.

    torchaudio's resampler maps each group of ``orig`` input samples (rates divided by their gcd) to
    ``new`` output samples, reading ``width`` samples of context on either side. This keeps just the
    input still needed as context (a few hundred samples: the "resampler state"), resamples it with
    each new piece, and returns the outputs whose context is complete; :meth:`flush` returns the rest.
    """

    def __init__(self, orig_sr: int, new_sr: int, lowpass_filter_width: int = 6, rolloff: float = 0.99):
        gcd = math.gcd(int(orig_sr), int(new_sr))
        self.orig_sr, self.new_sr = int(orig_sr), int(new_sr)
        self.orig, self.new = self.orig_sr // gcd, self.new_sr // gcd
        self.width = math.ceil(lowpass_filter_width * self.orig / (min(self.orig, self.new) * rolloff))
        self.buffer = torch.zeros(0)
        self.buffer_start = 0  # input index of buffer[0]; always a multiple of self.orig
        self.next_out = 0  # output index of the next sample to return
        self.n_in = 0

    def feed(self, samples: torch.Tensor) -> torch.Tensor:
        """Add input samples; return the output samples that are now final."""
        self.buffer = torch.cat([self.buffer, samples.to(torch.float32)])
        self.n_in += samples.shape[0]
        # output group g needs input up to (g + 1) * orig + width
        complete_groups = max(0, (self.n_in - self.width) // self.orig)
        return self._emit(complete_groups * self.new)

    def flush(self) -> torch.Tensor:
        """The remaining output samples (the end of the signal is followed by zeros, as in torchaudio)."""
        return self._emit(math.ceil(self.new * self.n_in / self.orig))

    def _emit(self, out_end: int) -> torch.Tensor:
        if out_end <= self.next_out:
            return torch.zeros(0)
        if self.orig == self.new:
            out = self.buffer[self.next_out - self.buffer_start:out_end - self.buffer_start]
        else:
            resampled = torchaudio.functional.resample(self.buffer, self.orig_sr, self.new_sr)
            first = self.buffer_start // self.orig * self.new  # output index of resampled[0]
            out = resampled[self.next_out - first:out_end - first]
        self.next_out = out_end
        # keep the input the next outputs read as left context, from a group boundary
        keep_from = max(0, (out_end // self.new * self.orig - self.width) // self.orig * self.orig)
        if keep_from > self.buffer_start:
            self.buffer = self.buffer[keep_from - self.buffer_start:]
            self.buffer_start = keep_from
        return out


def stream_audio(path: str | Path, target_sr: int | None = 16000, block_seconds: float = 4.0) -> Iterator[torch.Tensor]:
    """Yield ``path`` as consecutive mono float32 pieces at ``target_sr`` (None keeps the file's rate).

    Reads ``block_seconds`` of the file at a time, so memory stays bounded whatever its length; the
    pieces joined equal :func:`read_audio`'s waveform. Raises :class:`AudioError` naming the file for
    a missing, undecodable, truncated or empty file and for NaN/infinite samples (with their time).
    """
    path = Path(path)
    info = audio_info(path)
    _raise_if_truncated(path)
    resampler = None if target_sr is None else StreamResampler(info.sample_rate, target_sr)
    block_frames = max(1, int(block_seconds * info.sample_rate))
    position = 0
    try:
        for block in soundfile.blocks(str(path), blocksize=block_frames, dtype="float32", always_2d=True):
            problem = check_samples(block, offset=position, sample_rate=info.sample_rate)
            if problem:
                raise AudioError(f"{path}: {problem}; the file is corrupt, re-create or remove it")
            position += block.shape[0]
            mono = torch.from_numpy(block).mean(dim=1)
            piece = mono if resampler is None else resampler.feed(mono)
            if piece.numel():
                yield piece
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{path}: could not decode audio after {position / info.sample_rate:.2f} s ({error}); "
                         "the file may be truncated or corrupt") from None
    if position == 0:
        raise AudioError(f"{path}: audio file has no samples (empty recording); remove it from the data directory")
    if resampler is not None:
        rest = resampler.flush()
        if rest.numel():
            yield rest
