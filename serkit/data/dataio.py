"""Stage 3 data loading: one fold of a data directory as padded batches of model inputs and targets.

Inputs (docs/formats.md): a data directory (``wav.scp``, ``utt2dur`` and the files the configured
targets read, e.g. ``utt2emo`` and ``classes`` for the emotion target, ``utt2phn`` for an
emotion-phoneme CTC head; see :mod:`serkit.targets`) and a fold directory (``train``, ``valid``,
``test`` utterance lists).

The data layer knows no model family and no target: it loads exactly what the family asks for, i.e.
the inputs named by its feature kinds (the waveform itself, log-Mel with deltas, MFCC, eGeMAPS
functionals; see :mod:`serkit.features`), one batch field each (:func:`input_key`), and the values and
batch fields the configured targets declare (:class:`serkit.targets.TargetSet`). Features are computed
on the fly, or once per utterance into a cache directory (Kaldi's ``dump/`` idea, :class:`FeatureCache`)
so spectral models do not recompute them every epoch.

Everything is checked when the fold is loaded, before any training starts: a fold list that names an
utterance the data directory lacks, a target value the target refuses (an unknown emotion label or
token), or an utterance listed in two splits (a test leak) stops the run with an error naming the
file and the fix. Hours into a run is the wrong time to find a typo in a data file.

Batches follow SpeechBrain's conventions (:class:`~speechbrain.dataio.batch.PaddedBatch`): waveforms
are padded on the right and come with *relative* lengths; the fields a target declares as sequences
(e.g. CTC tokens) come with *absolute* lengths, as CTC losses want. :class:`DurationBucketBatchSampler` puts utterances of similar duration together
so that little compute is spent on padding, and bounds each batch's padded audio (``batch_seconds``)
so that batches of long utterances do not run out of memory.
"""
from __future__ import annotations

import json
import logging
import math
import pickle
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from speechbrain.dataio.batch import PaddedBatch
from torch.utils.data import Dataset, Sampler

from serkit.atomic import atomic_write
from serkit.data.audio import audio_problem, read_audio
from serkit.data import inventory
from serkit.data.datadir import AMBIGUOUS_DIR, DataDirError, read_map
from serkit.errors import load_error_text
from serkit.features import FeatureError, FeatureKind, make_feature
from serkit.data.folds import SPLITS, load_fold
from serkit.targets import TargetSet

logger = logging.getLogger(__name__)

MAX_LISTED = 5  # how many offending ids an error message shows


@dataclass(frozen=True)
class Utterance:
    """Everything training needs to know about one utterance, read once from the data directory."""

    utt_id: str
    wav: str
    labels: dict[str, Any]  # each active target's value, by target name (e.g. "emotion": class index)
    duration: float  # seconds, from utt2dur

    @property
    def emotion(self) -> int:
        """The primary target's class index (what folds, class coverage and closed-form fits use)."""
        return self.labels["emotion"]


@dataclass
class FoldData:
    """The three datasets of one fold plus the targets (and so the label inventories) they index into."""

    train: "EmotionDataset"
    valid: "EmotionDataset"
    test: "EmotionDataset"
    classes: list[str]
    targets: TargetSet


# ----------------------------------------------------------------------------- inventories


def read_classes(data_dir: str | Path) -> list[str]:
    """The emotion classes of a data directory, in index order (its ``classes`` file)."""
    return inventory.read_classes(Path(data_dir) / inventory.CLASSES_FILE)


def read_tokens(lang_dir: str | Path) -> list[str]:
    """The token inventory of a lang directory (its ``tokens.txt``), indexed by token id."""
    return inventory.read_tokens(Path(lang_dir) / "tokens.txt")


# ----------------------------------------------------------------------------- fold and utterances


