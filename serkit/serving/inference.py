"""Python inference API: emotion (and the outputs of the model's other targets) for waveforms or audio files.

    recognizer = EmotionRecognizer.from_export("exp/w2v2_mtl/export")
    recognizer.predict_file("some.wav").label              # e.g. 'neu'
    recognizer.predict_waveform(samples, sample_rate=8000)  # numpy or torch, any layout

Input is accepted the way users have it (any sample rate, [T] / [C, T] / [T, C], int16 or float)
and converted exactly as training data was: downmix to mono, resample to the model's rate, float
in [-1, 1], then the family's input features (:mod:`serkit.features`; none for waveform families).
Batched prediction pads with zeros and passes relative lengths, so it gives the same answer as
one-by-one prediction for families that mask their padding.

Long recordings are scored in **windows** of ``window_s`` seconds every ``hop_s`` seconds (defaults
from the model family, :attr:`serkit.model.family.ModelFamily.inference_window_s`; 8 s, no
overlap). A file is streamed from disk (:func:`serkit.data.audio.stream_audio`), so memory holds one
window plus the resampler's context whatever the file's length. Windows start at 0, ``hop_s``,
``2 hop_s`` ... until the file is covered; the last one ends at the end of the file and may be
shorter. The utterance-level posterior is the **duration-weighted mean** of the window posteriors
(a window's weight is its length in seconds, so a short tail counts for what it holds), and the
label is its highest class. Each :class:`Prediction` lists its windows (start, end, label,
posteriors): the timeline. A recording no longer than one window is scored whole, in one pass.

The other targets the model was trained with (:mod:`serkit.targets`) are served from the export's
config (:func:`serkit.targets.registry.served_targets`): each gives the model its inputs (a value the
user gives, ``given``, or the model's own prediction) and decodes its output into
``Prediction.outputs[target]`` (e.g. the greedy CTC decoding of the emotion-phoneme head, combining
the windows of a long file as the target says); this module names none of them.

Poisoned audio (NaN or infinite samples, a truncated WAV, an all-zero recording) raises
:class:`~serkit.data.audio.AudioError` naming the file instead of giving a label with ``nan`` posteriors.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from serkit.data.audio import AudioError, audio_info, check_samples, read_audio, resample, stream_audio, to_mono
from serkit.errors import SerkitError
from serkit.serving.export import build_model, load_export, load_into
from serkit.features import FeatureKind, FeatureStats
from serkit.model import get_family
from serkit.model.build import input_features, min_input_frames
from serkit.targets import Target, TargetError
from serkit.targets.registry import prediction_aliases, served_targets

logger = logging.getLogger(__name__)

MAX_CHANNELS = 64  # a 2-D waveform whose shorter side is longer than this is not [C, T] / [T, C]


class InferenceError(SerkitError):
    """Inference cannot run as asked (e.g. an unavailable device)."""


@dataclass(frozen=True)
class WindowPrediction:
    """The result for one window of a recording: ``start``/``end`` in seconds, label and posteriors."""

    start: float
    end: float
    label: str
    probs: dict[str, float]


@dataclass(frozen=True)
class Prediction:
    """One utterance's result.

    ``probs`` maps every class label to its posterior (they sum to 1); ``outputs`` maps each other
    target the model serves to its decoded value (:meth:`serkit.targets.Target.decode`), e.g.
    ``{"ctc": ['F0', 'V0', 'L0', 'VS0'], "gender": "f"}``. A target may also name an attribute that gives
    its output (:attr:`serkit.targets.Target.prediction_alias`): ``emotion_phonemes`` is the greedy CTC
    decoding of the emotion-phoneme head, or None for a model trained without that head. ``windows`` is
    the timeline of a recording scored in windows (one entry for a recording scored whole; empty for
    :meth:`EmotionRecognizer.predict_batch`).
    """

    label: str
    probs: dict[str, float]
    outputs: dict[str, Any] = field(default_factory=dict)
    windows: tuple[WindowPrediction, ...] = ()

    def __getattr__(self, name: str) -> Any:
        """A target's output under the attribute name it declares (e.g. ``emotion_phonemes``)."""
        target = prediction_aliases().get(name) if not name.startswith("_") else None
        if target is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return self.outputs.get(target)

    @property
    def finite(self) -> bool:
        """Whether every posterior is a number (a model with broken weights can give NaN)."""
        return all(np.isfinite(p) for p in self.probs.values())


