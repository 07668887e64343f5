"""Class-balanced training segments (serkit.data.segments): which tiers the training counts give, how
many segments each utterance yields, and that only the training set is segmented."""
from __future__ import annotations

import pytest
import torch
from tiny_corpus import noisy_tones, write_tiny_corpus

from serkit.data.dataio import load_fold_data
from serkit.data.segments import PAPER_SETTINGS, SegmentBalancer, SegmentSettingsError, balance_training_set
from serkit.features import make_feature
from serkit.targets import TargetSet

MFCC = make_feature("mfcc", 16000, {"n_mfcc": 13, "n_mels": 40, "win_ms": 25.0, "hop_ms": 10.0})  # 100 frames a second


def paper_balancer(counts: list[int]) -> SegmentBalancer:
    labels = [label for label, count in enumerate(counts) for _ in range(count)]
    return SegmentBalancer.for_training(PAPER_SETTINGS, MFCC, labels, len(counts))


def test_the_training_counts_choose_each_class_tier():
    """BAUM-1s' first training fold (the paper's Table 1): joy and sadness lose segments, anger and
    disgust overlap by 0.48 s, fear and surprise by 0.24 s."""
    balancer = paper_balancer([144, 268, 93, 491, 487, 83])  # anger disgust fear joy sadness surprise
    assert balancer.segment == 96
    assert [(rule.take, rule.hop) for rule in balancer.rules.values()] == [
        ("all", 48), ("all", 48), ("all", 72), ("ends", 96), ("ends", 96), ("all", 72)]


def test_segments_per_utterance():
    balancer = paper_balancer([10, 5, 1])  # class 0 majority, 1 overlaps 0.48 s, 2 overlaps 0.24 s
    assert balancer.starts(300, 0) == [0, 204]
    assert balancer.starts(300, 1) == [0, 48, 96, 144, 192, 204]  # the last one ends on the last frame
    assert balancer.starts(300, 2) == [0, 72, 144, 204]
    assert balancer.starts(240, 2) == [0, 72, 144]  # the hop ends exactly on the last frame
    assert [balancer.starts(96, label) for label in range(3)] == [[0], [0], [0]]
    assert balancer.starts(40, 1) == [0]  # shorter than a segment: one, zero-padded by the network
    assert balancer.table([0, 1, 2, 2], [300, 300, 300, 40]) == {0: (4, 2), 1: (4, 6), 2: (5, 5)}


def test_an_utterance_becomes_its_segments_back_to_back():
    balancer = paper_balancer([10, 5, 1])
    frames = torch.arange(300.0).unsqueeze(1).expand(300, 3)
    out = balancer(frames, 2)
    assert out.shape == (4 * 96, 3) and balancer.n_frames(300, 2) == 4 * 96
    for k, start in enumerate([0, 72, 144, 204]):
        torch.testing.assert_close(out[k * 96:(k + 1) * 96], frames[start:start + 96])
    short = frames[:40]
    assert balancer(short, 0) is short and balancer.n_frames(40, 0) == 40


def test_bad_settings_name_the_fix():
    with pytest.raises(SegmentSettingsError, match="min_share 0"):
        SegmentBalancer.for_training({"segment_s": 0.96, "rules": [{"min_share": 0.5, "take": "ends"}]}, MFCC, [0], 1)
    with pytest.raises(SegmentSettingsError, match="shorter than segment_s"):
        SegmentBalancer.for_training({"segment_s": 0.96, "rules": [{"min_share": 0, "overlap_s": 0.96}]}, MFCC, [0], 1)
    with pytest.raises(SegmentSettingsError, match="take"):
        SegmentBalancer.for_training({"segment_s": 0.96, "rules": [{"min_share": 0, "take": "middle"}]}, MFCC, [0], 1)


def test_only_the_training_set_is_segmented_from_its_own_counts(tmp_path):
    # train: 5 ang, 3 hap, 1 sad, 1 neu; valid holds many sad, which must not change the tiers
    train = [0, 4, 8, 12, 16, 1, 5, 9, 2, 3]
    valid = [6, 10, 14, 18, 22, 7, 11, 13]
    paths = write_tiny_corpus(tmp_path, 24, seconds=lambda i: 3.0, waveform=noisy_tones(220, 180),
                              splits={"train": train, "valid": valid, "test": [15, 17, 19, 20, 21, 23]})
    targets = TargetSet.from_config({"data_dir": paths["data"]})
    data = load_fold_data(paths["data"], paths["fold"], targets, features=[MFCC])
    balancer = balance_training_set(data.train, PAPER_SETTINGS, data.classes)
    assert [balancer.rules[label].hop for label in range(4)] == [96, 48, 72, 72]
    assert [balancer.rules[label].take for label in range(4)] == ["ends", "all", "all", "all"]
    segments = {"ang": 2, "hap": 6, "sad": 4, "neu": 4}  # 301 frames each
    for index, utt in enumerate(data.train.utterances):
        assert data.train[index]["sig"].shape[0] == 96 * segments[data.classes[utt.emotion]]
    assert data.train.durations[0] == pytest.approx(3.0 * 192 / 301)
    assert data.valid.segmenter is None and data.valid[0]["sig"].shape[0] == 301
