"""Tests of TIM-Net (serkit.model.tim_net): parameter count, dilated causal blocks, the backward branch
on reversed time, padding invariance, learned multi-scale fusion, and a small learning run."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from serkit.model.tim_net import MaskedBatchNorm1d, TIMNet, reverse_within
from serkit.model.w2v2_mtl import ModelInputError


def expected_params(n_features: int, n_classes: int, filters: int, kernel: int, blocks: int) -> int:
    """Hand count: per direction a 1x1 input conv, and per block two (conv + bias) and two BN (gamma, beta);
    then one fusion weight per block and the linear classifier."""
    projection = n_features * filters + filters
    block = 2 * (filters * filters * kernel + filters) + 2 * (2 * filters)
    return 2 * projection + 2 * blocks * block + blocks + filters * n_classes + n_classes


def padded(lengths: list[int], n_features: int, total: int, seed: int = 0, garbage: float = 100.0):
    """Random features [B, total, F] whose frames beyond each length hold large garbage."""
    gen = torch.Generator().manual_seed(seed)
    feats = garbage * torch.randn(len(lengths), total, n_features, generator=gen)
    real = torch.randn(len(lengths), max(lengths), n_features, generator=torch.Generator().manual_seed(seed + 1))
    for row, length in enumerate(lengths):
        feats[row, :length] = real[row, :length]
    return feats, torch.tensor(lengths)


def small(**overrides) -> TIMNet:
    torch.manual_seed(0)
    settings = dict(n_features=5, n_classes=3, n_filters=6, kernel_size=2, n_blocks=3, dropout=0.0)
    return TIMNet(**{**settings, **overrides})


def test_shapes_and_parameter_count():
    model = TIMNet(39, 4)  # 39 MFCCs, 4 classes, the released defaults (39 filters, kernel 2, 8 blocks)
    params = sum(p.numel() for p in model.parameters())
    print(f"TIM-Net params: 8 blocks {params}, 10 blocks {sum(p.numel() for p in TIMNet(39, 4, n_blocks=10).parameters())}")
    assert params == expected_params(39, 4, 39, 2, 8) == 104_376
    assert sum(p.numel() for p in TIMNet(39, 4, n_blocks=10).parameters()) == 129_650
    feats, lens = padded([30, 12], 39, 30)
    out = model(feats, lens)
    assert out.emo_logits.shape == (2, 4)
    assert out.frame_features.shape == (2, 30, model.frame_dim) == (2, 30, 78)
    assert torch.equal(out.frame_lens, lens)
    assert (out.frame_features[1, 12:] == 0).all()


def test_reverse_within_keeps_padding_at_the_end():
    x = torch.tensor([[1, 2, 3, 9, 9], [4, 5, 6, 7, 8]]).unsqueeze(-1)
    assert reverse_within(x, torch.tensor([3, 5])).squeeze(-1).tolist() == [[3, 2, 1, 9, 9], [8, 7, 6, 5, 4]]


def test_dilations_double_and_branches_are_causal_with_the_expected_receptive_field():
    model = small(n_filters=16).eval()  # enough channels that no frame's every path hits a dead ReLU
    for blocks in (model.forward_blocks, model.backward_blocks):
        assert [b.conv1.dilation[0] for b in blocks] == [b.conv2.dilation[0] for b in blocks] == [1, 2, 4]
    field = model.receptive_field
    assert field == 1 + 2 * (1 + 2 + 4)
    length, t = 36, 25
    feats = torch.randn(1, length, 5, requires_grad=True)
    out = model(feats, torch.tensor([length]))
    half = model.n_filters
    (grad_fwd,) = torch.autograd.grad(out.frame_features[0, t, :half].sum(), feats, retain_graph=True)
    (grad_bwd,) = torch.autograd.grad(out.frame_features[0, t, half:].sum(), feats)
    seen_fwd = grad_fwd[0].abs().sum(dim=1) > 0
    seen_bwd = grad_bwd[0].abs().sum(dim=1) > 0
    # forward branch: exactly the `field` frames ending at t; backward branch: those starting at t
    assert seen_fwd.nonzero().squeeze(1).tolist() == list(range(t - field + 1, t + 1))
    assert seen_bwd.nonzero().squeeze(1).tolist() == list(range(t, length))
    assert t + field - 1 >= length  # (the backward field is clipped by the utterance end here)
    # so changing a later frame does not change earlier forward outputs
    changed = feats.detach().clone()
    changed[0, t] += 5.0
    again = model(changed, torch.tensor([length])).frame_features
    torch.testing.assert_close(again[0, :t, :half], out.frame_features[0, :t, :half].detach())
    assert not torch.allclose(again[0, t, :half], out.frame_features[0, t, :half].detach())


def test_backward_branch_is_the_forward_stack_on_time_reversed_input():
    """With the backward weights set equal to the forward ones, the backward half of the frame features
    of x is the (realigned) forward half for x reversed within each length, and the logits agree."""
    model = small().eval()
    model.backward_in.load_state_dict(model.forward_in.state_dict())
    model.backward_blocks.load_state_dict(model.forward_blocks.state_dict())
    feats, lens = padded([20, 13, 7], 5, 20)
    out = model(feats, lens)
    mirrored = model(reverse_within(feats, lens), lens)
    half = model.n_filters
    torch.testing.assert_close(reverse_within(out.frame_features[..., half:], lens), mirrored.frame_features[..., :half])
    torch.testing.assert_close(out.emo_logits, mirrored.emo_logits)


@pytest.mark.parametrize("training", [True, False])
def test_padding_does_not_change_outputs(training):
    """Claim (module docstring): logits, real frames' features and the batch-norm running statistics do
    not depend on the amount or content of padding, in training (same random state) and in eval mode."""
    model = small(dropout=0.3).train(training)
    twin = copy.deepcopy(model)
    short, lens = padded([16, 25, 9], 5, 25, seed=3, garbage=1.0)
    long = torch.cat([short, 1e3 * torch.randn(3, 14, 5)], dim=1)
    long[0, 16:25] = -7.0  # different garbage inside the shorter padding too
    torch.manual_seed(11)
    a = model(short, lens)
    torch.manual_seed(11)
    b = twin(long, lens)
    torch.testing.assert_close(a.emo_logits, b.emo_logits)
    torch.testing.assert_close(a.frame_features, b.frame_features[:, :25])
    assert (b.frame_features[:, 25:] == 0).all()
    torch.testing.assert_close(model.forward_blocks[0].norm1.running_mean, twin.forward_blocks[0].norm1.running_mean)
    # and the claim is not vacuous: a plain batch norm over the padded tensor would see the garbage
    plain = torch.nn.BatchNorm1d(5)
    assert not torch.allclose(plain(short.transpose(1, 2))[0, :, :9], plain(long.transpose(1, 2))[0, :, :9])


def test_masked_batch_norm_equals_batch_norm_over_real_frames():
    norm = MaskedBatchNorm1d(4)
    x, lens = padded([6, 3], 4, 6, garbage=50.0)
    mask = torch.arange(6).unsqueeze(0) < lens.unsqueeze(1)
    out = norm(x.transpose(1, 2), mask).transpose(1, 2)
    real = torch.cat([x[0, :6], x[1, :3]])
    torch.testing.assert_close(torch.cat([out[0, :6], out[1, :3]]), F.batch_norm(real, None, None, training=True))
    assert (out[1, 3:] == 0).all()


def test_fusion_weights_are_learned():
    model = small(n_blocks=4)
    feats, lens = padded([18, 11, 15, 9], 5, 18)
    labels = torch.tensor([0, 1, 2, 0])
    before = model.fusion_weights.detach().clone()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = F.cross_entropy(model(feats, lens).emo_logits, labels)
    loss.backward()
    assert model.fusion_weights.grad.shape == (4,)
    assert (model.fusion_weights.grad.abs() > 0).all()  # every scale reaches the decision
    optimiser.step()
    assert (model.fusion_weights.detach() != before).all()


def test_overfits_a_few_random_utterances():
    torch.manual_seed(0)
    lengths = [22, 30, 17, 40, 25, 33, 19, 28]
    feats, lens = padded(lengths, 13, 40, seed=7, garbage=0.0)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    model = TIMNet(13, 4, n_filters=16, n_blocks=4, dropout=0.0)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        optimiser.zero_grad()
        loss = F.cross_entropy(model(feats, lens).emo_logits, labels)
        loss.backward()
        optimiser.step()
        first = first if first is not None else loss.item()
    assert first > 1.0 and loss.item() < 0.05, (first, loss.item())
    model.eval()
    assert (model(feats, lens).emo_logits.argmax(dim=1) == labels).all()


def test_config_round_trip_rebuilds_the_same_model():
    model = small().eval()
    clone = TIMNet(**model.config_dict()).eval()
    clone.load_state_dict(model.state_dict())
    feats, lens = padded([12, 8], 5, 12)
    torch.testing.assert_close(clone(feats, lens).emo_logits, model(feats, lens).emo_logits)


def test_bad_inputs_name_the_fix():
    model = small()
    with pytest.raises(ModelInputError, match="n_mfcc"):
        model(torch.zeros(2, 10, 7), torch.tensor([10, 10]))
    with pytest.raises(ModelInputError, match="1..10"):
        model(torch.zeros(2, 10, 5), torch.tensor([10, 11]))
    with pytest.raises(ModelInputError, match="int64"):
        model(torch.zeros(2, 10, 5), torch.tensor([10, 9], dtype=torch.int32))
