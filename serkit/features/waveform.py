"""The ``waveform`` kind: the samples themselves, for families whose network reads raw audio."""
from __future__ import annotations

from torch import Tensor

from serkit.features.base import FeatureKind, register


@register
class Waveform(FeatureKind):
    """[T] float32 samples at ``sample_rate``: one "frame" per sample; never cached (the audio is on disk)."""

    kind = "waveform"
    cached = False

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return ()

    def n_frames(self, n_samples: int) -> int:
        return int(n_samples)

    def _compute(self, waveform: Tensor) -> Tensor:
        return waveform
