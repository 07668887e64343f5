"""The ``egemaps`` kind: the 88 eGeMAPSv02 functionals of an utterance, the input of the classical floor family.

eGeMAPSv02 (Eyben et al. 2016) is computed by openSMILE's own implementation through the
``opensmile`` package, imported on first use: only the floor family needs it. The functionals are
one 88-dimensional "frame" per utterance.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from serkit.features.base import FeatureError, FeatureKind, check_waveform, register

N_FUNCTIONALS = 88  # eGeMAPSv02


@lru_cache(maxsize=1)
def _smile():
    """One openSMILE extractor per process (building it parses the config, ~0.1 s)."""
    import opensmile  # an optional heavy dependency: loaded only when eGeMAPS is computed

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
    waveform = check_waveform(waveform)
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


@register
class EGeMAPS(FeatureKind):
    """``egemaps``: float64 [1, 88], one row of functionals per utterance (:func:`egemaps_functionals`)."""

    kind = "egemaps"

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (N_FUNCTIONALS,)

    def n_frames(self, n_samples: int) -> int:
        return 1

    def _compute(self, waveform: Tensor) -> Tensor:
        return egemaps_functionals(waveform, self.sample_rate)
