"""Python inference API: emotion (and emotion-phoneme string) for waveforms or audio files, any family.

    recognizer = EmotionRecognizer.from_export("exp/w2v2_mtl/export")
    recognizer.predict_file("some.wav").label              # e.g. 'neu'
    recognizer.predict_waveform(samples, sample_rate=8000)  # numpy or torch, any layout

Input is accepted the way users have it (any sample rate, [T] / [C, T] / [T, C], int16 or float)
and converted exactly as training data was: downmix to mono, resample to the model's rate, float
in [-1, 1], then the family's input features (:mod:`serkit.features`; none for waveform families).
Batched prediction pads with zeros and passes relative lengths, so it gives the same answer as
one-by-one prediction for families that mask their padding.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from serkit.audio import AudioError, read_audio, resample, to_mono
from serkit.errors import SerkitError
from serkit.export import build_model, load_export, load_into
from serkit.model import ctc_greedy_decode
from serkit.model.build import feature_spec, min_input_frames

logger = logging.getLogger(__name__)

MAX_CHANNELS = 64  # a 2-D waveform whose shorter side is longer than this is not [C, T] / [T, C]


class InferenceError(SerkitError):
    """Inference cannot run as asked (e.g. an unavailable device)."""


@dataclass(frozen=True)
class Prediction:
    """One utterance's result.

    ``probs`` maps every class label to its posterior (they sum to 1); ``emotion_phonemes`` is the
    greedy CTC decoding of the phoneme head (e.g. ``['F0', 'V0', 'L0', 'VS0']``), or None for a
    model trained without that head.
    """

    label: str
    probs: dict[str, float]
    emotion_phonemes: list[str] | None


class EmotionRecognizer:
    """A loaded export folder, ready to score audio."""

    def __init__(self, model: torch.nn.Module, config: dict, device: str | torch.device = "cpu"):
        """``config`` is an export's config.json (classes, tokens, sample_rate, provenance)."""
        self.device = _check_device(device)
        self.model = model.to(self.device).eval()
        self.config = dict(config)
        self.classes: list[str] = list(config["classes"])
        self.tokens: list[str] = list(config["tokens"])
        self.sample_rate = int(config["sample_rate"])
        self.has_phoneme_head = int(config["n_tokens"]) > 0
        self.feature = feature_spec(config["feature"])  # None: the model reads the waveform itself
        self.min_samples = self._min_samples(min_input_frames(config))

    def _min_samples(self, min_frames: int) -> int:
        """Samples needed for ``min_frames`` input frames (e.g. the wav2vec 2.0 CNN's 400 samples)."""
        if self.feature is None:
            return min_frames
        samples = 1
        while self.feature.n_frames(samples) < min_frames:
            samples *= 2
        low = samples // 2
        while low + 1 < samples:  # smallest length giving enough frames (n_frames grows with samples)
            middle = (low + samples) // 2
            low, samples = (low, middle) if self.feature.n_frames(middle) >= min_frames else (middle, samples)
        return samples

    @classmethod
    def from_export(cls, export_dir: str | Path, device: str | torch.device = "cpu") -> "EmotionRecognizer":
        """Load an export folder (see :mod:`serkit.export`); never executes code from it."""
        exported = load_export(export_dir)
        model = build_model(exported.config)
        load_into(model, exported.state_dict, Path(export_dir) / "model.pt")
        logger.info("loaded %s: classes %s, validation UA %s, from %s", export_dir, " ".join(exported.classes),
                    exported.config.get("valid_UA"), exported.config.get("source_checkpoint", "?"))
        return cls(model, exported.config, device)

    # ------------------------------------------------------------------ inputs

    def prepare_waveform(self, wav: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
        """Convert any waveform to a float32 mono [T] tensor at the model's sample rate."""
        tensor = torch.as_tensor(np.ascontiguousarray(wav)) if isinstance(wav, np.ndarray) else wav
        if tensor.dim() == 2 and min(tensor.shape) > MAX_CHANNELS:
            raise AudioError(f"waveform of shape {tuple(tensor.shape)} has no plausible channel axis; "
                             f"pass [T], [channels, T] or [T, channels]")
        if tensor.dtype == torch.uint8:
            raise AudioError("8-bit unsigned PCM is not supported; convert the waveform to int16 or float")
        mono = to_mono(tensor)
        if mono.numel() == 0:
            raise AudioError("empty waveform (0 samples)")
        if int(sample_rate) <= 0:
            raise AudioError(f"invalid sample rate {sample_rate}")
        return resample(mono, int(sample_rate), self.sample_rate)

    # ------------------------------------------------------------------ prediction

    def predict_waveform(self, wav: torch.Tensor | np.ndarray, sample_rate: int) -> Prediction:
        """Predict one waveform given at any sample rate and channel layout."""
        waveform = self.prepare_waveform(wav, sample_rate)
        self.check_length(waveform, "waveform")
        return self.predict_batch([waveform])[0]

    def predict_file(self, path: str | Path) -> Prediction:
        """Predict one audio file (raises :class:`AudioError` naming it if it cannot be read)."""
        return self.predict_batch([self.read_file(path)])[0]

    def predict_files(self, paths: Iterable[str | Path], batch_size: int = 8) -> list[Prediction]:
        """Predict many files, ``batch_size`` at a time; results are in the order of ``paths``.

        Every file is read before scoring its batch, so an unreadable file raises
        :class:`AudioError` naming it (use :meth:`predict_batch` to skip failures yourself).
        """
        paths, batch_size = list(paths), max(1, int(batch_size))
        predictions: list[Prediction] = []
        for start in tqdm(range(0, len(paths), batch_size), desc="scoring", unit="batch", disable=None):
            chunk = paths[start:start + batch_size]
            predictions.extend(self.predict_batch([self.read_file(path) for path in chunk]))
        return predictions

    def read_file(self, path: str | Path) -> torch.Tensor:
        """An audio file as a mono waveform at the model's rate, long enough to score."""
        waveform, _ = read_audio(path, target_sr=self.sample_rate)
        self.check_length(waveform, str(path))
        return waveform

    def check_length(self, waveform: torch.Tensor, name: str) -> None:
        """Raise :class:`AudioError` naming ``name`` if the model cannot score this short a waveform."""
        if waveform.shape[-1] < self.min_samples:
            raise AudioError(f"{name}: too short to score ({waveform.shape[-1] / self.sample_rate * 1000:.1f} ms; "
                             f"the model needs at least {self.min_samples / self.sample_rate * 1000:.1f} ms)")

    @torch.inference_mode()
    def predict_batch(self, waveforms: Sequence[torch.Tensor]) -> list[Prediction]:
        """Score mono [T] waveforms already at the model's sample rate, in one padded forward pass."""
        if not waveforms:
            return []
        for row, waveform in enumerate(waveforms):
            self.check_length(waveform, f"batch item {row}")
        inputs = [w if self.feature is None else self.feature.compute(w, self.sample_rate) for w in waveforms]
        lengths = torch.tensor([x.shape[0] for x in inputs], dtype=torch.long)
        batch = torch.zeros(len(inputs), int(lengths.max()), *inputs[0].shape[1:])
        for row, x in enumerate(inputs):
            batch[row, :x.shape[0]] = x
        relative = lengths.double() / lengths.max()  # float64: exact sample counts even for long files
        output = self.model(batch.to(self.device), relative.to(self.device))
        probs = torch.softmax(output.emo_logits.float(), dim=-1).cpu()
        phonemes = self._decode_phonemes(output)
        return [self._prediction(probs[row], None if phonemes is None else phonemes[row])
                for row in range(len(waveforms))]

    def _decode_phonemes(self, output) -> list[list[str]] | None:
        if output.phn_log_probs is None:
            return None
        sequences = ctc_greedy_decode(output.phn_log_probs.cpu(), output.frame_lens.cpu())
        return [[self.tokens[index] for index in sequence] for sequence in sequences]

    def _prediction(self, probs: torch.Tensor, phonemes: list[str] | None) -> Prediction:
        return Prediction(label=self.classes[int(probs.argmax())],
                          probs={label: float(p) for label, p in zip(self.classes, probs)},
                          emotion_phonemes=phonemes)


def _check_device(device: str | torch.device) -> torch.device:
    """Fail early and clearly for a device this machine does not have."""
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise InferenceError(f"invalid device {device!r} ({error}); use 'cpu' or 'cuda[:N]'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InferenceError(f"device {device} requested but CUDA is not available here; use --device cpu")
    return device
