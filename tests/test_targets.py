"""Tests of the target plug-ins (serkit.targets): the registry, and the emotion and CTC targets'
data, batch fields, loss, decoded outputs and scores on the tiny corpus."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_corpus import CLASSES, TOKENS, noisy_tones, write_tiny_corpus

from serkit.labels import ctc_targets
from serkit.data.dataio import load_fold_data
from serkit.model.ser_model import SEROutput
from serkit.targets import TargetError, TargetSet, stage1_files, target_classes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """8 utterances of 2 speakers; ``spk0-u00`` has no phones."""
    root = tmp_path_factory.mktemp("corpus")
    return write_tiny_corpus(root, 8, seconds=lambda i: 0.5 + 0.25 * (i % 4), waveform=noisy_tones(220, 110),
                             splits={"train": range(0, 4), "valid": range(4, 6), "test": range(6, 8)}, phoneless={0})


def config(corpus, **options) -> dict:
    return {"data_dir": corpus["data"], "lang_dir": corpus["lang"], **options}


def test_the_registry_lists_emotion_first_and_answers_which_files_stage1_makes():
    assert [cls.name for cls in target_classes()][:2] == ["emotion", "ctc"]
    # every file stage 1 writes for the CTC target (its units and the phones they come from), as its owner lists them
    assert {"utt2arpabet", "utt2phones", "utt2phn", "utt2char", "utt2bpe"} <= set(stage1_files())
    assert stage1_files() == ctc_targets.STAGE1_FILES


def test_a_zero_weight_leaves_the_ctc_target_inactive_reading_nothing(corpus):
    targets = TargetSet.from_config(config(corpus, mtl_lambda=0))
    assert [t.name for t in targets.active] == ["emotion"] and targets.sequences == ()
    assert targets.head_sizes() == {"n_classes": len(CLASSES)}
    assert targets.epoch_scores({"emotion": {"refs": [0, 1], "probs": [[0.9, 0.1, 0, 0], [0.8, 0.2, 0, 0]]}}) \
        == {"WA": 0.5, "UA": 0.5, "PER": None}  # UA over the two classes present: (1 + 0) / 2
    with pytest.raises(TargetError, match="ctc_targets must be one of"):
        TargetSet.from_config(config(corpus, mtl_lambda=0.1, ctc_targets="words"))
    with pytest.raises(TargetError, match="mtl_lambda must be >= 0"):
        TargetSet.from_config(config(corpus, mtl_lambda=-1))


def test_batch_fields_loss_decoding_and_scores_of_emotion_plus_ctc(corpus):
    targets = TargetSet.from_config(config(corpus, mtl_lambda=0.5))
    data = load_fold_data(corpus["data"], corpus["fold"], targets)
    batch = data.train.collate([data.train[0], data.train[2]])  # no phones, and "F2 V2 L2 VS2"
    assert batch.emo.tolist() == [0, 2] and batch.token_len.tolist() == [0, 4]
    assert batch.tokens.data.tolist() == [[0, 0, 0, 0], [TOKENS.index(t) for t in ("F2", "V2", "L2", "VS2")]]

    # Frames whose best path reads "F2 V2" for the second utterance (blank = 0 elsewhere).
    frames = torch.full((2, 6, len(TOKENS)), -10.0)
    frames[:, :, 0] = 0.0
    frames[1, 1, TOKENS.index("F2")] = frames[1, 3, TOKENS.index("V2")] = 1.0
    log_probs = frames.log_softmax(-1)
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 3.0]])
    out = SEROutput(emo_logits=logits, phn_log_probs=log_probs, frame_lens=torch.tensor([6, 6]))

    total, parts = targets.loss(out, batch)
    ce = F.cross_entropy(logits, torch.tensor([0, 2]))
    # the utterance without phones takes no part in CTC: the per-token loss of the second one alone
    ctc = F.ctc_loss(log_probs[1:].transpose(0, 1), batch.tokens.data[1:], torch.tensor([6]), torch.tensor([4]))
    assert set(parts) == {"ER", "PR"} and torch.allclose(parts["ER"], ce) and torch.allclose(parts["PR"], ctc)
    assert torch.allclose(total, ce + 0.5 * ctc)

    kept = targets.keep(out, batch)
    assert kept["ctc"]["hyp_tokens"] == [[], [TOKENS.index("F2"), TOKENS.index("V2")]]
    assert targets.columns(kept) == {"ref_tokens": ["", "F2 V2 L2 VS2"], "hyp_tokens": ["", "F2 V2"]}
    scores = targets.epoch_scores(kept)
    assert scores["PER"] == pytest.approx(2 / 4)  # two of the four reference tokens deleted
    assert scores["WA"] == pytest.approx(1 / 2)  # ang right, sad taken for neu
