"""AMRWC's own parts (serkit.model.amrwc): speech regions from the maximum amplitude difference, masked
normalisation that keeps silence and padding at zero, the per-utterance adaptive average, and a training
run on the mini IEMOCAP look-alike with vote proportions and the ambiguous utterances. The family contract
(shapes, padding, over-fitting, export) is tests/test_families.py's."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from serkit.bin.train import load_hparams
from serkit.corpora.iemocap import prepare_iemocap
from serkit.data.folds import make_folds
from serkit.model.amrwc import AMResNet, MaskedBatchNorm2d, adaptive_average, madd_mask
from serkit.model.tiny_w2v2 import build_tiny_w2v2
from serkit.synth.mini_iemocap import make_mini_iemocap
from serkit.training.expdir import read_history
from serkit.training.train import train_fold

CONF = Path(__file__).resolve().parents[1] / "conf"
HOP, WINDOW = 160, 400


def burst(silence_s: float, speech_s: float) -> torch.Tensor:
    """Near-silence, a loud tone, near-silence again (each ``silence_s`` / ``speech_s`` seconds at 16 kHz)."""
    generator = torch.Generator().manual_seed(0)
    quiet = lambda: 0.001 * torch.randn(int(16000 * silence_s), generator=generator)  # noqa: E731
    tone = 0.5 * torch.sin(torch.arange(int(16000 * speech_s)) * 2 * torch.pi * 200 / 16000)
    return torch.cat([quiet(), tone, quiet()])


def test_speech_regions_are_the_frames_whose_amplitude_difference_is_large():
    wave = burst(0.3, 0.4)  # speech from 0.3 s to 0.7 s
    n_frames = 1 + wave.numel() // HOP
    padded = torch.cat([wave, torch.zeros(8000)]).unsqueeze(0)  # padding must not count
    speech = madd_mask(padded, torch.tensor([wave.numel()]), torch.tensor([n_frames]), n_frames + 50, HOP, WINDOW, 0.05)[0]
    centres = torch.arange(n_frames + 50) * HOP
    whole_window_in_tone = (centres - WINDOW // 2 >= 4800) & (centres + WINDOW // 2 <= 11200)
    window_misses_tone = (centres + WINDOW // 2 <= 4800) | (centres - WINDOW // 2 >= 11200)
    assert speech[whole_window_in_tone].all() and not speech[window_misses_tone].any()
    assert not speech[n_frames:].any()


def test_masked_norm_uses_the_masked_frames_only_and_keeps_the_rest_at_zero():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 4) * 3 + 1
    mask = torch.zeros(2, 1, 10, 1)
    mask[0, :, 2:7], mask[1, :, :4] = 1, 1
    norm = MaskedBatchNorm2d(3).train()
    out = norm(x, mask)
    kept = x.permute(1, 0, 2, 3)[:, mask[:, 0, :, 0].bool()]  # [C, kept frames, M]
    reference = F.batch_norm(kept.unsqueeze(0), None, None, training=True, eps=norm.eps)[0]
    torch.testing.assert_close(out.permute(1, 0, 2, 3)[:, mask[:, 0, :, 0].bool()], reference, atol=1e-5, rtol=1e-5)
    assert out[mask.expand_as(out) == 0].abs().max() == 0
    torch.testing.assert_close(norm.running_mean, 0.1 * kept.mean(dim=(1, 2)))


def test_the_masked_resnet_keeps_silence_at_zero_and_ignores_what_silence_holds():
    torch.manual_seed(0)
    network = AMResNet([4, 8], blocks_per_stage=1, attention_kernel=3).eval()
    spec = torch.randn(1, 20, 3, 8)
    speech = torch.zeros(1, 20, dtype=torch.bool)
    speech[0, 5:12] = True
    out, lens = network(spec, speech, torch.tensor([20]))
    assert lens.tolist() == [10] and out.shape == (1, 10, 8)
    # strided in time by 2: frame i sees input frames 2i-1..2i+1, so 2..6 hold speech
    silent = [i for i in range(10) if i not in range(2, 7)]
    assert out[0, silent].abs().max() == 0 and out[0, 2:7].abs().sum() > 0


def test_adaptive_average_is_torchs_on_each_utterance_alone():
    torch.manual_seed(0)
    x = torch.randn(3, 11, 5)
    lens = torch.tensor([11, 7, 3])
    out = adaptive_average(x, lens, 4)
    for row, n in enumerate(lens.tolist()):
        expected = F.adaptive_avg_pool1d(x[row, :n].T.unsqueeze(0), 4)[0].T
        torch.testing.assert_close(out[row], expected)


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("mini")
    root = make_mini_iemocap(out / "corpus", seed=1, utts_per_speaker=4, others_per_speaker=2, dialogs_per_session=2,
                             jobs=2, progress=False)
    prepare_iemocap(root, out / "data", "4class")
    make_folds(out / "data", out / "folds", protocols=["loso"])
    return {"data": out / "data", "fold": out / "folds" / "loso" / "fold01", "encoder": build_tiny_w2v2(out / "w2v2"),
            "root": out}


@pytest.mark.timeout(600)
def test_trains_on_vote_proportions_with_the_ambiguous_utterances(mini, caplog):
    out = mini["root"] / "exp" / "fold01"
    hparams = load_hparams(str(CONF / "amrwc.yaml"), {
        "data_dir": str(mini["data"]), "fold_dir": str(mini["fold"]), "output_folder": str(out),
        "feature_cache": str(mini["root"] / "dump"), "encoder_source": str(mini["encoder"]), "seed": 3,
        "number_of_epochs": 6, "batch_size": 8, "lr_heads": 3e-3, "lr_encoder": 1e-3, "num_workers": 0,
        "use_ambiguous": True, "vote_weight": 1.0, "precision": "fp32",
        "spectrogram": {"n_mels": 16, "win_ms": 25.0, "hop_ms": 10.0},
        "network": {"channels": [4, 8], "blocks_per_stage": 1, "n_steps": 4, "d_model": 16, "ffn_dim": 16}})
    with caplog.at_level(logging.INFO, logger="serkit.data.dataio"):
        scores = train_fold(hparams, {"device": "cpu", "noprogressbar": True})
    assert any("ambiguous)" in record.getMessage() and record.getMessage().startswith("train:")
               for record in caplog.records)
    history = read_history(out / "history.jsonl")
    assert history[-1]["train_VT"] < history[0]["train_VT"] and history[-1]["train_ER"] < history[0]["train_ER"]
    assert 0 <= scores["UA"] <= 1


def test_the_batched_cnn_of_a_gpu_gives_the_per_utterance_features_of_a_cpu(tmp_path):
    """cnn_mode ``batched`` (auto on a GPU) and ``per_utterance`` (auto on a CPU) score a padded batch alike."""
    from serkit.features import make_feature
    from serkit.features.encoder import load_encoder
    from serkit.model.amrwc import AMRWCNetwork

    torch.manual_seed(0)
    network = AMRWCNetwork(load_encoder(str(build_tiny_w2v2(tmp_path / "w2v2"))), 4, hop=HOP, madd_window=WINDOW,
                           channels=[4, 8], blocks_per_stage=1, n_steps=4, d_model=16, ffn_dim=16).eval()
    waves = [burst(0.2, 0.5), burst(0.1, 0.3)]
    kind = make_feature("log_mel_deltas", 16000, {"n_mels": 16})
    specs = [kind.compute(w, 16000).float() for w in waves]
    wavs = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    spec = torch.nn.utils.rnn.pad_sequence(specs, batch_first=True)
    lengths = [torch.tensor([w.numel() for w in waves]), torch.tensor([s.shape[0] for s in specs])]
    outputs = {}
    with torch.no_grad():
        for mode in ("batched", "per_utterance"):
            network.cnn_mode = mode
            outputs[mode] = network([wavs, spec], lengths).emo_logits
    torch.testing.assert_close(outputs["batched"], outputs["per_utterance"], atol=1e-4, rtol=1e-4)