def read_fold(fold_dir: str | Path) -> dict[str, list[str]]:
    """The ``train``/``valid``/``test`` utterance lists of a fold, checked to be non-empty and disjoint.

    Disjointness matters beyond tidiness: an utterance in both ``test`` and ``train``/``valid`` would
    let the test set influence training or checkpoint selection.
    """
    fold_dir = Path(fold_dir)
    if not fold_dir.is_dir():
        raise DataDirError(f"{fold_dir}: fold directory not found; run stage 2 (folds) first")
    fold = load_fold(fold_dir)
    for split, utts in fold.items():
        if not utts:
            raise DataDirError(f"{fold_dir / split}: empty utterance list; re-create the folds (stage 2)")
        repeated = sorted(utt for utt, count in Counter(utts).items() if count > 1)
        if repeated:
            raise DataDirError(f"{fold_dir / split}: utterance(s) listed twice: {_few(repeated)}")
    for index, first in enumerate(SPLITS):
        for second in SPLITS[index + 1:]:
            shared = sorted(set(fold[first]) & set(fold[second]))
            if shared:
                raise DataDirError(f"{fold_dir}: {len(shared)} utterance(s) are in both '{first}' and '{second}' "
                                   f"({_few(shared)}); splits must be disjoint, re-create the folds (stage 2)")
    return fold


def load_utterances(data_dir: str | Path, utt_ids: Sequence[str], targets: TargetSet,
                    unlabelled: bool = False) -> list[Utterance]:
    """Join the data directory's files for ``utt_ids`` into :class:`Utterance` records.

    Audio and durations come from ``wav.scp`` and ``utt2dur``; each active target reads and checks
    its own files (:meth:`serkit.targets.TargetSet.read`; ``unlabelled``: utterances without a class,
    :meth:`~serkit.targets.TargetSet.read_unlabelled`).
    """
    data_dir = Path(data_dir)
    wavs = read_map(data_dir / "wav.scp")
    durations = read_map(data_dir / "utt2dur")
    for name, mapping in {"wav.scp": wavs, "utt2dur": durations}.items():
        missing = [utt for utt in utt_ids if utt not in mapping]
        if missing:
            raise DataDirError(f"{data_dir / name}: {len(missing)} utterance(s) of the fold are missing "
                               f"({_few(missing)}); the fold lists do not match the data directory: re-create "
                               "the folds (stage 2) after changing the data directory")

    absent = [utt for utt in utt_ids if not Path(wavs[utt]).is_file()]
    if absent:
        raise DataDirError(f"{data_dir / 'wav.scp'}: {len(absent)} audio file(s) of the fold do not exist "
                           f"({_few([f'{utt}: {wavs[utt]}' for utt in absent])}); check the corpus location "
                           "or re-run data preparation (stage 0)")
    labels = targets.read_unlabelled(data_dir, utt_ids) if unlabelled else targets.read(data_dir, utt_ids)
    return [Utterance(utt_id=utt, wav=wavs[utt], labels=labels[utt],
                      duration=_duration(durations[utt], data_dir / "utt2dur", utt)) for utt in utt_ids]


def load_ambiguous(data_dir: str | Path, train: Sequence[str], targets: TargetSet) -> list[Utterance]:
    """The ambiguous utterances (:data:`~serkit.data.datadir.AMBIGUOUS_DIR`) of the speakers of ``train``.

    Taking only the training list's speakers keeps the fold's protocol: a speaker-independent fold
    gets none of its test (or validation) speakers' ambiguous utterances.
    """
    folder = Path(data_dir) / AMBIGUOUS_DIR
    if not (folder / "utt2spk").is_file():
        raise DataDirError(f"{folder}: no ambiguous utterances here, yet use_ambiguous is True; prepare the data with "
                           "a corpus whose prep writes them (IEMOCAP: utterances without a majority; re-run stage 0) "
                           "or set use_ambiguous: False")
    utt2spk = read_map(Path(data_dir) / "utt2spk")
    speakers = {utt2spk.get(utt) for utt in train}
    utts = [utt for utt, speaker in read_map(folder / "utt2spk").items() if speaker in speakers]
    return load_utterances(folder, utts, targets, unlabelled=True)


