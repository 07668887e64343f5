"""Class-balanced fixed-length segments of training utterances (data balancing by segment counts).

A segment-based family (one that scores an utterance as consecutive fixed-length segments, such as
VGGish over 0.96-s log-Mel segments) can train on a class-balanced set of segments without
resampling utterances: each training utterance contributes *fewer* segments when its class is
frequent and *overlapping* ones when it is rare (seed paper 002: "first and last only" for the
majority classes, an overlap of 0.48 s for the rare and 0.24 s for the rarest). A segment keeps
its utterance's label.

The class of each tier is decided by the **training fold's** class counts only: a class's share is
its count over the largest class's count, and the first rule whose ``min_share`` it reaches gives
its segments. Validation and test utterances are never segmented here (the network scores them
whole, in consecutive segments), so they stay what they are.

:class:`SegmentBalancer` turns an utterance's frames into its chosen segments placed back to back,
so a network that cuts its input into consecutive segments of the same length sees exactly those
segments (an utterance shorter than one segment stays as it is: the network zero-pads it). Use::

    balancer = SegmentBalancer.for_training(settings, feature, labels, n_frames)
    balancer.starts(n, label)            # first frames of the segments of an n-frame utterance
    balancer(frames, label)              # [k * segment, ...]: those segments back to back
    balancer.table(labels, n_frames)     # segments per class, before and after (for the log)

``settings`` is plain config data, e.g. (the paper's, :data:`PAPER_SETTINGS`)::

    segment_s: 0.96
    rules:                                   # the first rule the class's share reaches
        - {min_share: 0.75, take: ends}      # first and last segment only
        - {min_share: 0.25, overlap_s: 0.48}
        - {min_share: 0.0, overlap_s: 0.24}

``take: ends`` keeps the first and the last segment; ``take: all`` (the default) keeps every segment
at a hop of ``segment - overlap`` and one more ending at the utterance's last frame if the hop
leaves a tail. The share thresholds are ours (the paper names the tiers by its corpora's classes):
with them the paper's BAUM-1s tiers come out as it lists them.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from serkit.errors import SerkitError
from serkit.features import FeatureKind

logger = logging.getLogger(__name__)

#: The balancing of seed paper 002 (0.96-s segments for VGGish).
PAPER_SETTINGS = {"segment_s": 0.96, "rules": [{"min_share": 0.75, "take": "ends"},
                                                {"min_share": 0.25, "overlap_s": 0.48},
                                                {"min_share": 0.0, "overlap_s": 0.24}]}
TAKES = ("all", "ends")


class SegmentSettingsError(SerkitError):
    """Balancing settings that cannot be used (the message names the setting and the fix)."""


@dataclass(frozen=True)
class Rule:
    """How an utterance of a class becomes segments: every ``hop`` frames (``take="all"``), or its ends."""

    take: str
    hop: int


class SegmentBalancer:
    """Chooses the training segments of each utterance from its class (see the module docstring)."""

    def __init__(self, segment: int, rules: Mapping[int, Rule], feature: FeatureKind | None = None):
        self.segment = int(segment)
        self.rules = dict(rules)
        self.feature = feature  # the frames' kind, for :meth:`seconds`

    @classmethod
    def for_training(cls, settings: Mapping[str, Any], feature: FeatureKind, labels: Sequence[int],
                     n_classes: int) -> "SegmentBalancer":
        """The balancer of a training set whose utterances have class ``labels`` (indices < ``n_classes``);
        segment lengths in the frames of ``feature``."""
        segment_s, rules = _checked(settings)
        frames = lambda seconds: feature.n_frames(round(seconds * feature.sample_rate)) - feature.n_frames(0)
        segment = frames(segment_s)
        if segment < 1:
            raise SegmentSettingsError(f"segment_s {segment_s} is shorter than one {feature.kind} frame")
        counts = Counter(int(label) for label in labels)
        largest = max(counts.values())
        chosen = {}
        for label in range(n_classes):
            share = counts.get(label, 0) / largest
            rule = next(rule for rule in rules if share >= rule["min_share"])
            overlap = frames(float(rule.get("overlap_s", 0.0)))
            if not 0 <= overlap < segment:
                raise SegmentSettingsError(f"overlap_s {rule['overlap_s']} must be at least 0 and shorter than "
                                           f"segment_s {segment_s}")
            chosen[label] = Rule(take=rule.get("take", "all"), hop=segment - overlap)
        return cls(segment, chosen, feature)

    def starts(self, n_frames: int, label: int) -> list[int]:
        """First frames of the segments an ``n_frames``-frame utterance of class ``label`` gives."""
        last = n_frames - self.segment
        if last <= 0:
            return [0]
        rule = self.rules[int(label)]
        if rule.take == "ends":
            return [0, last]
        starts = list(range(0, last + 1, rule.hop))
        return starts if starts[-1] == last else starts + [last]

    def __call__(self, frames: Tensor, label: int) -> Tensor:
        """An utterance's frames [T, ...] -> its segments back to back [k * segment, ...] (unchanged if T <= segment)."""
        starts = self.starts(frames.shape[0], label)
        if len(starts) == 1 and frames.shape[0] <= self.segment:
            return frames
        return torch.cat([frames[start:start + self.segment] for start in starts])

    def n_frames(self, n_frames: int, label: int) -> int:
        """Frames of ``self(frames, label)`` for an ``n_frames``-frame utterance (batching uses it)."""
        return n_frames if n_frames <= self.segment else self.segment * len(self.starts(n_frames, label))

    def seconds(self, duration: float, label: int) -> float:
        """Seconds of audio the segments of a ``duration``-second utterance cover, back to back."""
        n = self.feature.n_frames(round(duration * self.feature.sample_rate))
        return duration * self.n_frames(n, label) / max(1, n)

    def table(self, labels: Sequence[int], n_frames: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Per class: (consecutive segments without balancing, segments with it), as the paper's Table 1."""
        before, after = Counter(), Counter()
        for label, n in zip(labels, n_frames):
            before[int(label)] += -(-n // self.segment)
            after[int(label)] += len(self.starts(n, label))
        return {label: (before[label], after[label]) for label in sorted(self.rules)}


def balance_training_set(dataset, settings: Mapping[str, Any], classes: Sequence[str]) -> SegmentBalancer:
    """Give a training :class:`serkit.data.dataio.EmotionDataset` (one input) a balancer from its own class
    counts (``dataset.segmenter``), and log the segments per class before and after."""
    if len(dataset.features) != 1:
        raise SegmentSettingsError(f"segment balancing cuts one input, this family has {len(dataset.features)}; "
                                   "set balance: False")
    labels = [utt.emotion for utt in dataset.utterances]
    feature = dataset.features[0]
    balancer = SegmentBalancer.for_training(settings, feature, labels, len(classes))
    n_frames = [feature.n_frames(round(utt.duration * feature.sample_rate)) for utt in dataset.utterances]
    rows = ", ".join(f"{classes[label]} {before} -> {after}"
                     for label, (before, after) in balancer.table(labels, n_frames).items())
    logger.info("train: balanced %d-frame segments per class (training counts only): %s", balancer.segment, rows)
    dataset.segmenter = balancer
    return balancer


def _checked(settings: Mapping[str, Any]) -> tuple[float, list[dict]]:
    """(segment_s, rules) of plain settings, or a :class:`SegmentSettingsError` naming what to fix."""
    if not isinstance(settings, Mapping) or "segment_s" not in settings or "rules" not in settings:
        raise SegmentSettingsError(f"balancing settings need segment_s and rules (e.g. {PAPER_SETTINGS}), got {settings!r}")
    rules = list(settings["rules"])
    for rule in rules:
        unknown = set(rule) - {"min_share", "take", "overlap_s"}
        if unknown or "min_share" not in rule or rule.get("take", "all") not in TAKES:
            raise SegmentSettingsError(f"balancing rule {rule!r}: give min_share and either take "
                                       f"({' or '.join(TAKES)}) or overlap_s")
    if not rules or min(float(rule["min_share"]) for rule in rules) > 0:
        raise SegmentSettingsError("the balancing rules must end with one of min_share 0, so every class has one")
    shares = [float(rule["min_share"]) for rule in rules]
    if shares != sorted(shares, reverse=True):
        raise SegmentSettingsError(f"list the balancing rules from the largest min_share down, got {shares}")
    return float(settings["segment_s"]), rules
