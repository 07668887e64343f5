"""Tests of the W2V2-MTL network (serkit.model.w2v2_mtl) inside the shared SERModel wrapper (CTC head,
losses): shapes, padding invariance, losses, freezing, loading, export round trip and a small learning
run. Tiny configs keep the file fast on 2 CPU cores."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import Wav2Vec2Config

from serkit.bin import make_tiny_w2v2
from serkit.model import (EncoderConfigError, EncoderNotFoundError, ModelInputError, SERModel, W2V2Network,
                          build_tiny_w2v2, ctc_greedy_decode, encoder_from_config, load_encoder, mtl_loss,
                          phoneme_ctc_loss)
from serkit.model.build import model_config, model_from_config
from serkit.model.common import absolute_lengths, masked_mean
from serkit.model.w2v2_mtl import W2V2MTLFamily
from serkit.model.tiny_w2v2 import TinyEncoderError

SR = 16000
N_EMO, N_TOK = 4, 7


def tiny_config(norm: str = "group", stable: bool = False, **overrides) -> dict:
    """A small wav2vec 2.0 with the real CNN geometry (20 ms frames) and no dropout by default."""
    settings = dict(conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                    conv_bias=norm == "layer", feat_extract_norm=norm, do_stable_layer_norm=stable,
                    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, hidden_dropout=0.0,
                    attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0,
                    layerdrop=0.0)
    settings.update(overrides)
    return Wav2Vec2Config(**settings).to_dict()


def make_model(seed: int = 0, norm: str = "group", stable: bool = False, phoneme_head: bool = True,
               freeze_feature_encoder: bool = True, **overrides) -> SERModel:
    torch.manual_seed(seed)
    network = W2V2Network.from_encoder_config(tiny_config(norm, stable, **overrides), N_EMO,
                                              freeze_feature_encoder=freeze_feature_encoder)
    return SERModel(network, n_tokens=N_TOK if phoneme_head else 0)


def padded_batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded [B, T] batch with SpeechBrain relative lengths."""
    longest = max(len(w) for w in waves)
    batch = torch.zeros(len(waves), longest)
    for row, wave in enumerate(waves):
        batch[row, :len(wave)] = wave
    return batch, torch.tensor([len(w) / longest for w in waves])