def default_windows(config: dict) -> tuple[float, float]:
    """(window, hop) in seconds: the export config's ``inference`` entry, else the family's defaults."""
    family = get_family(config["family"])
    chosen = dict(config.get("inference") or {})
    window = float(chosen.get("window_s", family.inference_window_s))
    hop = chosen.get("hop_s", family.inference_hop_s)
    return window, float(window if hop is None else hop)


class EmotionRecognizer:
    """A loaded export folder, ready to score audio."""

    def __init__(self, model: torch.nn.Module, config: dict, device: str | torch.device = "cpu",
                 window_s: float | None = None, hop_s: float | None = None, given: dict[str, str] | None = None):
        """``config`` is an export's config.json (classes, sample_rate, the targets' entries, provenance);
        ``window_s``/``hop_s`` override the family's window length and hop (seconds); ``given`` maps a
        target to the value the user knows for every input (e.g. ``{"gender": "f"}`` for a model trained
        with the gender as an input)."""
        self.device = _check_device(device)
        self.model = model.to(self.device).eval()
        self.config = dict(config)
        self.classes: list[str] = list(config["classes"])
        self.sample_rate = int(config["sample_rate"])
        self.targets = self._served(config, given)
        self.features = input_features(config)  # what the model reads, computed from the waveform
        # normalisation: speaker (serkit.features.speaker_norm): features standardised with the speaker's statistics,
        # ``speaker_stats`` when set (e.g. from :meth:`speaker_statistics`), else each input's own frames
        self.normalisation = str(config.get("normalisation") or "global")
        self.speaker_stats: FeatureStats | None = None
        if self.normalisation == "speaker":
            logger.info("this model normalises its features per speaker (trained with normalisation: speaker): "
                        "set speaker_stats, or each input is normalised with its own statistics")
        self.min_samples = self._min_samples(min_input_frames(config))
        default_window, default_hop = default_windows(config)
        window_s = default_window if window_s is None else float(window_s)
        hop_s = (window_s if window_s != default_window else default_hop) if hop_s is None else float(hop_s)
        if not 0 < hop_s <= window_s:
            raise InferenceError(f"window hop must be in (0, window length {window_s} s], got {hop_s} s")
        self.window = int(round(window_s * self.sample_rate))
        self.hop = int(round(hop_s * self.sample_rate))
        if self.window < self.min_samples:
            raise InferenceError(f"window of {window_s} s is shorter than the model's shortest input "
                                 f"({self.min_samples / self.sample_rate * 1000:.1f} ms)")

    @property
    def feature(self) -> FeatureKind:
        """The model's first input (for per-speaker normalisation, which models with one input use)."""
        return self.features[0]

    def _min_samples(self, min_frames: int) -> int:
        """Samples needed for ``min_frames`` frames of the first input (e.g. the wav2vec 2.0 CNN's 400 samples)."""
        samples = 1
        while self.feature.n_frames(samples) < min_frames:
            samples *= 2
        low = samples // 2
        while low + 1 < samples:  # smallest length giving enough frames (n_frames grows with samples)
            middle = (low + samples) // 2
            low, samples = (low, middle) if self.feature.n_frames(middle) >= min_frames else (middle, samples)
        return samples

    @staticmethod
    def _served(config: dict, given: dict[str, str] | None) -> list[Target]:
        """The model's other targets, ready to serve (:func:`serkit.targets.registry.served_targets`)."""
        try:
            targets = served_targets(config, given)
            for target in targets:
                target.check_serving()
        except TargetError as error:
            raise InferenceError(str(error)) from None
        ignored = sorted(set(given or {}) - {target.name for target in targets})
        if ignored:
            logger.info("this model does not use %s; the given value is ignored", ", ".join(ignored))
        return targets

    @classmethod
    def from_export(cls, export_dir: str | Path, device: str | torch.device = "cpu", window_s: float | None = None,
                    hop_s: float | None = None, given: dict[str, str] | None = None) -> "EmotionRecognizer":
        """Load an export folder (see :mod:`serkit.serving.export`); never executes code from it."""
        exported = load_export(export_dir)
        model = _model_with_weights(exported, Path(export_dir) / "model.pt")
        logger.info("loaded %s: classes %s, validation UA %s, from %s", export_dir, " ".join(exported.classes),
                    exported.config.get("valid_UA"), exported.config.get("source_checkpoint", "?"))
        return cls(model, exported.config, device, window_s=window_s, hop_s=hop_s, given=given)

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
        """Predict one waveform given at any sample rate and channel layout (in windows if it is long)."""
        waveform = self.prepare_waveform(wav, sample_rate)
        self.check_audio(waveform, "waveform")
        return self.predict_stream(iter([waveform]), "waveform")

    def predict_file(self, path: str | Path) -> Prediction:
        """Predict one audio file, streamed from disk in windows (raises :class:`AudioError` naming it)."""
        pieces = stream_audio(path, target_sr=self.sample_rate, block_seconds=self.hop / self.sample_rate)
        return self.predict_stream(pieces, str(path))

    def predict_files(self, paths: Iterable[str | Path], batch_size: int = 8) -> list[Prediction]:
        """Predict many files; short ones ``batch_size`` at a time, long ones in windows; in input order.

        Every file is read before scoring its batch, so an unreadable file raises
        :class:`AudioError` naming it (use :meth:`predict_batch` to skip failures yourself).
        """
        paths, batch_size = list(paths), max(1, int(batch_size))
        predictions: list[Prediction] = []
        pending: list[torch.Tensor] = []
        for path in tqdm(paths, desc="scoring", unit="file", disable=None):
            if self.is_long(path):
                predictions.extend(self.predict_batch(pending, timeline=True))
                pending = []
                predictions.append(self.predict_file(path))
                continue
            pending.append(self.read_file(path))
            if len(pending) == batch_size:
                predictions.extend(self.predict_batch(pending, timeline=True))
                pending = []
        predictions.extend(self.predict_batch(pending, timeline=True))
        return predictions

    def is_long(self, path: str | Path) -> bool:
        """Whether the file (by its header) is longer than one window, so is scored in windows."""
        info = audio_info(path)
        return info.frames * self.sample_rate > self.window * info.sample_rate

    def read_file(self, path: str | Path) -> torch.Tensor:
        """An audio file as a mono waveform at the model's rate, checked to be scorable."""
        waveform, _ = read_audio(path, target_sr=self.sample_rate)
        self.check_audio(waveform, str(path))
        return waveform

    def check_audio(self, waveform: torch.Tensor, name: str) -> None:
        """Raise :class:`AudioError` naming ``name`` for a waveform too short, silent or non-finite to score."""
        self.check_length(waveform, name)
        problem = check_samples(waveform)
        if problem:
            raise AudioError(f"{name}: {problem}; the audio is corrupt")
        if not bool(waveform.any()):
            raise AudioError(f"{name}: all samples are zero (a silent or blank recording); nothing to recognise")

    def check_length(self, waveform: torch.Tensor, name: str) -> None:
        """Raise :class:`AudioError` naming ``name`` if the model cannot score this short a waveform."""
        if waveform.shape[-1] < self.min_samples:
            raise AudioError(f"{name}: too short to score ({waveform.shape[-1] / self.sample_rate * 1000:.1f} ms; "
                             f"the model needs at least {self.min_samples / self.sample_rate * 1000:.1f} ms)")

    def predict_batch(self, waveforms: Sequence[torch.Tensor], timeline: bool = False) -> list[Prediction]:
        """Score mono [T] waveforms already at the model's sample rate, whole, in one padded forward pass.

        With ``timeline`` each prediction lists itself as its one window (what :meth:`predict_stream`
        gives a recording no longer than a window).
        """
        if not waveforms:
            return []
        probs, pieces = self._forward(waveforms)
        predictions = []
        for row, waveform in enumerate(waveforms):
            outputs = {target.name: target.decode(pieces[row][target.name]) for target in self.targets}
            windows = (self._window(0, waveform.shape[0], probs[row]),) if timeline else ()
            predictions.append(self._prediction(probs[row], outputs, windows))
        return predictions

    @torch.inference_mode()
    def _forward(self, waveforms: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Posteriors [B, C] and each waveform's output pieces, by target (:meth:`Target.output_piece`)."""
        for row, waveform in enumerate(waveforms):
            self.check_length(waveform, f"batch item {row}")
        batches, relatives = [], []
        for feature in self.features:
            batch, relative = _padded([self.normalise(feature.compute(w, self.sample_rate)) for w in waveforms])
            batches.append(batch.to(self.device))
            relatives.append(relative.to(self.device))
        output = self.model(batches, relatives, **self._inputs(len(waveforms)))
        if any(target.second_pass for target in self.targets):  # a target feeds the model its own prediction
            output = self.model(batches, relatives, **self._inputs(len(waveforms), output))
        probs = torch.softmax(output.emo_logits.float(), dim=-1).cpu()
        return probs, [{target.name: target.output_piece(output, row) for target in self.targets}
                       for row in range(len(waveforms))]

    def _inputs(self, size: int, output=None) -> dict[str, torch.Tensor]:
        """The model's inputs besides the audio, from every served target (:meth:`Target.serving_inputs`)."""
        return {key: value.to(self.device) for target in self.targets
                for key, value in target.serving_inputs(size, output).items()}

    # ------------------------------------------------------------------ per-speaker normalisation

    def normalise(self, feats: torch.Tensor) -> torch.Tensor:
        """Features as the model was trained on them: for ``normalisation: speaker``, standardised with
        ``speaker_stats`` or, when none are set, with the input's own frames (utterance CMVN)."""
        if self.normalisation != "speaker":
            return feats
        if self.speaker_stats is not None:
            return self.speaker_stats.normalise(feats)
        if feats.shape[0] < 2:
            raise InferenceError("this model was trained with per-speaker normalisation (normalisation: speaker) of "
                                 "one-row features (eGeMAPS), which one recording cannot normalise by itself: give "
                                 "the speaker's statistics (serkit-infer --utt2spk or --speaker-stats; "
                                 "EmotionRecognizer.speaker_stats = recognizer.speaker_statistics(files))")
        own = FeatureStats()
        own.accumulate(feats)
        return own.normalise(feats)

    def speaker_statistics(self, paths: Iterable[str | Path]) -> FeatureStats:
        """Per-dimension statistics of the features of one speaker's recordings (whole files)."""
        if self.feature.kind == "waveform":
            raise InferenceError("this model reads the waveform itself; it has no features to normalise")
        stats = FeatureStats()
        for path in paths:
            stats.accumulate(self.feature.compute(self.read_file(path), self.sample_rate))
        return stats

    # ------------------------------------------------------------------ long recordings

    def predict_stream(self, pieces: Iterator[torch.Tensor], name: str) -> Prediction:
        """Score a recording given as consecutive mono pieces at the model's rate, window by window.

        Holds one window (plus the pieces being cut) at a time; see the module docstring for the
        windows and how their posteriors are combined.
        """
        windows: list[WindowPrediction] = []
        weighted = None
        target_pieces: dict[str, list] = {target.name: [] for target in self.targets}  # (start, end, piece)s
        silent, total = True, 0
        for start, window in self._cut_windows(pieces, name):
            problem = check_samples(window, offset=start, sample_rate=self.sample_rate)
            if problem:
                raise AudioError(f"{name}: {problem}; the audio is corrupt")
            silent = silent and not bool(window.any())
            probs, window_pieces = self._forward([window])
            end = start + window.shape[0]
            windows.append(self._window(start, end, probs[0]))
            weighted = probs[0].double() * (end - start) + (0 if weighted is None else weighted)
            total += end - start
            for target_name, piece in window_pieces[0].items():
                if piece is not None:
                    target_pieces[target_name].append((start, end, piece))
        if silent:
            raise AudioError(f"{name}: all samples are zero (a silent or blank recording); nothing to recognise")
        outputs = {target.name: target.decode(target.combine(target_pieces[target.name])
                                              if target_pieces[target.name] else None) for target in self.targets}
        return self._prediction((weighted / total).float(), outputs, tuple(windows))

    def _cut_windows(self, pieces: Iterator[torch.Tensor], name: str) -> Iterator[tuple[int, torch.Tensor]]:
        """(start sample, window) pairs: ``window`` samples every ``hop``; the last ends at the end.

        Keeps at most one window plus one piece in memory. A last window shorter than the model's
        minimum starts earlier (overlapping its neighbour) so that no audio goes unscored.
        """
        buffer, buffer_start, next_start, covered = torch.zeros(0), 0, 0, 0
        for piece in pieces:
            buffer = torch.cat([buffer, piece])
            while buffer_start + buffer.shape[0] > next_start + self.window:  # a full window, and more after it
                yield next_start, buffer[next_start - buffer_start:next_start - buffer_start + self.window]
                covered, next_start = next_start + self.window, next_start + self.hop
                keep_from = max(buffer_start, next_start - self.min_samples)
                buffer, buffer_start = buffer[keep_from - buffer_start:], keep_from
        end = buffer_start + buffer.shape[0]
        if 0 < end <= covered:
            return
        start = max(0, min(next_start, end - self.min_samples))
        window = buffer[start - buffer_start:]
        self.check_length(window, name)
        yield start, window

    def _window(self, start: int, end: int, probs: torch.Tensor) -> WindowPrediction:
        return WindowPrediction(start=start / self.sample_rate, end=end / self.sample_rate,
                                label=self.classes[int(probs.argmax())],
                                probs={label: float(p) for label, p in zip(self.classes, probs)})

    def _prediction(self, probs: torch.Tensor, outputs: dict[str, Any],
                    windows: tuple[WindowPrediction, ...] = ()) -> Prediction:
        return Prediction(label=self.classes[int(probs.argmax())],
                          probs={label: float(p) for label, p in zip(self.classes, probs)},
                          outputs=outputs, windows=windows)


def _padded(inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [T, ...] zero-padded into one batch [B, T_max, ...], and their relative lengths."""
    lengths = torch.tensor([x.shape[0] for x in inputs], dtype=torch.long)
    batch = torch.zeros(len(inputs), int(lengths.max()), *inputs[0].shape[1:])
    for row, x in enumerate(inputs):
        batch[row, :x.shape[0]] = x
    return batch, lengths.double() / lengths.max()  # float64: exact sample counts even for long files


def _model_with_weights(exported, source: Path) -> torch.nn.Module:
    """The exported network holding the export's weights, built without a random copy of them.

    The network is built on the ``meta`` device (shapes only) and then takes the memory-mapped
    weights as its own, so a wav2vec2-base export needs its ~380 MB once, not three times. A network
    with state that the weights do not carry (a non-persistent buffer) is built normally instead.
    """
    with torch.device("meta"):
        model = build_model(exported.config)
    load_into(model, exported.state_dict, source, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = build_model(exported.config)
        load_into(model, exported.state_dict, source)
    return model


def _check_device(device: str | torch.device) -> torch.device:
    """Fail early and clearly for a device this machine does not have."""
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise InferenceError(f"invalid device {device!r} ({error}); use 'cpu' or 'cuda[:N]'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InferenceError(f"device {device} requested but CUDA is not available here; use --device cpu")
    return device
