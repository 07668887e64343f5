"""Cepstral mean and variance normalisation (CMVN) statistics of a fold's training features.

:class:`FeatureStats` holds per-dimension mean/std accumulated over a fold's *training* utterances
only, so nothing about the test speaker shapes the input of the model that is scored on it.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from serkit.features.base import FeatureError


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
