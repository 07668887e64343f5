"""Small pieces every model family shares: the input error, length masks and length conversion."""
from __future__ import annotations

import torch
from torch import Tensor

from serkit.errors import SerkitError


class ModelInputError(SerkitError):
    """Inputs the model cannot process (bad shapes or lengths, out-of-range targets...)."""


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean [B, max_len] mask, True on the first ``lengths[b]`` positions of row b."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def absolute_lengths(inputs: Tensor, relative: Tensor, what: str = "inputs") -> Tensor:
    """Lengths along dim 1 from SpeechBrain's relative lengths (fraction of the padded length).

    Computed in float64, so the sample counts of long files stay exact.
    """
    if inputs.dim() < 2:
        raise ModelInputError(f"{what} must be a [batch, time, ...] tensor, got shape {tuple(inputs.shape)}")
    batch, total = inputs.shape[:2]
    relative = torch.as_tensor(relative, device=inputs.device)
    if relative.shape != (batch,):
        raise ModelInputError(f"relative lengths must have shape [{batch}] (one per utterance), "
                              f"got {tuple(relative.shape)}")
    if not bool(torch.all((relative > 0) & (relative <= 1 + 1e-6))):
        raise ModelInputError(f"relative lengths must be in (0, 1] (SpeechBrain convention: "
                              f"length / padded length), got {relative.tolist()}")
    return torch.round(relative.double() * total).long().clamp(1, total)


def check_frame_lens(frame_lens: Tensor, batch: int, max_frames: int) -> None:
    """Raise :class:`ModelInputError` unless ``frame_lens`` is int64 [batch] with values in 1..max_frames."""
    if frame_lens.shape != (batch,) or frame_lens.dtype != torch.long:
        raise ModelInputError(f"frame_lens must be int64 [{batch}], got {frame_lens.dtype} {tuple(frame_lens.shape)}")
    if int(frame_lens.min()) < 1 or int(frame_lens.max()) > max_frames:
        raise ModelInputError(f"frame_lens must lie in 1..{max_frames} (the padded length), got {frame_lens.tolist()}")


def masked_mean(frames: Tensor, frame_lens: Tensor) -> Tensor:
    """Mean over the first ``frame_lens[b]`` frames of each row of ``frames`` [B, F, D] -> [B, D].

    ``torch.where`` rather than a product with the mask, so whatever the padding holds (even NaN or
    Inf from an upstream op) cannot leak into the mean: padding never changes an utterance's output.
    """
    keep = length_mask(frame_lens, frames.shape[1]).unsqueeze(-1)
    total = torch.where(keep, frames, torch.zeros((), dtype=frames.dtype, device=frames.device)).sum(dim=1)
    return total / frame_lens.to(total.dtype).unsqueeze(-1)
