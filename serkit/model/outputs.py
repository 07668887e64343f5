"""What a frame-based emotion model returns, whatever its family (TIM-Net, STA-CRNN, ...).

One dataclass so the trainer, scoring and an optional frame-level head (the emotion-phoneme CTC head)
can consume any such family without knowing it: utterance logits for the emotion loss, and a
per-frame representation with its real length for a head that works per frame.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class FrameModelOutput:
    """Outputs of one batch (see the field comments for shapes)."""

    emo_logits: Tensor  # [B, C] emotion logits (log-probabilities up to a constant per row)
    frame_features: Tensor  # [B, T', D] per-frame representation; zeros beyond frame_lens
    frame_lens: Tensor  # [B] int64 real frames of frame_features per utterance
