"""What a frame-based emotion model returns, whatever its family (TIM-Net, STA-CRNN, ...).

One dataclass so the trainer, scoring and an optional frame-level head (the emotion-phoneme CTC head)
can consume any such family without knowing it: utterance logits for the emotion loss, and a
per-frame representation with its real length for a head that works per frame. Also the one check
of the lengths such a model receives.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from serkit.model.w2v2_mtl import ModelInputError


@dataclass
class FrameModelOutput:
    """Outputs of one batch (see the field comments for shapes)."""

    emo_logits: Tensor  # [B, C] emotion logits (log-probabilities up to a constant per row)
    frame_features: Tensor  # [B, T', D] per-frame representation; zeros beyond frame_lens
    frame_lens: Tensor  # [B] int64 real frames of frame_features per utterance


def check_frame_lens(frame_lens: Tensor, batch: int, max_frames: int) -> None:
    """Raise :class:`ModelInputError` unless ``frame_lens`` is int64 [batch] with values in 1..max_frames."""
    if frame_lens.shape != (batch,) or frame_lens.dtype != torch.long:
        raise ModelInputError(f"frame_lens must be int64 [{batch}], got {frame_lens.dtype} {tuple(frame_lens.shape)}")
    if int(frame_lens.min()) < 1 or int(frame_lens.max()) > max_frames:
        raise ModelInputError(f"frame_lens must lie in 1..{max_frames} (the padded length), got {frame_lens.tolist()}")
