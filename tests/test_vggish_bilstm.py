"""VGGish + BiLSTM + attention: the VGGish architecture, the two training phases, pretrained weights."""
from __future__ import annotations

import pytest
import torch

from serkit.model.vggish_bilstm import PretrainedWeightsError, VGGishBiLSTM, VGGishBiLSTMFamily

SMALL = {"n_mels": 32, "n_classes": 4, "segment_frames": 24, "channels": [4, 8, 8, 8, 8, 8],
         "embedding": [32, 32, 16], "lstm_hidden": 8}


def test_vggish_has_the_released_models_layers():
    """Hand count of VGGish (Hershey et al. 2017): six 3x3 convs, then 512 x 6 x 4 -> 4096 -> 4096 -> 128."""
    convs = [(1, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    dense = [(512 * 6 * 4, 4096), (4096, 4096), (4096, 128)]
    expected = sum(i * o * 9 + o for i, o in convs) + sum(i * o + o for i, o in dense)
    net = VGGishBiLSTM(n_mels=64, n_classes=4)
    assert sum(p.numel() for p in net.vggish.parameters()) == expected == 72_141_184
    assert net.vggish(torch.zeros(2, 96, 64)).shape == (2, 128)


def batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    feats = torch.randn(4, 70, 3, 32, generator=generator)
    return feats, torch.tensor([70, 50, 30, 10])


def test_phase_one_trains_vggish_phase_two_only_the_utterance_level():
    torch.manual_seed(0)
    net = VGGishBiLSTM(**SMALL, segment_steps=3)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    feats, lens = batch()
    snapshots = []
    for _ in range(6):
        snapshots.append({name: p.detach().clone() for name, p in net.named_parameters()})
        net.train()
        loss = torch.nn.functional.cross_entropy(net(feats, lens).emo_logits, torch.arange(4))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    changed = lambda a, b, prefix: any(not torch.equal(a[n], b[n]) for n in a if n.startswith(prefix))
    assert changed(snapshots[0], snapshots[1], "vggish.") and not changed(snapshots[0], snapshots[1], "lstm.")
    assert net.phase == 2 and int(net.trained_steps) == 6
    assert not changed(snapshots[4], snapshots[5], "vggish.") and changed(snapshots[4], snapshots[5], "lstm.")


def test_the_phase_travels_with_the_weights():
    torch.manual_seed(0)
    net = VGGishBiLSTM(**SMALL, segment_steps=2)
    feats, lens = batch(1)
    for _ in range(2):
        net.train()
        net(feats, lens)
    copy = VGGishBiLSTM(**net.config_dict())
    assert copy.phase == 1
    copy.load_state_dict(net.state_dict())
    net.eval(), copy.eval()
    assert copy.phase == 2
    torch.testing.assert_close(copy(feats, lens).emo_logits, net(feats, lens).emo_logits)


def test_pretrained_weights_from_a_file(tmp_path):
    torch.manual_seed(0)
    source = VGGishBiLSTM(**SMALL)
    path = tmp_path / "vggish.pth"
    torch.save({**source.vggish.state_dict(), "pproc._pca_means": torch.zeros(3)}, path)  # a torchvggish-like file
    torch.manual_seed(1)
    net = VGGishBiLSTM(**SMALL)
    net.load_pretrained(str(path))
    for name, value in source.vggish.state_dict().items():
        torch.testing.assert_close(net.vggish.state_dict()[name], value)
    with pytest.raises(PretrainedWeightsError, match="fit the paper's network only"):
        VGGishBiLSTM(**dict(SMALL, embedding=[32, 32, 8])).load_pretrained(str(path))


def test_missing_weights_say_how_to_provide_them(tmp_path, monkeypatch):
    with pytest.raises(PretrainedWeightsError, match="no such file.*pretrained: null"):
        VGGishBiLSTM(**SMALL).load_pretrained(str(tmp_path / "absent.pth"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(PretrainedWeightsError, match="HF_HUB_OFFLINE is set.*vggish-10086976.pth"):
        VGGishBiLSTM(**SMALL).load_pretrained("someone/vggish:vggish.pth")


def test_the_experiment_name_says_balanced_or_not_and_which_weights():
    family = VGGishBiLSTMFamily()
    assert family.tag({"balance": True, "pretrained": None}) == "balanced"
    assert family.tag({"balance": False, "pretrained": "vggish.pth"}) == "unbalanced_audioset"
