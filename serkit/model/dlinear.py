"""DLinear over MFCC: a moving-average trend and its remainder, each mapped linearly over time
(LTSF-Linear, Zeng et al. 2023), the multi-level SER paper's second linear extractor (seed 000;
docs/papers digest, section 5).

From the paper: each coefficient's series is padded with its first and last ``w`` values and
average-pooled with a window of ``w``, giving the trend ``T``; the remainder is ``R = X - T``. Each
part is mapped over time by its own linear layer to n values, the two results are added, and the
C x n values are flattened and classified -- the pieces, classifier and frame features are NLinear's
(:class:`serkit.model.nlinear.LinearOverTime`, whose docstring lists the choices both share).

Ours: ``w`` (``moving_avg``) = 25, LTSF-Linear's default kernel (the paper gives none), and it must
be odd so the average is centred. In a zero-padded piece the trend is taken over the real frames
only (their edges repeated, as the paper pads the series' ends) and both parts are zero on the padding.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from serkit.model.common import length_mask
from serkit.model.family import FeatureNetworkFamily
from serkit.model.nlinear import LinearOverTime


def moving_average(frames: Tensor, lens: Tensor, window: int) -> Tensor:
    """Centred ``window``-frame mean of each series of ``frames`` [N, L, C] over its first ``lens[n]``
    frames, the edge frames repeated beyond them; zero after ``lens[n]``."""
    steps = torch.arange(frames.shape[1], device=frames.device)
    offsets = torch.arange(window, device=frames.device) - window // 2
    index = (steps.view(1, -1, 1) + offsets).clamp(min=0)  # [1, L, w]
    index = torch.minimum(index, (lens - 1).view(-1, 1, 1))  # [N, L, w]
    gathered = frames.gather(1, index.flatten(1).unsqueeze(-1).expand(-1, -1, frames.shape[2]))
    trend = gathered.view(*index.shape, frames.shape[2]).mean(dim=2)
    real = length_mask(lens, frames.shape[1]).unsqueeze(-1)
    return torch.where(real, trend, torch.zeros((), dtype=frames.dtype, device=frames.device))


class DLinear(LinearOverTime):
    """``y = W_t trend(x) + W_r (x - trend(x))`` per coefficient; see the module docstring."""

    label = "DLinear"

    def __init__(self, n_features: int, n_classes: int, piece_frames: int = 300, out_len: int = 96,
                 dropout: float = 0.1, moving_avg: int = 25) -> None:
        super().__init__(n_features, n_classes, piece_frames, out_len, dropout)
        if moving_avg < 1 or moving_avg % 2 == 0:
            raise ValueError(f"DLinear: moving_avg must be a positive odd number of frames, got {moving_avg}")
        self.moving_avg = int(moving_avg)
        self.trend_map = nn.Linear(self.piece_frames, self.out_len)  # time_map (the parent's) maps the remainder

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "moving_avg": self.moving_avg}

    def project(self, frames: Tensor, lens: Tensor) -> Tensor:
        trend = moving_average(frames, lens, self.moving_avg)
        return self.map_time(self.trend_map, trend) + self.map_time(self.time_map, frames - trend)


class DLinearFamily(FeatureNetworkFamily):
    """DLinear (LTSF-Linear) over MFCC pieces, the multi-level SER paper's single-level extractor."""

    name = "dlinear"
    network_class = DLinear
    input_size_argument = "n_features"
