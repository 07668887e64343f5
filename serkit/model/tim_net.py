"""TIM-Net: temporal-aware bi-directional multi-scale network over MFCC frames (Ye et al., ICASSP 2023).

The network, as in the paper and the authors' released (Keras) code:

* a 1x1 convolution projects the ``n_features`` MFCCs to ``n_filters`` channels, one per direction;
* ``n_blocks`` temporal-aware blocks (TAB) per direction; block ``j`` (j = 1..n) uses dilation
  ``2^(j-1)``. A block is two [causal dilated conv -> batch norm -> ReLU -> spatial dropout] layers
  whose output, through a sigmoid, gates the block input: ``F_{j+1} = F_j * sigmoid(layers(F_j))``;
* the backward branch is a second stack (same shape, its own weights, as in the released code) run
  on the time-reversed input, giving ``B_j``;
* per scale ``g_j = GAP_t(F_j + B_j)``, the time average of the two branches after block j;
* dynamic fusion ``g = sum_j w_j g_j`` with unconstrained learnable ``w_j`` initialised U(-0.05, 0.05)
  (Keras' ``uniform`` initialiser, as released), then one linear classifier.

What the papers leave open or we change, and why ("ours:"):

* ours: padding. The released code pads every signal to one fixed length and reverses the padded
  sequence. Here each utterance is reversed *within its real length* (padding stays at the end), the
  batch-norm statistics and the time average use real frames only (:class:`MaskedBatchNorm1d`), so
  an utterance's logits and its real frames' features do not depend on how much padding follows it
  or what the padding holds -- in training and in eval mode (dropout masks are drawn per utterance and
  channel, so the same random state gives the same masks whatever the length). Batch statistics of
  course still couple the utterances of one training batch, as in any batch-normalised network.
* ours: torch's default initialisation (Kaiming-uniform) instead of Keras' Glorot-uniform, and
  batch-norm momentum/eps 0.1/1e-5 instead of Keras' 0.01/1e-3: the running statistics then settle
  within the few hundred steps of a short CPU run.
* ``frame_features`` (for a frame-level head such as the emotion-phoneme CTC head): the last forward
  block's output and the last backward block's output realigned to forward time, concatenated, so
  each frame sees its past through one half and its future through the other.

Causality: in eval mode the forward branch's output at frame t depends on input frames <= t only and
the backward branch's (realigned) output on frames >= t only. The receptive field of each branch is
``1 + 2 (kernel_size - 1) (2^n_blocks - 1)`` frames.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from serkit.model.common import ModelInputError, check_frame_lens, length_mask
from serkit.model.family import FeatureNetworkFamily
from serkit.model.ser_model import NetworkOutput


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """Batch norm over [B, C, T] whose statistics (batch and running) come from the real frames only.

    The real frames of the batch are gathered into one [1, C, N] sequence and normalised by
    :class:`torch.nn.BatchNorm1d` itself (same parameters, buffers and state-dict keys); padded frames
    get zeros. Gathering along the time axis keeps the fast channels-first batch-norm kernel (an
    [N, C] layout was several times slower on CPU).
    """

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # x [B, C, T], mask [B, T] bool
        batch, channels, steps = x.shape
        real = mask.reshape(-1).nonzero().squeeze(1)
        flat = x.transpose(0, 1).reshape(channels, batch * steps)
        normed = super().forward(flat.index_select(1, real).unsqueeze(0)).squeeze(0)
        out = flat.new_zeros(channels, batch * steps).index_copy(1, real, normed)
        return out.view(channels, batch, steps).transpose(0, 1)


class CausalConv1d(nn.Conv1d):
    """A dilated 1-D convolution padded on the left only: output frame t sees input frames <= t."""

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__(channels, channels, kernel_size, dilation=dilation)
        self.left_pad = (kernel_size - 1) * dilation

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.left_pad, 0)))


class TemporalAwareBlock(nn.Module):
    """One TAB: ``x * sigmoid(layer2(layer1(x)))``, each layer = causal conv, masked BN, ReLU, spatial dropout."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = CausalConv1d(channels, kernel_size, dilation)
        self.norm1 = MaskedBatchNorm1d(channels)
        self.conv2 = CausalConv1d(channels, kernel_size, dilation)
        self.norm2 = MaskedBatchNorm1d(channels)
        self.dropout = nn.Dropout1d(dropout)  # spatial dropout: whole channels of an utterance

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.dropout(F.relu(self.norm1(self.conv1(x), mask)))
        h = self.dropout(F.relu(self.norm2(self.conv2(h), mask)))
        return x * torch.sigmoid(h)