def _duration(value: str, path: Path, utt: str) -> float:
    try:
        duration = float(value)
    except ValueError:
        raise DataDirError(f"{path}: utterance {utt} has duration {value!r}, not a number; re-run stage 0") from None
    if not duration > 0:
        raise DataDirError(f"{path}: utterance {utt} has duration {value!r}; empty recordings must be removed "
                           "from the data directory (fix_data_dir)")
    return duration


def _few(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f", ... ({len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else "")


# ----------------------------------------------------------------------------- dataset and batches


class FeatureCache:
    """One feature tensor per utterance on disk: ``<dir>/<kind>-<spec hash>/<utt>.pt`` (Kaldi's ``dump/``).

    The sub-folder is the feature's :meth:`~serkit.features.FeatureKind.cache_name`, a hash of its spec, so changing a feature parameter never reads
    stale features; each entry also records its audio file's path, size and modification time, so a
    re-recorded file is recomputed. Entries are written atomically and read with ``weights_only=True``
    (no code runs); an unreadable or stale entry is recomputed with a warning. Another fold, another
    family with the same input, or a re-run all reuse the entries.
    """

    def __init__(self, root: str | Path, feature: FeatureKind):
        self.dir = Path(root) / feature.cache_name()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = self.computed = 0
        spec_file = self.dir / "feature.json"
        if not spec_file.is_file():
            atomic_write(spec_file, lambda tmp: tmp.write_text(json.dumps(feature.to_dict(), indent=2, sort_keys=True) + "\n"))

    @staticmethod
    def source_key(wav: str | Path) -> str:
        """What identifies the audio an entry was computed from."""
        stat = Path(wav).stat()
        return f"{Path(wav).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    def entry(self, utt_id: str) -> Path:
        if not _SAFE_ID.fullmatch(utt_id):
            raise DataDirError(f"utterance id {utt_id!r} cannot name a cache file (letters, digits, _ . + - only); "
                               "fix the data directory's ids or run without feature_cache")
        return self.dir / f"{utt_id}.pt"

    def get(self, utt_id: str, wav: str | Path, compute) -> torch.Tensor:
        """The cached features of ``utt_id`` computed from ``wav``, or ``compute()`` stored for next time."""
        path, key = self.entry(utt_id), self.source_key(wav)
        if path.is_file():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
                if stored.get("source") == key:
                    self.hits += 1
                    return stored["feats"]
                logger.warning("%s: cached features are stale (%s changed); recomputing", path, wav)
            except (RuntimeError, EOFError, OSError, ValueError, AttributeError, pickle.UnpicklingError) as error:
                logger.warning("%s: unreadable cached features (%s); recomputing", path, load_error_text(error))
        feats = compute()
        atomic_write(path, lambda tmp: torch.save({"source": key, "feats": feats}, tmp))
        self.computed += 1
        return feats


_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def input_key(index: int) -> str:
    """The item and batch field of a family's input ``index``: ``sig``, then ``sig1``, ``sig2`` ..."""
    return "sig" if index == 0 else f"sig{index}"


def input_keys(item: Mapping) -> list[str]:
    """The input fields of a dataset item, in the family's order."""
    keys: list[str] = []
    while input_key(len(keys)) in item:
        keys.append(input_key(len(keys)))
    return keys


def batch_inputs(batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """A batch's padded inputs and their relative lengths, one of each per input, in the family's order."""
    inputs, lengths = [], []
    while hasattr(batch, input_key(len(inputs))):
        padded, relative = getattr(batch, input_key(len(inputs)))
        inputs.append(padded)
        lengths.append(relative)
    return inputs, lengths


class EmotionDataset(Dataset):
    """Utterances as dicts ``{id, sig[, sig1 ...], <the targets' fields>}`` (e.g. ``emo``, ``tokens``,
    ``token_len``); audio is read on access.

    ``sig`` (and ``sig1`` ... for a family with several inputs, :func:`input_key`) is what the model
    consumes: features computed from the waveform by each of ``features`` (:class:`serkit.features.FeatureKind`;
    default the waveform itself), cached in the matching entry of ``caches`` if given. Their first
    axis is time. The other fields are the batch fields of ``targets``' active targets.

    ``max_duration`` (seconds, training only) crops longer inputs to a random window of that
    length: it bounds memory for the few very long utterances. The window is drawn from a generator
    seeded by (seed, epoch, item) (:meth:`set_epoch`), never from a global or worker generator, so
    the crops do not depend on the number of loader workers and a resumed run repeats them exactly. The crop keeps the utterance's whole
    CTC target, which then covers more speech than the window holds; the run logs how many
    utterances this affects so the trade-off is visible (leave it unset to train on whole utterances).
    """

    def __init__(self, utterances: Sequence[Utterance], sample_rate: int = 16000,
                 max_duration: float | None = None, features: Sequence[FeatureKind] | None = None,
                 caches: Sequence[FeatureCache | None] | None = None, targets: TargetSet | None = None):
        if max_duration is not None and max_duration <= 0:
            raise ValueError(f"max_duration must be positive seconds or None, got {max_duration}")
        self.utterances = list(utterances)
        self.sample_rate = sample_rate
        self.max_duration = max_duration
        self.features = list(features) if features else [make_feature("waveform", sample_rate)]
        self.caches = list(caches) if caches else [None] * len(self.features)
        self.targets = targets
        self.seed, self.epoch = 0, 0
        # per-speaker normalisation acts on the input of a one-input family (serkit.training.train refuses it
        # for several inputs); the augmenter returns every input
        self.normaliser = None  # (utt_id, features) -> features, e.g. per-speaker CMVN (serkit.features.speaker_norm)
        self.augmenter = None  # (dataset, index, seed, epoch) -> augmented inputs, training only (serkit.features.augment)
        self.segmenter = None  # (input, class) -> class-balanced segments, training only (serkit.data.segments)

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        """Choose the crops of this epoch (see the class docstring)."""
        self.seed, self.epoch = int(seed), int(epoch)

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def durations(self) -> list[float]:
        """Duration of each item as it will be batched (after any crop), for the bucketing sampler."""
        cap = self.max_duration if self.max_duration is not None else float("inf")
        if self.segmenter is not None:
            return [min(self.segmenter.seconds(utt.duration, utt.emotion), cap) for utt in self.utterances]
        return [min(utt.duration, cap) for utt in self.utterances]

    @property
    def n_cropped(self) -> int:
        """How many utterances are longer than ``max_duration`` (and so get cropped)."""
        if self.max_duration is None:
            return 0
        return sum(utt.duration > self.max_duration for utt in self.utterances)

    def inputs(self, index: int, transform=None, which: int = 0) -> torch.Tensor:
        """Input ``which`` of utterance ``index`` (waveform [T] or features [frames, ...]), uncropped,
        after the dataset's ``normaliser`` (if any; the cache holds the raw features). ``transform``
        changes the waveform first (training augmentation: such features are never cached)."""
        utt, feature, cache = self.utterances[index], self.features[which], self.caches[which]

        def compute() -> torch.Tensor:
            try:
                waveform = read_audio(utt.wav, target_sr=self.sample_rate)[0]
                return feature.compute(waveform if transform is None else transform(waveform), self.sample_rate)
            except FeatureError as error:
                raise DataDirError(f"utterance {utt.utt_id} ({utt.wav}): {error}") from None
        cached = cache is not None and transform is None
        feats = cache.get(utt.utt_id, utt.wav, compute) if cached else compute()
        return feats if self.normaliser is None else self.normaliser(utt.utt_id, feats)

    def __getitem__(self, index: int) -> dict:
        utt = self.utterances[index]
        if self.augmenter is None:
            signals = [self.inputs(index, which=which) for which in range(len(self.features))]
        else:
            signals = self.augmenter(self, index, self.seed, self.epoch)
        if self.segmenter is not None:  # one input (serkit.data.segments refuses several)
            signals = [self.segmenter(signals[0], utt.emotion)]
        if self.max_duration is not None:
            samples = int(self.max_duration * self.sample_rate)
            lengths = [max(1, feature.n_frames(samples)) for feature in self.features]
            signals = random_crops(signals, lengths, np.random.default_rng([self.seed, self.epoch, index]))
        return {"id": utt.utt_id, **{input_key(which): signal for which, signal in enumerate(signals)},
                **self.targets.fields(utt.labels)}

    def collate(self, examples: list[dict]) -> PaddedBatch:
        """:func:`collate_batch` with the sequence fields of this dataset's targets."""
        return collate_batch(examples, self.targets.sequences)


def random_crops(signals: Sequence[torch.Tensor], lengths: Sequence[int], rng: np.random.Generator) -> list[torch.Tensor]:
    """Windows of ``lengths[k]`` steps along the first axis of each signal, over the same stretch of the
    utterance: the start is drawn with ``rng`` on the first signal (none when it is not longer than its
    window) and placed at the same fraction of the others."""
    first = signals[0]
    start = int(rng.integers(0, first.shape[0] - lengths[0] + 1)) if first.shape[0] > lengths[0] else 0
    return [signal[start * signal.shape[0] // first.shape[0]:][:length] for signal, length in zip(signals, lengths)]


def collate_batch(examples: list[dict], sequences: Sequence[str] = ()) -> PaddedBatch:
    """Pad a list of dataset items into a :class:`PaddedBatch`.

    ``batch.sig`` (and ``batch.sig1`` ... for more inputs) is (inputs [B, T, ...], relative lengths [B]).
    Each field named in ``sequences`` (a target's, e.g. ``tokens``, whose absolute lengths the target
    puts in a field of its own, e.g. ``token_len``) becomes ``batch.<field>.data`` [B, S] padded with 0
    (the CTC blank). These are padded here, to at least length 1, because SpeechBrain's
    ``batch_pad_right`` cannot pad a batch in which every sequence is empty (utterances without phones).
    """
    padded = [dict(example) for example in examples]
    for field in sequences:
        width = max(1, max(example[field].shape[0] for example in examples))
        for example in padded:
            example[field] = torch.nn.functional.pad(example[field], (0, width - example[field].shape[0]), value=0)
    return PaddedBatch(padded, padded_keys=[*input_keys(examples[0]), *sequences])


class DurationBucketBatchSampler(Sampler):
    """Batches of utterances of similar duration, within a budget of padded seconds, drawn anew each epoch.

    A batch holds at most ``batch_size`` utterances and, with ``batch_seconds``, at most that many
    *padded* seconds (utterances x its longest duration): a model's activations grow with the padded
    audio, so the budget bounds a batch's memory by construction, and a batch of short utterances
    still fills up to ``batch_size``. ``batch_seconds=None`` counts utterances only. An utterance
    longer than the budget gets a batch of its own: it is never dropped, and the number of such
    utterances is logged once.

    How batches are cut: utterances are sorted by duration, each times a random factor in
    ``1 +- jitter`` (0.2 %: neighbours of almost equal length trade places), and cut greedily into
    consecutive batches; the first (shortest) batch takes a random number, between half and all, of
    the utterances that would fit in it, which shifts every later cut; then the batch order is
    shuffled. Every batch thus holds neighbours in duration, while its members change from epoch to
    epoch, as SGD wants. Measured on IEMOCAP-like durations (log-normal, 0.6-20 s) at batch 16 and
    60 s: padding 0.4 % on 4,400 utterances (an IEMOCAP LOSO training fold), at most 1.9 % on 800
    (sparser, so neighbours differ more; see :func:`padded_fraction`), and 85-95 % of the batches
    regrouped from one epoch to the next. Sorting with the former 10 % jitter padded 8 %;
    lhotse-style buckets (utterances shuffled within 30-100 duration ranges) padded 1.3-4 % in more,
    smaller batches, and with 100 ranges on 800 utterances regrouped only 15 % of the batches.

    Every draw comes from ``(seed, epoch)`` only, so a run (or a resumed run) replays exactly the
    same batches; ``shuffle=False`` (validation, test) cuts the sorted order without any draw. Call
    :meth:`set_epoch` before each epoch (SpeechBrain's Brain does it for its ``train_sampler``); it
    also sets the epoch of ``dataset`` (if given) so that its per-item random crops follow the same
    seed and epoch. ``len()`` is the exact number of batches of the current epoch (SpeechBrain's
    progress bar and mid-epoch resume rely on it); with a budget it may differ by one or two between
    epochs.

    Several processes training one model (DDP, ``num_replicas`` > 1) each build this sampler with
    their ``rank``. All of them draw the same :meth:`batches` (the *global* batches: ``batch_size``
    and ``batch_seconds`` are global, each process holds about ``1 / num_replicas`` of them) and
    each yields its share of every global batch: items ``rank, rank + num_replicas, ...`` (a strided
    share spans the batch's duration range, so the processes finish a step at about the same time).
    A global step therefore trains the same utterances as the same step of a one-process run, except
    where that run has a batch of fewer utterances than processes: every global batch holds at least
    ``num_replicas`` utterances, so no process is left without work. A batch goes over the budget only
    to reach that minimum, and a last (longest) batch with fewer utterances joins the batch before it.
    """

    def __init__(self, durations: Sequence[float], batch_size: int, batch_seconds: float | None = None,
                 shuffle: bool = True, seed: int = 0, jitter: float = 0.002, dataset=None, num_replicas: int = 1,
                 rank: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        if num_replicas > 1 and batch_size < num_replicas:
            raise ValueError(f"batch_size {batch_size} is smaller than the {num_replicas} processes sharing "
                             "each batch; every process needs at least one utterance per step")
        if num_replicas > 1 and len(durations) < num_replicas:
            raise ValueError(f"{len(durations)} utterance(s) cannot be shared by {num_replicas} processes")
        self.durations = list(durations)
        self.batch_size = batch_size
        self.batch_seconds = check_batch_seconds(batch_seconds)
        self.shuffle = shuffle
        self.seed = seed
        self.jitter = jitter
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._drawn: tuple[int, list[list[int]]] | None = None  # (epoch, its batches)
        self._log_long_utterances()

    def _log_long_utterances(self) -> None:
        """Say once how many utterances go over the budget (the batches holding them exceed it)."""
        if self.batch_seconds is None:
            return
        limit = self.batch_seconds / self.num_replicas  # a batch holds at least one utterance per process
        long = sum(duration > limit for duration in self.durations)
        if not long:
            return
        if self.num_replicas == 1:
            logger.warning("%d of %d utterance(s) are longer than batch_seconds=%g s: each gets a batch of its own, "
                           "over the budget (kept, not dropped)", long, len(self.durations), self.batch_seconds)
        else:
            logger.warning("%d of %d utterance(s) are longer than batch_seconds=%g s / %d processes: a batch holding "
                           "one has one utterance per process, over the budget (kept, not dropped)", long,
                           len(self.durations), self.batch_seconds, self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches :meth:`__iter__` yields next (and the dataset's crops)."""
        self.epoch = int(epoch)
        if self.dataset is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch, self.seed)

    def batches(self) -> list[list[int]]:
        """This epoch's global batches (every process's share together), in the order they are used."""
        if self._drawn is None or self._drawn[0] != self.epoch:
            self._drawn = (self.epoch, self._draw())
        return [list(batch) for batch in self._drawn[1]]

    def _draw(self) -> list[list[int]]:
        """The batches of ``self.epoch`` (see the class docstring), from its own random generator."""
        durations = np.asarray(self.durations, dtype=float)
        if not self.shuffle:
            return cut_batches(np.argsort(durations, kind="stable"), durations, self.batch_size,
                               self.batch_seconds, self.num_replicas)
        rng = np.random.default_rng([self.seed, self.epoch])
        factors = 1.0 + rng.uniform(-self.jitter, self.jitter, len(durations))
        order = np.lexsort((rng.random(len(durations)), durations * factors))  # ties broken at random
        # The first batch takes between half and all of what fits in it (drawn alike for any number of
        # processes, so DDP keeps the one-process batches), and at least one utterance per process.
        fits = len(cut_batches(order, durations, self.batch_size, self.batch_seconds)[0])
        first = max(int(rng.integers((fits + 1) // 2, fits + 1)), self.num_replicas)
        batches = cut_batches(order, durations, self.batch_size, self.batch_seconds, self.num_replicas, first)
        return [batches[index] for index in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches():
            yield batch[self.rank::self.num_replicas]

    def __len__(self) -> int:
        return len(self.batches())


def check_batch_seconds(value) -> float | None:
    """``value`` as a budget in seconds (None: no budget); a clear error for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"batch_seconds must be a positive number of seconds (the padded audio of one batch), or "
                         f"null to count utterances only; got {value!r}: fix it in the config or with --batch_seconds")
    return float(value)


def cut_batches(order: Sequence[int], durations: Sequence[float], batch_size: int, batch_seconds: float | None,
                min_size: int = 1, first: int | None = None) -> list[list[int]]:
    """Cut ``order`` (indices sorted by duration) into consecutive batches, each as full as allowed.

    A batch closes when the next utterance would exceed ``batch_size`` utterances or
    ``batch_seconds`` padded seconds (its size x its longest duration), but never below
    ``min_size`` utterances; ``first`` fixes the size of the first batch instead. A last batch
    below ``min_size`` joins the one before it.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0.0
    for index in order:
        index = int(index)
        with_it = max(longest, float(durations[index]))
        if first is not None and not batches:
            full = len(current) >= first
        else:
            full = len(current) >= batch_size or (batch_seconds is not None
                                                  and (len(current) + 1) * with_it > batch_seconds)
        if full and len(current) >= min_size:
            batches.append(current)
            current, with_it = [], float(durations[index])
        current.append(index)
        longest = with_it
    if batches and len(current) < min_size:
        batches[-1].extend(current)
    elif current:
        batches.append(current)
    return batches


def padded_fraction(durations: Sequence[float], batches: Sequence[Sequence[int]]) -> float:
    """The share of padding in the padded batches: 1 - (real audio / (batch size x longest item)).

    0 means no padding at all; the closer to 0, the less compute is spent on zeros.
    """
    padded_total = real_total = 0.0
    for batch in batches:
        lengths = [durations[index] for index in batch]
        if lengths:
            padded_total += max(lengths) * len(lengths)
            real_total += sum(lengths)
    return 1.0 - real_total / padded_total if padded_total > 0 else 0.0


# ----------------------------------------------------------------------------- the whole fold


def check_fold_audio(data: FoldData, data_dir: str | Path) -> None:
    """Refuse a fold any of whose recordings stage 0 would have skipped (all zeros, NaN or infinite
    samples, truncated or unreadable: :func:`serkit.data.audio.audio_problem`), counting and naming them.

    A data directory edited or re-pointed after stage 0 can hold such files; a silent recording would
    otherwise train as a labelled example and a NaN one stop training hours in. Each file is read
    once, in blocks, before anything trains.
    """
    problems = []
    for split in SPLITS:
        for utt in getattr(data, split).utterances:
            problem = audio_problem(utt.wav)
            if problem is not None:
                problems.append(f"{utt.utt_id} ({split}): {utt.wav}: {problem}")
    if problems:
        raise DataDirError(f"{Path(data_dir) / 'wav.scp'}: {len(problems)} recording(s) of the fold cannot be trained "
                           f"on, as stage 0 would have skipped them: {'; '.join(problems[:MAX_LISTED])}"
                           f"{f'; ... ({len(problems) - MAX_LISTED} more)' if len(problems) > MAX_LISTED else ''}. "
                           "Re-run data preparation (stage 0) or remove them from the data directory")


def check_class_coverage(data: FoldData, fold_dir: str | Path, allow_missing: bool = False) -> None:
    """Every class of the fold's class list has utterances in its training and validation sets.

    A class missing from training gets an output the model never learns, yet UA averages its
    recall; missing from validation, model selection never sees it. Either way the numbers mean
    something else than they say, so the fold is refused (raise :class:`DataDirError` naming the
    classes and every class's count), or with ``allow_missing`` (the ``allow_missing_classes``
    option) trained with a warning.
    """
    problems = []
    for split in ("train", "valid"):
        counts = Counter(utt.emotion for utt in getattr(data, split).utterances)
        missing = [name for index, name in enumerate(data.classes) if counts[index] == 0]
        if missing:
            listed = ", ".join(f"{name} {counts[index]}" for index, name in enumerate(data.classes))
            problems.append(f"'{split}' has no utterance of {', '.join(missing)} ({listed})")
    if not problems:
        return
    message = f"{Path(fold_dir)}: {'; '.join(problems)}"
    if allow_missing:
        logger.warning("%s; training anyway (allow_missing_classes: True)", message)
        return
    raise DataDirError(f"{message}. Every class must be learnt and validated: re-create the "
                       "folds (stage 2) so that each split holds every class, use a class map without the rare "
                       "class, or set allow_missing_classes: True to train anyway")


def load_fold_data(data_dir: str | Path, fold_dir: str | Path, targets: TargetSet, sample_rate: int = 16000,
                   max_duration: float | None = None, features: Sequence[FeatureKind] | None = None,
                   cache_dir: str | Path | None = None, ambiguous: bool = False) -> FoldData:
    """Datasets for the train, valid and test lists of ``fold_dir``; crops (if any) apply to train only.

    ``ambiguous`` adds the training speakers' ambiguous utterances to the training set
    (:func:`load_ambiguous`); validation and test hold the fold lists' (clear) utterances only.

    ``targets`` (:meth:`serkit.targets.TargetSet.from_config`) say which files are read and which
    fields the batches carry. ``features`` (:class:`serkit.features.FeatureKind`; default the waveform) are the
    model's inputs; ``cache_dir`` caches those worth caching (:attr:`~serkit.features.FeatureKind.cached`) on disk.
    """
    fold = read_fold(fold_dir)
    splits = {split: load_utterances(data_dir, fold[split], targets) for split in SPLITS}
    extra = load_ambiguous(data_dir, fold["train"], targets) if ambiguous else []
    splits["train"] += extra
    features = list(features or [make_feature("waveform", sample_rate)])
    caches = [FeatureCache(cache_dir, feature) if cache_dir is not None and feature.cached else None
              for feature in features]
    common = {"sample_rate": sample_rate, "features": features, "caches": caches, "targets": targets}
    data = FoldData(
        train=EmotionDataset(splits["train"], max_duration=max_duration, **common),
        valid=EmotionDataset(splits["valid"], **common),
        test=EmotionDataset(splits["test"], **common),
        classes=targets.inventories()["classes"],
        targets=targets,
    )
    for split in SPLITS:
        utts = splits[split]
        logger.info("%s: %d utterances%s, %.1f h%s", split, len(utts),
                    f" ({len(extra)} ambiguous)" if split == "train" and ambiguous else "",
                    sum(utt.duration for utt in utts) / 3600, targets.describe([utt.labels for utt in utts]))
    if data.train.n_cropped:
        logger.warning("train: %d of %d utterances are longer than max_duration=%.1f s and are randomly cropped; "
                       "their sequence targets (e.g. CTC tokens) still cover the whole utterance", data.train.n_cropped, len(data.train),
                       max_duration)
    return data
