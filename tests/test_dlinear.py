"""DLinear: the moving-average trend it splits off, within each piece's real frames."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from serkit.model.dlinear import DLinear, moving_average


def reference_trend(series: torch.Tensor, window: int) -> torch.Tensor:
    """[L, C] -> [L, C]: edge-replicated padding and an average pool (LTSF-Linear's decomposition)."""
    padded = F.pad(series.T.unsqueeze(0), (window // 2, window // 2), mode="replicate")
    return F.avg_pool1d(padded, window, stride=1)[0].T


def test_trend_is_the_replicate_padded_moving_average_of_the_real_frames():
    torch.manual_seed(0)
    frames, lens = torch.randn(2, 12, 3), torch.tensor([12, 7])
    frames[1, 7:] = 0
    trend = moving_average(frames, lens, 5)
    torch.testing.assert_close(trend[0], reference_trend(frames[0], 5))
    torch.testing.assert_close(trend[1, :7], reference_trend(frames[1, :7], 5))
    assert not trend[1, 7:].any()


def test_a_constant_series_is_all_trend():
    torch.manual_seed(0)
    net = DLinear(n_features=2, n_classes=3, piece_frames=8, out_len=4, moving_avg=3)
    frames = torch.tensor([1.5, -2.0]).expand(1, 8, 2).clone()
    lens = torch.tensor([8])
    torch.testing.assert_close(moving_average(frames, lens, 3), frames)
    remainder_part = net.map_time(net.time_map, torch.zeros_like(frames))  # the remainder map's bias only
    torch.testing.assert_close(net.project(frames, lens), net.map_time(net.trend_map, frames) + remainder_part)


def test_moving_average_window_must_be_odd():
    with pytest.raises(ValueError, match="odd"):
        DLinear(n_features=2, n_classes=3, moving_avg=4)
    net = DLinear(n_features=2, n_classes=3, moving_avg=7)
    assert DLinear(**net.config_dict()).config_dict() == net.config_dict()