def reverse_within(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row of ``x`` [B, T, ...] in time within its first ``lengths[b]`` frames; padding stays put."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    last = (lengths.to(x.device) - 1).unsqueeze(1)
    index = torch.where(steps <= last, last - steps, steps)  # [B, T]
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class TIMNet(nn.Module):
    """TIM-Net over [B, T, n_features] frames (MFCCs in the paper); see the module docstring."""

    def __init__(self, n_features: int, n_classes: int, n_filters: int = 39, kernel_size: int = 2,
                 n_blocks: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        if min(n_features, n_classes, n_filters, kernel_size, n_blocks) < 1:
            raise ValueError("TIMNet sizes must be positive")
        self.n_features, self.n_classes, self.n_filters = n_features, n_classes, n_filters
        self.kernel_size, self.n_blocks, self.dropout = kernel_size, n_blocks, dropout
        self.forward_in = nn.Conv1d(n_features, n_filters, 1)
        self.backward_in = nn.Conv1d(n_features, n_filters, 1)
        self.forward_blocks = self._stack()
        self.backward_blocks = self._stack()
        self.fusion_weights = nn.Parameter(torch.empty(n_blocks).uniform_(-0.05, 0.05))
        self.classifier = nn.Linear(n_filters, n_classes)

    def _stack(self) -> nn.ModuleList:
        return nn.ModuleList(TemporalAwareBlock(self.n_filters, self.kernel_size, 2 ** j, self.dropout)
                             for j in range(self.n_blocks))

    @property
    def frame_dim(self) -> int:
        """Size D of each frame of ``frame_features``."""
        return 2 * self.n_filters

    @property
    def receptive_field(self) -> int:
        """Input frames one output frame of a branch can see."""
        return 1 + 2 * (self.kernel_size - 1) * (2 ** self.n_blocks - 1)

    def config_dict(self) -> dict[str, Any]:
        """Plain-data constructor arguments: ``TIMNet(**model.config_dict())`` rebuilds it."""
        return {"n_features": self.n_features, "n_classes": self.n_classes, "n_filters": self.n_filters,
                "kernel_size": self.kernel_size, "n_blocks": self.n_blocks, "dropout": self.dropout}

    def forward(self, feats: Tensor, frame_lens: Tensor) -> NetworkOutput:
        """``feats`` [B, T, n_features] float, ``frame_lens`` [B] int64 real frames (padding at the end)."""
        self._check(feats, frame_lens)
        mask = length_mask(frame_lens, feats.shape[1])
        counts = frame_lens.to(feats.dtype).unsqueeze(1)
        fwd = self.forward_in(feats.transpose(1, 2))  # [B, C, T]
        bwd = self.backward_in(reverse_within(feats, frame_lens).transpose(1, 2))
        scales = []
        for forward_block, backward_block in zip(self.forward_blocks, self.backward_blocks):
            fwd, bwd = forward_block(fwd, mask), backward_block(bwd, mask)
            both = (fwd + bwd).masked_fill(~mask.unsqueeze(1), 0.0)
            scales.append(both.sum(dim=2) / counts)  # g_j: [B, C]
        fused = torch.stack(scales, dim=-1) @ self.fusion_weights  # [B, C]
        frames = torch.cat([fwd.transpose(1, 2), reverse_within(bwd.transpose(1, 2), frame_lens)], dim=-1)
        frames = frames.masked_fill(~mask.unsqueeze(-1), 0.0)
        return NetworkOutput(emo_logits=self.classifier(fused), frame_features=frames, frame_lens=frame_lens)

    def _check(self, feats: Tensor, frame_lens: Tensor) -> None:
        if feats.dim() != 3 or feats.shape[-1] != self.n_features:
            raise ModelInputError(f"TIM-Net expects features [batch, frames, {self.n_features}], got "
                                  f"{tuple(feats.shape)}; check the feature spec (n_mfcc) against the model config")
        check_frame_lens(frame_lens, feats.shape[0], feats.shape[1])


class TIMNetFamily(FeatureNetworkFamily):
    """TIM-Net (Ye et al. 2023) over MFCC frames; ``mtl_lambda`` adds the emotion-phoneme CTC head over
    its frame features (forward and time-aligned backward branch outputs)."""

    name = "tim_net"
    options = ("mtl_lambda",)
    network_class = TIMNet
    input_size_argument = "n_features"