def noise_waves(lengths, seed=0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [0.3 * torch.randn(n, generator=generator) for n in lengths]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_w2v2(tmp_path_factory.mktemp("enc") / "tiny", seed=0)


# ------------------------------------------------------------------------------------ shapes
def test_output_shapes_and_frame_counts():
    model = make_model().eval()
    wavs, lens = padded_batch(noise_waves([SR, 12000, 4000]))
    with torch.no_grad():
        out = model(wavs, lens)
    assert out.emo_logits.shape == (3, N_EMO)
    # 20 ms frames with a 25 ms receptive field: floor((n - 400) / 320) + 1
    expected = [(n - 400) // 320 + 1 for n in (SR, 12000, 4000)]
    assert out.frame_lens.tolist() == expected and out.frame_lens.dtype == torch.int64
    assert out.phn_log_probs.shape == (3, max(expected), N_TOK)
    assert out.phn_log_probs.dtype == torch.float32
    assert torch.allclose(out.phn_log_probs.exp().sum(-1), torch.ones(3, max(expected)), atol=1e-5)
    assert out.layer_weights.shape == (model.network.num_layers,) == (3,)  # 2 Transformer layers + H_0


# -------------------------------------------------------------------------- padding invariance
@pytest.mark.parametrize("norm,stable", [("group", False), ("layer", True)])
def test_padding_does_not_change_results(norm, stable):
    model = make_model(norm=norm, stable=stable).eval()
    lengths = [SR, 11000, 5200]
    waves = noise_waves(lengths, seed=1)
    tokens = torch.tensor([[1, 2, 3], [4, 4, 0], [5, 0, 0]])
    token_lens = torch.tensor([3, 2, 1])
    wavs, lens = padded_batch(waves)
    with torch.no_grad():
        batched = model(wavs, lens)
        batched_ctc = phoneme_ctc_loss(batched.phn_log_probs, batched.frame_lens, tokens, token_lens)
        single_ctc = []
        for row, wave in enumerate(waves):
            alone = model(wave.unsqueeze(0), torch.ones(1))
            n = int(alone.frame_lens[0])
            assert n == int(batched.frame_lens[row])
            assert torch.allclose(alone.emo_logits[0], batched.emo_logits[row], atol=1e-5)
            assert torch.allclose(alone.phn_log_probs[0], batched.phn_log_probs[row, :n], atol=1e-4)
            single_ctc.append(phoneme_ctc_loss(alone.phn_log_probs, alone.frame_lens, tokens[row:row + 1],
                                               token_lens[row:row + 1]))
    assert torch.allclose(batched_ctc, torch.stack(single_ctc).mean(), rtol=1e-5)


def test_group_norm_cnn_alone_is_not_padding_invariant():
    """Why the per-utterance CNN path exists: HF's batched GroupNorm CNN sees the padding."""
    model = make_model(norm="group").eval()
    waves = noise_waves([SR, 6000], seed=2)
    wavs, _ = padded_batch(waves)
    cnn = model.network.encoder.feature_extractor
    with torch.no_grad():
        padded = cnn(wavs)[1]
        alone = cnn(waves[1].unsqueeze(0))[0]
    assert not torch.allclose(padded[:, :alone.shape[1]], alone, atol=1e-3)


# ------------------------------------------------------------------------------- layer fusion
def test_fused_representations_are_hf_hidden_states():
    """H_k selected alone (one-hot fusion) equals HF's hidden_states[k] of the same input."""
    model = make_model(norm="group").eval()
    waves = noise_waves([8000, 8000], seed=3)
    wavs = torch.stack(waves)
    normalised = (wavs - wavs.mean(1, keepdim=True)) / torch.sqrt(wavs.var(1, unbiased=False, keepdim=True) + 1e-7)
    with torch.no_grad():
        network = model.network
        reference = network.encoder(normalised, output_hidden_states=True).hidden_states
        assert len(reference) == network.num_layers
        for k in range(network.num_layers):
            network.fusion_weights.copy_(torch.full((network.num_layers,), -1e4))
            network.fusion_weights[k] = 0.0
            out = model(wavs, torch.ones(2))
            expected = network.emotion_head(reference[k].mean(dim=1))
            assert torch.allclose(out.emo_logits, expected, atol=1e-4), f"H_{k} differs from HF"


def _stacked_fusion_reference(network, wavs, n_samples):
    """What W2V2Network computed before the running sum (commit edf2f7f): H_0..H_N, stacked, fused by einsum."""
    from serkit.features.encoder import normalise_waveforms
    normalised = normalise_waveforms(wavs, n_samples)
    sample_mask = (torch.arange(wavs.shape[1]).unsqueeze(0) < n_samples.unsqueeze(1)).long()
    out = network.encoder(normalised, attention_mask=sample_mask, output_hidden_states=True)
    states = [*out.hidden_states[:-1], out.last_hidden_state]  # H_N includes a pre-LN model's final LayerNorm
    frame_lens = network.encoder._get_feat_extract_output_lengths(n_samples).long()
    mask = torch.arange(states[0].shape[1]).unsqueeze(0) < frame_lens.unsqueeze(1)
    weights = torch.softmax(network.fusion_weights, dim=0)
    fused = network.head_dropout(torch.einsum("l,lbfd->bfd", weights, torch.stack(states)))
    pooled = (fused * mask.unsqueeze(-1)).sum(1) / frame_lens.unsqueeze(-1)
    return network.emotion_head(pooled), fused


def _loss_and_grads(network, outputs):
    logits, frames = outputs
    network.zero_grad()
    (logits.square().sum() + frames.square().mean()).backward()
    return {name: p.grad.clone() for name, p in network.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("norm,stable,lengths", [("group", False, [9000, 9000]), ("layer", True, [9000, 6100])])
def test_running_sum_fusion_equals_stacked_hidden_states(norm, stable, lengths):
    """The running weighted sum gives the outputs and gradients of stacking all L hidden states (dropout on)."""
    model = make_model(norm=norm, stable=stable, freeze_feature_encoder=False, hidden_dropout=0.1,
                       apply_spec_augment=False).train()
    network = model.network
    with torch.no_grad():
        network.fusion_weights.copy_(torch.tensor([0.5, -1.0, 2.0]))
    wavs, _ = padded_batch(noise_waves(lengths, seed=11))
    n_samples = torch.tensor(lengths)
    torch.manual_seed(5)
    ours = network(wavs, n_samples)
    ours_grads = _loss_and_grads(network, (ours.emo_logits, ours.frame_features))
    torch.manual_seed(5)
    reference = _stacked_fusion_reference(network, wavs, n_samples)
    reference_grads = _loss_and_grads(network, reference)
    assert torch.allclose(ours.emo_logits, reference[0], atol=1e-5)
    keep = (torch.arange(ours.frame_features.shape[1]) < ours.frame_lens.unsqueeze(1)).unsqueeze(-1)
    assert torch.allclose(ours.frame_features * keep, reference[1] * keep, atol=1e-5)
    assert ours_grads.keys() == reference_grads.keys() and "fusion_weights" in ours_grads
    for name, grad in ours_grads.items():
        assert torch.allclose(grad, reference_grads[name], rtol=1e-4, atol=1e-6), name


def test_batched_group_norm_cnn_equals_per_utterance_loop():
    """One batched CNN call with masked GroupNorm statistics = each utterance alone (features and gradients)."""
    from serkit.model.w2v2_mtl import masked_group_norm_cnn, per_utterance_cnn
    model = make_model(norm="group", freeze_feature_encoder=False)
    cnn = model.network.encoder.feature_extractor
    lengths = [16000, 11000, 4001, 400]
    wavs, _ = padded_batch(noise_waves(lengths, seed=12))
    n_samples = torch.tensor(lengths)
    results = {}
    for name, run in (("batched", masked_group_norm_cnn), ("loop", per_utterance_cnn)):
        cnn.zero_grad()
        features = run(cnn, wavs, n_samples)
        frames = model.network.encoder._get_feat_extract_output_lengths(n_samples).long()
        keep = (torch.arange(features.shape[2]) < frames.unsqueeze(1)).unsqueeze(1)
        (torch.where(keep, features, 0.0).square().sum()).backward()
        results[name] = (torch.where(keep, features, 0.0), {n: p.grad.clone() for n, p in cnn.named_parameters()})
    assert results["batched"][0].shape == results["loop"][0].shape
    assert torch.allclose(results["batched"][0], results["loop"][0], atol=1e-5)
    for name, grad in results["loop"][1].items():
        assert torch.allclose(results["batched"][1][name], grad, rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("mode", ["batched", "per_utterance"])
def test_either_cnn_mode_is_padding_invariant(mode):
    model = make_model(norm="group").eval()
    model.network.cnn_mode = mode
    waves = noise_waves([12000, 5000], seed=13)
    wavs, lens = padded_batch(waves)
    with torch.no_grad():
        batched = model(wavs, lens).emo_logits
        alone = torch.cat([model(w.unsqueeze(0), torch.ones(1)).emo_logits for w in waves])
    assert torch.allclose(batched, alone, atol=1e-5)


def test_training_step_reads_nothing_back_from_the_device(monkeypatch):
    """On the meta device any read of a value (bool(), .item(), .tolist()) fails: a whole training step
    of the batched path (forward, loss, backward) given CPU-checked lengths runs there, so it makes the
    host wait for no GPU. The one read left is inside transformers: it checks whether the attention
    mask can be skipped (``padding_mask.all()``), and is switched off here to test serkit's own code."""
    import transformers.masking_utils
    monkeypatch.setattr(transformers.masking_utils, "_ignore_bidirectional_mask_sdpa", lambda *a, **k: False)
    model = make_model(norm="group", freeze_feature_encoder=False, phoneme_head=False).train().to("meta")
    model.network.cnn_mode = "batched"
    lengths = torch.tensor([16000, 12000, 9000])
    out = model(torch.empty(3, 16000, device="meta"), torch.empty(3, device="meta"), lengths=lengths.to("meta"))
    loss, _, _ = mtl_loss(out, torch.zeros(3, dtype=torch.long, device="meta"), None, None, lam=0.0)
    loss.backward()
    assert model.network.fusion_weights.grad is not None and model.network.fusion_weights.grad.is_meta
    model.network.cnn_mode = "per_utterance"  # the CPU path reads the lengths: it cannot run there
    with pytest.raises((RuntimeError, NotImplementedError)):
        model(torch.empty(3, 16000, device="meta"), torch.empty(3, device="meta"), lengths=lengths.to("meta"))


def test_unknown_cnn_mode_is_refused():
    with pytest.raises(ModelInputError, match="cnn_mode must be one of auto, batched, per_utterance"):
        W2V2Network(encoder_from_config(tiny_config()), N_EMO, cnn_mode="fast")


def test_fusion_weights_start_uniform_and_learn():
    model = make_model().train()
    wavs, lens = padded_batch(noise_waves([9000, 7000], seed=4))
    with torch.no_grad():
        first = model(wavs, lens).layer_weights
    assert torch.allclose(first, torch.full((3,), 1 / 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    targets, tokens, token_lens = torch.tensor([0, 1]), torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1])
    for _ in range(3):
        loss, _, _ = mtl_loss(model(wavs, lens), targets, tokens, token_lens, lam=0.1)
        optimizer.zero_grad()
        loss.backward()
        assert model.network.fusion_weights.grad.abs().sum() > 0
        optimizer.step()
    after = model(wavs, lens).layer_weights.detach()
    assert not torch.allclose(after, first, atol=1e-4)
    assert math.isclose(float(after.sum()), 1.0, rel_tol=1e-6)


def test_layerdrop_skipped_layers_act_as_identity():
    """With every layer dropped, H_0 = ... = H_N (post-LN model), so the fusion weights cannot matter."""
    model = make_model(layerdrop=1.0).train()
    wavs, lens = padded_batch(noise_waves([7000, 5000], seed=5))
    with torch.no_grad():
        uniform = model(wavs, lens).emo_logits
        model.network.fusion_weights.copy_(torch.tensor([3.0, -2.0, 1.0]))
        skewed = model(wavs, lens).emo_logits
    assert torch.allclose(uniform, skewed, atol=1e-5)


# ------------------------------------------------------------------------------------- losses
def test_lambda_zero_without_phoneme_head(monkeypatch):
    with_head = make_model(seed=0)
    without = make_model(seed=0, phoneme_head=False)
    assert not any("ctc_head" in name for name, _ in without.named_parameters())
    n_with = sum(p.numel() for p in with_head.parameters())
    n_without = sum(p.numel() for p in without.parameters())
    assert n_with - n_without == 64 * N_TOK + N_TOK

    def no_ctc(*args, **kwargs):
        raise AssertionError("CTC must not be computed when lambda is 0")

    monkeypatch.setattr(F, "ctc_loss", no_ctc)
    wavs, lens = padded_batch(noise_waves([6000, 9000], seed=6))
    targets = torch.tensor([2, 0])
    for model in (without, with_head):
        out = model(wavs, lens)
        assert (out.phn_log_probs is None) == (model is without)
        loss, l_er, l_pr = mtl_loss(out, targets, None, None, lam=0.0)
        log_probs = out.emo_logits.log_softmax(-1)
        expected_ce = -(log_probs[0, 2] + log_probs[1, 0]) / 2
        assert torch.allclose(loss, expected_ce) and torch.equal(loss, l_er) and float(l_pr) == 0.0
    with pytest.raises(ModelInputError, match="built without one"):
        mtl_loss(without(wavs, lens), targets, torch.tensor([[1], [2]]), torch.tensor([1, 1]), lam=0.1)


def test_ctc_ignores_utterances_without_tokens():
    """No phones -> emotion task only: such an utterance adds nothing to L_PR (not an all-blank target)."""
    generator = torch.Generator().manual_seed(7)
    log_probs = torch.randn(2, 6, N_TOK, generator=generator).log_softmax(-1)
    frame_lens = torch.tensor([6, 4])
    tokens = torch.zeros(2, 0, dtype=torch.long)  # nobody has tokens: width 0
    loss = phoneme_ctc_loss(log_probs, frame_lens, tokens, torch.tensor([0, 0]))
    assert torch.isfinite(loss) and loss.item() == 0.0
    # Mixed batch, SpeechBrain relative token lengths (floats): only the labelled utterance counts.
    tokens = torch.tensor([[0, 0], [3, 5]])
    mixed = phoneme_ctc_loss(log_probs, frame_lens, tokens, torch.tensor([0.0, 1.0]))
    alone = phoneme_ctc_loss(log_probs[1:], frame_lens[1:], tokens[1:], torch.tensor([2]))
    assert torch.allclose(mixed, alone)
    expected = torch.nn.functional.ctc_loss(log_probs[1:].transpose(0, 1), tokens[1:], frame_lens[1:],
                                            torch.tensor([2]), reduction="sum") / 2  # per token
    assert torch.allclose(alone, expected)


def test_ctc_unalignable_utterance_is_counted_and_zeroed(caplog):
    log_probs = torch.randn(2, 5, N_TOK).log_softmax(-1)
    tokens = torch.tensor([[1, 1, 2, 2, 3], [4, 0, 0, 0, 0]])  # 5 tokens + 2 repeats > 5 frames
    with caplog.at_level("WARNING", logger="serkit.model.w2v2_mtl"):
        loss = phoneme_ctc_loss(log_probs, torch.tensor([5, 5]), tokens, torch.tensor([5, 1]))
    assert "1 of 2 utterances" in caplog.text
    alone = phoneme_ctc_loss(log_probs[1:], torch.tensor([5]), tokens[1:, :1], torch.tensor([1]))
    assert torch.allclose(loss, alone / 2)


def test_ctc_rejects_out_of_range_targets():
    log_probs = torch.randn(1, 8, N_TOK).log_softmax(-1)
    for bad in (0, N_TOK):
        with pytest.raises(ModelInputError, match="tokens.txt"):
            phoneme_ctc_loss(log_probs, torch.tensor([8]), torch.tensor([[1, bad]]), torch.tensor([2]))


def test_greedy_decode_collapses_repeats_and_drops_blanks():
    frames = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 0, 3, 3], [0, 4, 4, 4, 0, 4, 5, 5, 6, 6]])
    log_probs = F.one_hot(frames, N_TOK).float().log_softmax(-1)
    assert ctc_greedy_decode(log_probs, torch.tensor([10, 8])) == [[1, 1, 2, 3], [4, 4, 5]]


# --------------------------------------------------------------------------------- input errors
def test_bad_inputs_raise_clear_errors():
    model = make_model().eval()
    with pytest.raises(ModelInputError, match=r"\[batch, time"):
        model(torch.zeros(SR), torch.ones(1))
    with pytest.raises(ModelInputError, match=r"\[batch, samples\]"):
        model(torch.zeros(1, SR, 2), torch.ones(1))
    with pytest.raises(ModelInputError, match=r"\(0, 1\]"):
        model(torch.zeros(2, SR), torch.tensor([1.0, 1.5]))
    with pytest.raises(ModelInputError, match="300 samples, fewer than the 400"):
        model(torch.randn(2, 3000), torch.tensor([1.0, 0.1]))


# -------------------------------------------------------------------------------------- freezing
def _grads_after_backward(model):
    wavs, lens = padded_batch(noise_waves([6000, 8000], seed=8))
    loss, _, _ = mtl_loss(model(wavs, lens), torch.tensor([1, 3]), torch.tensor([[1, 2], [3, 4]]),
                          torch.tensor([2, 2]), lam=0.5)
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad for name, p in model.named_parameters()}


