"""Tests of the vote-proportion target (serkit.targets.votes): utt2votes from IEMOCAP's evaluator lines and
MSP-Podcast's and CREMA-D's rater files, batch fields, the soft-label loss, the decoded column and its
score, and a training run on soft labels."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corpus_trees import crema_tree, msp_tree
from iemocap_tree import build_trap_tree
from tiny_corpus import CLASSES, noisy_tones, tiny_w2v2_hparams, write_map, write_tiny_corpus

from serkit.corpora import get_preparer
from serkit.corpora.iemocap import prepare_iemocap
from serkit.data.datadir import DataDirError, read_map
from serkit.data.dataio import load_fold_data
from serkit.training.expdir import read_history, read_predictions
from serkit.model import build_tiny_w2v2
from serkit.model.ser_model import SEROutput
from serkit.scoring.scoring import score_experiment
from serkit.targets import TargetSet
from serkit.targets.votes import VotesTarget
from serkit.data.votes import format_votes, parse_votes
from serkit.training.train import train_fold


def votes_of(index: int) -> str:
    """Three raters: two give the utterance's own emotion, one the next class (utterance 0: no vote)."""
    emo = index % 4
    return "" if index == 0 else format_votes({CLASSES[emo]: 2, CLASSES[(emo + 1) % 4]: 1})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    paths = write_tiny_corpus(root, 16, seconds=lambda i: 0.5 + 0.125 * (i % 5), waveform=noisy_tones(200, 150),
                              splits={"train": range(0, 8), "valid": range(8, 12), "test": range(12, 16)})
    utts = (paths["data"] / "utt2emo").read_text().split()[::2]
    write_map(paths["data"] / "utt2votes", {utt: votes_of(i) for i, utt in enumerate(utts)})
    return {**paths, "encoder": build_tiny_w2v2(root / "tiny_w2v2")}


def test_iemocap_prep_counts_the_external_evaluators_votes_through_the_class_map(tmp_path):
    """Every block of the look-alike tree has C-E2 "Neutral", C-E3 "Anger; Frustration" and the actor's own
    C-F1/C-M1 "Neutral; Anger" (not an annotator's vote). The 4-class map drops fru, the 5-class map keeps it."""
    tree = build_trap_tree(tmp_path / "IEMOCAP_full_release")
    prepare_iemocap(tree.root, tmp_path / "four", "4class")
    prepare_iemocap(tree.root, tmp_path / "five", "5class")
    four, five = read_map(tmp_path / "four" / "utt2votes"), read_map(tmp_path / "five" / "utt2votes")
    assert four and set(four) == set(read_map(tmp_path / "four" / "utt2emo"))
    assert set(four.values()) == {"ang:1 neu:1"}
    assert set(five.values()) == {"ang:1 neu:1 fru:1"}


@pytest.mark.parametrize("corpus_name, build", [("msp_podcast", msp_tree), ("crema_d", crema_tree)])
def test_the_target_reads_the_rater_votes_msp_podcast_and_crema_d_preps_write(tmp_path, corpus_name, build):
    tree = build(tmp_path / corpus_name)
    get_preparer(corpus_name)(tree.root, "4class", tmp_path / "d")
    target = VotesTarget({"data_dir": tmp_path / "d", "vote_weight": 1.0})
    target.prepare()
    utts = sorted(read_map(tmp_path / "d" / "utt2emo"))
    proportions = {utt: target.fields(value)["votes"] for utt, value in target.read(tmp_path / "d", utts).items()}
    four = {"A": "ang", "H": "hap", "S": "sad", "N": "neu", "ANG": "ang", "HAP": "hap", "SAD": "sad", "NEU": "neu"}
    for utt in utts:  # each planted vote of a kept class, as a share of the utterance's kept votes
        kept = {four[code]: n for code, n in tree.votes[utt].items() if code in four}
        expected = [kept.get(label, 0) / max(sum(kept.values()), 1) for label in target.classes]
        assert proportions[utt].tolist() == pytest.approx(expected), utt


def test_votes_parse_and_bad_values_name_the_file():
    assert parse_votes("neu:1 ang:2", CLASSES, "x") == [2, 0, 0, 1]
    assert parse_votes("", CLASSES, "x") == [0, 0, 0, 0]
    with pytest.raises(DataDirError, match="where: 'fru:1'"):
        parse_votes("fru:1", CLASSES, "where")


def test_batch_fields_soft_label_loss_decoding_and_scores(corpus):
    targets = TargetSet.from_config({"data_dir": corpus["data"], "vote_weight": 0.5})
    data = load_fold_data(corpus["data"], corpus["fold"], targets)
    batch = data.train.collate([data.train[0], data.train[1]])  # no votes; hap:2 sad:1
    assert batch.votes.tolist() == [[0, 0, 0, 0], [0, pytest.approx(2 / 3), pytest.approx(1 / 3), 0]]

    logits = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 1.0, 0.0]])
    out = SEROutput(emo_logits=logits, phn_log_probs=None, frame_lens=None)
    total, parts = targets.loss(out, batch)
    log_posteriors = logits.log_softmax(-1)[1]
    soft_ce = -(2 / 3 * log_posteriors[1] + 1 / 3 * log_posteriors[2])  # the voted utterance only
    assert torch.allclose(parts["VT"], soft_ce) and torch.allclose(total, parts["ER"] + 0.5 * soft_ce)
    columns = targets.columns(targets.keep(out, batch))
    assert columns == {"ref_votes": ["", "hap:0.6667 sad:0.3333"]}


@pytest.mark.timeout(900)
def test_soft_labels_train_and_the_rater_agreement_is_scored(corpus, tmp_path):
    fold = tmp_path / "exp" / "votes" / "proto" / "fold1"
    hparams = {**tiny_w2v2_hparams(corpus, fold), "vote_weight": 1.0}  # a variant config's key
    train_fold(hparams, {"device": "cpu", "noprogressbar": True})
    losses = [record["train_VT"] for record in read_history(fold / "history.jsonl")]
    assert losses[-1] < 0.8 * losses[0], losses  # the posteriors move towards the vote proportions
    predictions = read_predictions(fold / "test_predictions.tsv")
    assert predictions.extras["ref_votes"][0] == "ang:0.6667 hap:0.3333"  # spk3-u12: ang 2, hap 1
    summary = score_experiment(fold.parent)
    assert 0 <= summary["pooled"]["rater_agreement"] <= 1 and summary["pooled"]["UA"] is not None
