"""NLinear over MFCC pieces: the level shift it removes, and the pieces it scores an utterance in."""
from __future__ import annotations

import torch

from serkit.model.nlinear import NLinear
from serkit.model.pieces import average_posteriors, per_utterance, split_pieces


def test_pieces_zero_pad_each_utterance_and_keep_time_order():
    feats = torch.arange(2 * 7 * 2, dtype=torch.float32).view(2, 7, 2) + 1
    pieces = split_pieces(feats, torch.tensor([7, 3]), size=3)
    assert pieces.counts.tolist() == [3, 1] and pieces.lens.tolist() == [3, 3, 1, 3]
    assert pieces.owner.tolist() == [0, 0, 0, 1]
    torch.testing.assert_close(pieces.frames[1], feats[0, 3:6])
    torch.testing.assert_close(pieces.frames[2], torch.cat([feats[0, 6:7], torch.zeros(2, 2)]))
    torch.testing.assert_close(pieces.frames[3], feats[1, :3])
    table = per_utterance(pieces.lens.float(), pieces)
    assert table.tolist() == [[3.0, 3.0, 1.0], [3.0, 0.0, 0.0]]


def test_utterance_posterior_is_the_mean_of_its_pieces_posteriors():
    pieces = split_pieces(torch.zeros(2, 5, 1), torch.tensor([5, 2]), size=2)
    logits = torch.randn(len(pieces.owner), 4)
    posteriors = average_posteriors(logits, pieces).exp()
    torch.testing.assert_close(posteriors[0], logits[:3].softmax(-1).mean(0))
    torch.testing.assert_close(posteriors[1], logits[3].softmax(-1))


def test_nlinear_follows_a_level_shift_of_a_coefficient():
    """NLinear maps the change from the last real frame, so adding c to a coefficient adds c to its outputs."""
    torch.manual_seed(0)
    net = NLinear(n_features=3, n_classes=4, piece_frames=10, out_len=5)
    frames, lens = torch.randn(2, 10, 3), torch.tensor([10, 6])
    frames[1, 6:] = 0  # a padded last piece
    shift = torch.tensor([2.0, -1.0, 0.5])
    shifted = frames + shift * (torch.arange(10).unsqueeze(1) < lens.view(2, 1, 1)).float()
    torch.testing.assert_close(net.project(shifted, lens), net.project(frames, lens) + shift)


def test_nlinear_ignores_what_follows_the_last_real_frame():
    torch.manual_seed(0)
    net = NLinear(n_features=3, n_classes=4, piece_frames=10, out_len=5).eval()
    feats = torch.randn(1, 7, 3)
    padded = torch.cat([feats, 100 * torch.randn(1, 5, 3)], dim=1)
    alone = net(feats, torch.tensor([7]))
    torch.testing.assert_close(net(padded, torch.tensor([7])).emo_logits, alone.emo_logits)
    assert alone.frame_features.shape == (1, 5, 3) and alone.frame_lens.tolist() == [5]
