"""NLinear over MFCC: one linear map over time per coefficient (LTSF-Linear, Zeng et al. 2023), as the
multi-level SER paper (seed 000; docs/papers digest, section 5) uses it as a single-level extractor.

From the paper: the utterance's normalised MFCCs are a time series of L = 300 frames (3 s) and
C = 40 elements (coefficients); each element's whole series ``X_i^1..X_i^L`` is mapped by a fully
connected layer to an n-dimensional vector, the C vectors are flattened and classified. NLinear
(LTSF's normalised variant) first subtracts the series' last value and adds it back after the map,
which removes a level shift the linear map would otherwise have to learn.

The network (:class:`LinearOverTime` holds what NLinear and DLinear share):

* the utterance in consecutive ``piece_frames``-frame pieces (:mod:`serkit.model.pieces`); a shorter
  utterance, or the last piece of a longer one, zero-padded;
* per piece and coefficient ``y_i = W (x_i - x_i^last) + b + x_i^last``, ``W`` [n, L] shared by the
  coefficients (LTSF-Linear's default, ``individual=False``);
* dropout, flatten [n * C], a linear classifier per piece; the utterance's posterior is the mean of
  its pieces' posteriors.

What the paper leaves open, and our choices ("ours:"):

* ours: pieces. The paper cuts 3-s segments; here a longer utterance is scored piece by piece and
  its pieces' posteriors averaged (as STA-CRNN's pieces), so no speech is dropped at test time.
* ours: ``x_i^last`` is the last *real* frame of a padded piece and the padding stays zero after the
  subtraction, so zero padding reads as "no change from the last frame" rather than a jump to zero.
* ours: n (``out_len``) = 96, LTSF-Linear's shortest forecast horizon; dropout 0.1 before the classifier.
* ``frame_features`` (for the shared CTC head): each piece's n x C output read as n frames of C
  values, pieces joined in time.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from serkit.model.common import ModelInputError, check_frame_lens, length_mask
from serkit.model.family import FeatureNetworkFamily
from serkit.model.pieces import average_posteriors, per_utterance, split_pieces
from serkit.model.ser_model import NetworkOutput


class LinearOverTime(nn.Module):
    """Pieces -> ``project`` ([N, piece_frames, C] -> [N, out_len, C]) -> flatten -> classifier; see the module docstring.

    Subclasses define :meth:`project` (and extend :meth:`config_dict` with their own arguments)."""

    label = "LTSF-Linear"

    def __init__(self, n_features: int, n_classes: int, piece_frames: int = 300, out_len: int = 96,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if min(n_features, n_classes, piece_frames, out_len) < 1:
            raise ValueError(f"{self.label} sizes must be positive")
        self.n_features, self.n_classes = int(n_features), int(n_classes)
        self.piece_frames, self.out_len, self.dropout_p = int(piece_frames), int(out_len), float(dropout)
        self.time_map = nn.Linear(self.piece_frames, self.out_len)
        self.dropout = nn.Dropout(self.dropout_p)
        self.classifier = nn.Linear(self.out_len * self.n_features, self.n_classes)

    @property
    def frame_dim(self) -> int:
        """Size D of each frame of ``frame_features``: the coefficients."""
        return self.n_features

    def config_dict(self) -> dict[str, Any]:
        """Plain-data constructor arguments: ``type(model)(**model.config_dict())`` rebuilds it."""
        return {"n_features": self.n_features, "n_classes": self.n_classes, "piece_frames": self.piece_frames,
                "out_len": self.out_len, "dropout": self.dropout_p}

    def map_time(self, layer: nn.Linear, series: Tensor) -> Tensor:
        """``layer`` over the time axis of each coefficient: [N, L, C] -> [N, out_len, C]."""
        return layer(series.transpose(1, 2)).transpose(1, 2)

    def project(self, frames: Tensor, lens: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, feats: Tensor, frame_lens: Tensor) -> NetworkOutput:
        """``feats`` [B, T, n_features] float, ``frame_lens`` [B] int64 real frames (padding at the end)."""
        self._check(feats, frame_lens)
        pieces = split_pieces(feats, frame_lens, self.piece_frames)
        outputs = self.project(pieces.frames, pieces.lens)  # [N, out_len, C]
        piece_logits = self.classifier(self.dropout(outputs.flatten(1)))
        frames = per_utterance(outputs, pieces).flatten(1, 2)  # [B, most * out_len, C]
        return NetworkOutput(emo_logits=average_posteriors(piece_logits, pieces), frame_features=frames,
                             frame_lens=pieces.counts * self.out_len)

    def _check(self, feats: Tensor, frame_lens: Tensor) -> None:
        if feats.dim() != 3 or feats.shape[-1] != self.n_features:
            raise ModelInputError(f"{self.label} expects features [batch, frames, {self.n_features}], got "
                                  f"{tuple(feats.shape)}; check the feature spec (n_mfcc) against the model config")
        check_frame_lens(frame_lens, feats.shape[0], feats.shape[1])


class NLinear(LinearOverTime):
    """``y = W (x - x_last) + b + x_last`` per coefficient, over each piece's real frames."""

    label = "NLinear"

    def project(self, frames: Tensor, lens: Tensor) -> Tensor:
        last = frames[torch.arange(len(lens), device=frames.device), lens - 1].unsqueeze(1)  # [N, 1, C]
        real = length_mask(lens, frames.shape[1]).unsqueeze(-1)
        change = torch.where(real, frames - last, torch.zeros((), dtype=frames.dtype, device=frames.device))
        return self.map_time(self.time_map, change) + last


class NLinearFamily(FeatureNetworkFamily):
    """NLinear (LTSF-Linear) over MFCC pieces, the multi-level SER paper's single-level extractor."""

    name = "nlinear"
    network_class = NLinear
    input_size_argument = "n_features"