def test_feature_encoder_frozen_by_default_and_partition():
    model = make_model().train()
    grads = _grads_after_backward(model)
    cnn = [n for n in grads if n.startswith("network.encoder.feature_extractor.")]
    assert cnn and all(grads[n] is None for n in cnn)
    assert grads["network.encoder.feature_projection.projection.weight"].abs().sum() > 0
    assert grads["network.encoder.encoder.layers.0.attention.q_proj.weight"].abs().sum() > 0
    # the family's groups (+ the CTC head, which the trainer adds to the last) + the frozen CNN
    # cover every parameter exactly once
    from serkit.model import get_family
    family_groups = get_family("w2v2_mtl").param_groups(model)
    groups = [id(p) for params in family_groups.values() for p in params]
    groups += [id(p) for p in model.ctc_head.parameters()]
    cnn_ids = [id(p) for p in model.network.encoder.feature_extractor.parameters()]
    assert list(family_groups) == ["encoder", "heads"]
    assert len(set(groups)) == len(groups) and not set(groups) & set(cnn_ids)
    assert set(groups) | set(cnn_ids) == {id(p) for p in model.parameters()}

    trainable = make_model(freeze_feature_encoder=False).train()
    grads = _grads_after_backward(trainable)
    assert grads["network.encoder.feature_extractor.conv_layers.0.conv.weight"].abs().sum() > 0


