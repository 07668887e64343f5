"""Fixed-length pieces of padded frame sequences, for networks that score an utterance piece by piece.

Several families see an utterance as consecutive fixed-length pieces (NLinear and DLinear over
300-frame MFCC pieces, VGGish over 96-frame log-Mel segments): a shorter utterance, or the last piece
of a longer one, is zero-padded to the piece length. :func:`split_pieces` cuts a padded batch into
all its utterances' pieces as one batch, so the piece network runs once; :func:`per_utterance`
gathers per-piece results back into a padded [utterance, piece, ...] table and
:func:`average_posteriors` turns piece logits into one utterance decision. A piece's content never
depends on the batch it came in (the frames after an utterance's end are zeroed), so an utterance's
result does not depend on its batch neighbours.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from serkit.model.common import length_mask


@dataclass
class Pieces:
    """All pieces of a batch, utterance-major and in time order."""

    frames: Tensor  # [N, size, ...] zero after each piece's real frames
    lens: Tensor  # [N] real frames per piece (size, except an utterance's last piece)
    owner: Tensor  # [N] the utterance each piece belongs to
    counts: Tensor  # [B] pieces per utterance (at least 1)

    @property
    def exists(self) -> Tensor:
        """[B, most] True where utterance b has a piece k."""
        most = int(self.counts.max())
        return torch.arange(most, device=self.counts.device).unsqueeze(0) < self.counts.unsqueeze(1)


def split_pieces(feats: Tensor, frame_lens: Tensor, size: int) -> Pieces:
    """Cut ``feats`` [B, T, ...] (real frames ``frame_lens`` [B]) into consecutive ``size``-frame pieces."""
    counts = (frame_lens + size - 1) // size
    most = int(counts.max())
    total = most * size
    tail = [0, 0] * (feats.dim() - 2)
    feats = F.pad(feats[:, :total], (*tail, 0, max(0, total - feats.shape[1])))
    keep = length_mask(frame_lens, total).view(*feats.shape[:2], *([1] * (feats.dim() - 2)))
    feats = torch.where(keep, feats, torch.zeros((), dtype=feats.dtype, device=feats.device))
    exists = torch.arange(most, device=feats.device).unsqueeze(0) < counts.unsqueeze(1)
    starts = torch.arange(most, device=feats.device) * size
    lens = (frame_lens.unsqueeze(1) - starts).clamp(0, size)[exists]
    owner = torch.arange(len(frame_lens), device=feats.device).unsqueeze(1).expand_as(exists)[exists]
    frames = feats.view(len(frame_lens), most, size, *feats.shape[2:])[exists]
    return Pieces(frames=frames, lens=lens, owner=owner, counts=counts)


def per_utterance(values: Tensor, pieces: Pieces) -> Tensor:
    """Per-piece ``values`` [N, ...] as a padded table [B, most, ...] (zeros where a piece does not exist)."""
    exists = pieces.exists
    table = values.new_zeros(*exists.shape, *values.shape[1:])
    table[exists] = values
    return table


def average_posteriors(piece_logits: Tensor, pieces: Pieces) -> Tensor:
    """``log(mean_k softmax(piece_logits_k))`` per utterance: [N, C] -> [B, C].

    ``softmax`` of the result is the mean piece posterior, so cross-entropy on it trains the utterance
    decision itself."""
    table = per_utterance(F.log_softmax(piece_logits, dim=-1), pieces)
    table = table.masked_fill(~pieces.exists.unsqueeze(-1), float("-inf"))
    return torch.logsumexp(table, dim=1) - torch.log(pieces.counts.to(table.dtype)).unsqueeze(1)
