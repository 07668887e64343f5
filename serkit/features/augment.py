"""Training augmentation through SpeechBrain's ``speechbrain.augment`` (the ``augment:`` config key).

Speakers unseen in training differ in speaking rate, channel and noise; augmentation shows the model
more of that variety. Parts, each optional (docs/models.md, "Generalising across speakers")::

    augment:
        speed: [90, 100, 110]                   # SpeedPerturb: one speed (%) drawn per utterance
        noise: {snr_low: 10, snr_high: 30, colour: white}   # AddNoise without a noise corpus:
                                                # white (torch.randn_like) or pink noise at a random SNR (dB)
        time_mask: {drop_count_low: 1, drop_count_high: 2, drop_length_low: 5, drop_length_high: 20}
        freq_mask: {drop_count_low: 1, drop_count_high: 2, drop_length_low: 2, drop_length_high: 8}

A part left out (or null) is off; ``{}`` takes the SpeechBrain class's defaults.
``speed`` and ``noise`` change the waveform (``SpeedPerturb``, ``AddNoise``), before the features are
computed; ``time_mask`` and ``freq_mask`` are SpecAugment-style masks (``SpectrogramDrop`` along time,
frames, and along the feature's last axis, Mel bands or coefficients) of a feature family's input.
A masked stretch takes the utterance's mean of that feature dimension (a "neutral" frame), on the
features after any per-speaker normalisation and before the model's own normalisation.

Only the *training* set is augmented: validation and test inputs never change. Each training item is
augmented with torch's random generator seeded from (seed, epoch, item) inside
:func:`torch.random.fork_rng`, so the draws depend on nothing else (not on loader workers, not on the
batch), repeat exactly in a resumed run, and leave the global generator (dropout) untouched. A
feature family whose waveform is augmented computes the training features on the fly (the feature
cache holds clean features only), which costs one feature extraction per utterance and epoch.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from speechbrain.augment.freq_domain import SpectrogramDrop
from speechbrain.augment.time_domain import AddNoise, SpeedPerturb, pink_noise_like

from serkit.errors import SerkitError

PARTS = ("speed", "noise", "time_mask", "freq_mask")
#: Inputs without a time-by-feature layout that masks could act on.
UNMASKABLE = ("waveform", "egemaps")
NOISE_COLOURS = {"white": torch.randn_like, "pink": pink_noise_like}


class AugmentError(SerkitError):
    """An ``augment:`` setting that cannot be used."""


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The torch seed of one training item in one epoch (a function of these three numbers only)."""
    return int(np.random.default_rng([int(seed), int(epoch), int(index), 0xA06]).integers(2**62))


class Augmenter:
    """The configured ``speechbrain.augment`` modules, applied to one training item at a time."""

    def __init__(self, config: Mapping[str, Any], sample_rate: int, feature_kinds: str | Sequence[str]):
        unknown = sorted(set(config) - set(PARTS))
        if unknown:
            raise AugmentError(f"augment: unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
        self.waveform_parts = []
        try:
            if config.get("speed"):
                self.waveform_parts.append(SpeedPerturb(orig_freq=int(sample_rate), speeds=list(config["speed"])))
            if config.get("noise") is not None:  # {} = AddNoise's defaults, white noise
                noise = dict(config["noise"])
                colour = noise.pop("colour", "white")
                if colour not in NOISE_COLOURS:
                    raise AugmentError(f"augment.noise.colour must be one of {', '.join(NOISE_COLOURS)}, got {colour!r}")
                self.waveform_parts.append(_Noise(AddNoise(noise_funct=NOISE_COLOURS[colour], **noise)))
            self.masks = [SpectrogramDrop(dim=dim, replace="zeros", **dict(config[name]))
                          for name, dim in (("time_mask", 1), ("freq_mask", 2)) if config.get(name) is not None]
        except (TypeError, ValueError) as error:
            raise AugmentError(f"augment: {error}") from None
        self.kinds = [feature_kinds] if isinstance(feature_kinds, str) else list(feature_kinds)
        if self.masks and not any(kind not in UNMASKABLE for kind in self.kinds):
            raise AugmentError(f"augment: time_mask / freq_mask act on spectral features; this family reads "
                               f"{' + '.join(map(repr, self.kinds))} (use speed / noise)")
        if self.waveform_parts and "ssl_layers" in self.kinds:
            raise AugmentError("augment: speed / noise would recompute the frozen encoder's cached layers every "
                               "epoch; use time_mask / freq_mask with ssl_probe")

    def __call__(self, dataset, index: int, seed: int, epoch: int) -> list[torch.Tensor]:
        """Every input of training item ``index`` of ``dataset`` (a :class:`serkit.data.dataio.EmotionDataset`),
        augmented. The generator is re-seeded for each input, so all of them are computed from the same
        perturbed waveform (same speed, same noise); masks touch the spectral inputs only."""
        signals = []
        for which, kind in enumerate(self.kinds):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(item_seed(seed, epoch, index))
                transform = self.augment_waveform if self.waveform_parts else None
                feats = dataset.inputs(index, transform=transform, which=which)
                signals.append(self.mask(feats) if self.masks and kind not in UNMASKABLE else feats)
        return signals

    def augment_waveform(self, waveform: torch.Tensor) -> torch.Tensor:
        """Speed and noise on a mono [T] waveform."""
        batch = waveform.unsqueeze(0)
        for part in self.waveform_parts:
            batch = part(batch)
        return batch[0]

    def mask(self, feats: torch.Tensor) -> torch.Tensor:
        """SpecAugment-style masks on features [frames, ..., F]; masked cells take the utterance's mean."""
        keep = torch.ones(1, feats.shape[0], feats.shape[-1])
        for mask in self.masks:
            keep = mask(keep)
        keep = keep[0].bool().view(feats.shape[0], *([1] * (feats.dim() - 2)), feats.shape[-1])
        return torch.where(keep, feats, feats.mean(dim=0, keepdim=True).to(feats.dtype))


class _Noise(torch.nn.Module):
    """``AddNoise`` on a batch of whole (unpadded) waveforms."""

    def __init__(self, add_noise: AddNoise):
        super().__init__()
        self.add_noise = add_noise

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.add_noise(batch, torch.ones(batch.shape[0]))


def make_augmenter(hparams: Mapping, feature_kinds: str | Sequence[str]) -> Augmenter | None:
    """The config's augmenter, or None when ``augment`` is null or empty."""
    config = hparams.get("augment")
    if not config:
        return None
    if not isinstance(config, Mapping):
        raise AugmentError(f"augment must be a mapping of parts ({', '.join(PARTS)}) or null, got {config!r}")
    return Augmenter(config, int(hparams.get("sample_rate", 16000)), feature_kinds)