def test_set_encoder_frozen_trains_only_heads_then_releases():
    model = make_model().train()
    model.network.set_encoder_frozen(True)
    grads = _grads_after_backward(model)
    assert all(g is None for n, g in grads.items() if n.startswith("network.encoder."))
    for name in ("network.fusion_weights", "network.emotion_head.weight", "ctc_head.linear.weight"):
        assert grads[name].abs().sum() > 0
    model.network.set_encoder_frozen(False)
    grads = _grads_after_backward(model)
    assert grads["network.encoder.encoder.layers.1.feed_forward.output_dense.weight"].abs().sum() > 0
    assert grads["network.encoder.feature_extractor.conv_layers.0.conv.weight"] is None  # CNN stays frozen


def test_autocast_bfloat16_forward_and_backward():
    model = make_model().train()
    wavs, lens = padded_batch(noise_waves([7000, 9000], seed=9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(wavs, lens)
        loss, _, l_pr = mtl_loss(out, torch.tensor([0, 1]), torch.tensor([[1, 2], [3, 0]]),
                                 torch.tensor([2, 1]), lam=0.1)
    assert out.phn_log_probs.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(l_pr)
    loss.backward()
    assert torch.isfinite(model.network.fusion_weights.grad).all()


# ------------------------------------------------------------------------------------- learning
TONES = {1: 300.0, 2: 500.0, 3: 800.0, 4: 1200.0, 5: 1800.0, 6: 2600.0}


def tone_utterance(tokens: list[int], rng: np.random.Generator) -> torch.Tensor:
    """One 0.2 s tone per token (frequency = token identity) between 60 ms gaps, plus light noise."""
    gap = np.zeros(int(0.06 * SR))
    t = np.arange(int(0.2 * SR)) / SR
    parts = [gap]
    for token in tokens:
        parts += [0.5 * np.sin(2 * math.pi * TONES[token] * t), gap]
    wave = np.concatenate(parts)
    return torch.tensor(wave + 0.01 * rng.standard_normal(len(wave)), dtype=torch.float32)


def test_overfits_four_utterances():
    sequences = [[1, 2, 3], [4, 5], [6, 6, 1], [2, 5, 4, 3]]
    rng = np.random.default_rng(0)
    wavs, lens = padded_batch([tone_utterance(s, rng) for s in sequences])
    tokens = torch.zeros(4, 4, dtype=torch.long)
    for row, seq in enumerate(sequences):
        tokens[row, :len(seq)] = torch.tensor(seq)
    token_lens, emotions = torch.tensor([len(s) for s in sequences]), torch.tensor([0, 1, 2, 3])

    model = make_model(seed=0)
    optimizer = torch.optim.Adam([{"params": model.network.encoder_parameters(), "lr": 2e-3},
                                  {"params": [*model.network.head_parameters(), *model.ctc_head.parameters()],
                                   "lr": 6e-3}])
    decoded, ce = None, float("inf")
    for step in range(1, 401):
        model.train()
        loss, _, _ = mtl_loss(model(wavs, lens), emotions, tokens, token_lens, lam=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            model.eval()
            with torch.no_grad():
                out = model(wavs, lens)
                ce = float(mtl_loss(out, emotions, tokens, token_lens, lam=1.0)[1])
            decoded = ctc_greedy_decode(out.phn_log_probs, out.frame_lens)
            if ce < 0.05 and decoded == sequences:
                break
    assert ce < 0.05, f"cross-entropy still {ce:.3f}"
    assert decoded == sequences
    assert out.emo_logits.argmax(-1).tolist() == emotions.tolist()


# -------------------------------------------------------------------------- loading and export
def test_tiny_encoder_build_is_idempotent_and_loadable(tiny_dir, tmp_path):
    stamp = {p.name: p.stat().st_mtime_ns for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(stamp)
    assert build_tiny_w2v2(tiny_dir, seed=0) == tiny_dir
    assert {p.name: p.stat().st_mtime_ns for p in tiny_dir.iterdir()} == stamp
    with pytest.raises(TinyEncoderError, match="seed 0, not 1"):
        build_tiny_w2v2(tiny_dir, seed=1)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(TinyEncoderError, match="remove it"):
        build_tiny_w2v2(tmp_path / "busy")

    encoder = load_encoder(str(tiny_dir), layerdrop=0.2, hidden_dropout=0.0)
    assert encoder.config.layerdrop == 0.2 and encoder.config.hidden_dropout == 0.0
    assert encoder.config.mask_time_prob == 0.0 and encoder.config.mask_feature_prob == 0.0
    saved = load_file(str(tiny_dir / "model.safetensors"))
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    # the standard wav2vec 2.0 frame rate: 1 s -> 49 frames
    model = SERModel(W2V2Network(encoder, N_EMO), N_TOK).eval()
    with torch.no_grad():
        assert model(torch.randn(1, SR), torch.ones(1)).frame_lens.tolist() == [49]


def test_make_tiny_w2v2_cli(tmp_path, capsys):
    assert make_tiny_w2v2.main(["--out", str(tmp_path / "enc"), "--seed", "3"]) == 0
    assert json.loads((tmp_path / "enc" / "serkit_tiny_w2v2.json").read_text())["seed"] == 3
    assert make_tiny_w2v2.main(["--out", str(tmp_path / "enc"), "--seed", "4"]) == 1
    assert "seed 3, not 4" in capsys.readouterr().err
    assert make_tiny_w2v2.main(["--out", str(tmp_path / "enc"), "--seed", "3", "--type", "hubert"]) == 1
    assert "a tiny wav2vec2 encoder, not hubert" in capsys.readouterr().err
    assert make_tiny_w2v2.main(["--out", str(tmp_path / "hub"), "--type", "hubbert"]) == 1
    assert "no tiny encoder of type 'hubbert'" in capsys.readouterr().err


def test_missing_encoder_gives_helpful_error(tmp_path, monkeypatch):
    missing = tmp_path / "no_such_encoder"
    with pytest.raises(EncoderNotFoundError) as info:
        load_encoder(str(missing))
    message = str(info.value)
    assert str(missing) in message and "encoder_source" in message and "huggingface-cli download" in message

    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderNotFoundError, match="no loadable encoder checkpoint"):
        load_encoder(str(tmp_path / "empty"))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderNotFoundError) as info:
        W2V2Network.from_pretrained("serkit-tests/no-such-wav2vec2", N_EMO)
    message = str(info.value)
    assert "serkit-tests/no-such-wav2vec2" in message and "HF_HUB_OFFLINE" in message
    assert "huggingface-cli download serkit-tests/no-such-wav2vec2" in message and "HF_HOME" in message


def test_relative_folder_that_looks_like_a_hub_id_is_reported_as_a_missing_folder(tmp_path, monkeypatch):
    """`db/tiny_w2v2` before stage 0 built it: 'no such folder', not a hub lookup of 'db/tiny_w2v2'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "db").mkdir()
    with pytest.raises(EncoderNotFoundError, match="db/tiny_w2v2: no such folder"):
        load_encoder("db/tiny_w2v2")


def test_bad_encoder_overrides_are_rejected(tiny_dir):
    with pytest.raises(EncoderConfigError, match="layer_drop"):
        load_encoder(str(tiny_dir), layer_drop=0.1)
    with pytest.raises(EncoderConfigError, match="masking"):
        load_encoder(str(tiny_dir), mask_time_prob=0.05)


def test_export_round_trip_gives_identical_outputs(tiny_dir):
    trained = SERModel(W2V2Network.from_pretrained(str(tiny_dir), N_EMO), N_TOK).eval()
    with torch.no_grad():
        trained.network.fusion_weights.copy_(torch.tensor([0.5, -1.0, 2.0, 0.1]))
    config = {"family": "w2v2_mtl", "network": trained.network.config_dict(), "feature": {"kind": "waveform"},
              "n_emotions": N_EMO, "n_tokens": N_TOK, "classes": list("abcd"), "tokens": list("0123456"),
              "sample_rate": SR}
    rebuilt = model_from_config(json.loads(json.dumps(config)))  # must survive model_config.json
    rebuilt.load_state_dict(trained.state_dict(), strict=True)
    rebuilt.eval()
    wavs, lens = padded_batch(noise_waves([SR, 9000], seed=10))
    with torch.no_grad():
        a, b = trained(wavs, lens), rebuilt(wavs, lens)
    assert torch.equal(a.emo_logits, b.emo_logits)
    assert torch.equal(a.phn_log_probs, b.phn_log_probs)
    assert torch.equal(a.layer_weights, b.layer_weights)


def test_encoder_from_config_rejects_garbage():
    with pytest.raises(EncoderConfigError, match="dict"):
        encoder_from_config(["not", "a", "dict"])


def test_runs_with_bfloat16_weights():
    model = make_model().to(torch.bfloat16).eval()
    wavs, lens = padded_batch(noise_waves([7000, 5000], seed=11))
    with torch.no_grad():
        out = model(wavs, lens)
    assert out.emo_logits.dtype == torch.bfloat16 and torch.isfinite(out.emo_logits.float()).all()
    assert out.phn_log_probs.dtype == torch.float32 and out.frame_lens.tolist() == [21, 15]


def test_incomplete_checkpoint_is_not_silently_random(tiny_dir, tmp_path):
    from safetensors.torch import save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_dir / "config.json").read_text())
    weights = load_file(str(tiny_dir / "model.safetensors"))
    del weights["encoder.layers.1.attention.k_proj.weight"]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(EncoderConfigError, match="encoder.layers.1.attention.k_proj.weight"):
        load_encoder(str(broken))


def test_ctc_is_normalised_per_token_like_torch_mean_reduction():
    """L_PR uses CTCLoss' standard 'mean' reduction, so lambda is independent of utterance length."""
    torch.manual_seed(0)
    log_probs = torch.randn(3, 30, 6).log_softmax(-1)
    frame_lens = torch.tensor([30, 25, 20])
    tokens = torch.tensor([[1, 2, 3, 4], [5, 1, 0, 0], [2, 0, 0, 0]])
    token_lens = torch.tensor([4, 2, 1])
    reference = torch.nn.CTCLoss(blank=0, reduction="mean")(
        log_probs.transpose(0, 1), tokens, frame_lens, token_lens)
    assert torch.allclose(phoneme_ctc_loss(log_probs, frame_lens, tokens, token_lens), reference, rtol=1e-5)


def test_the_input_prior_is_a_one_hot_concatenated_before_the_linear_emotion_classifier():
    """W2V2's emotion head is linear over the pooled frames, so logits + W_p p equal one linear layer
    over [pooled; p]; utterance heads classify the same pooled frames; the config rebuilds both."""
    torch.manual_seed(0)
    network = W2V2Network.from_encoder_config(tiny_config(), N_EMO)
    model = SERModel(network, n_classes=N_EMO, prior_size=2, utterance_heads={"gender": 2}).eval()
    waves, lens = padded_batch([torch.randn(SR // 2), torch.randn(SR // 4)])
    prior = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with torch.no_grad():
        out = model(waves, lens, prior=prior)
        plain = network(waves, absolute_lengths(waves, lens))
        pooled = masked_mean(plain.frame_features, plain.frame_lens)
        joint = torch.cat([network.emotion_head.weight, model.prior.weight], dim=1)
        expected = torch.cat([pooled, prior], dim=1) @ joint.T + network.emotion_head.bias
    assert torch.allclose(out.emo_logits, expected, atol=1e-5)
    assert torch.allclose(out.utterance_logits["gender"], model.utterance_heads["gender"](pooled))
    assert set(model.head_parameters()) == {model.prior.weight, *model.utterance_heads.parameters()}
    with pytest.raises(ModelInputError, match="input prior"):
        model(waves, lens)
    config = model_config(W2V2MTLFamily(), model, {"mtl_lambda": 0.0}, [{"kind": "waveform", "sample_rate": SR}],
                          [()], ["a", "b", "c", "d"])
    assert config["prior_size"] == 2 and config["utterance_heads"] == {"gender": 2}
    rebuilt = model_from_config(json.loads(json.dumps(config)))  # must survive model_config.json
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_the_networks_extras_reach_the_familys_loss_untouched():
    """Per-utterance tensors a family's own loss reads (auxiliary logits, an embedding) pass through SERModel."""
    from serkit.model.ser_model import NetworkOutput

    class WithExtras(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(3, N_EMO)

        def forward(self, feats, lengths):
            pooled = masked_mean(feats, lengths)
            return NetworkOutput(emo_logits=self.head(pooled), extras={"embedding": pooled, "aux": 2 * pooled})

    model = SERModel(WithExtras())
    feats = torch.randn(2, 5, 3)
    out = model(feats, torch.tensor([1.0, 0.6]))
    expected = masked_mean(feats, torch.tensor([5, 3]))
    assert set(out.extras) == {"embedding", "aux"}
    torch.testing.assert_close(out.extras["embedding"], expected)
    torch.testing.assert_close(out.extras["aux"], 2 * expected)
