"""Ambiguous utterances (no rater majority, IEMOCAP's ``xxx``): stage 0 writes them to the data directory's
``ambiguous/`` folder; ``use_ambiguous`` adds the training speakers' ones to the training set, where only
the vote target teaches them; validation and test never see them. Checked on the mini IEMOCAP look-alike."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from serkit.corpora.iemocap import prepare_iemocap
from serkit.data.datadir import AMBIGUOUS_DIR, DataDirError, read_map
from serkit.data.dataio import load_fold_data
from serkit.data.folds import make_folds
from serkit.model.ser_model import SEROutput
from serkit.synth.mini_iemocap import make_mini_iemocap
from serkit.targets import TargetSet
from serkit.targets.base import TargetError
from serkit.training.experiments import switch_parts

TINY = dict(utts_per_speaker=4, others_per_speaker=2, dialogs_per_session=2, jobs=2, progress=False)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("mini")
    root = make_mini_iemocap(out / "corpus", seed=1, **TINY)
    prepare_iemocap(root, out / "data", "4class")
    make_folds(out / "data", out / "folds", protocols=["loso"])
    return {"corpus": out / "corpus", "data": out / "data", "folds": out / "folds" / "loso"}


def manifest_codes(corpus: Path) -> dict[str, str]:
    with open(corpus / "manifest.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {row["utt"]: row["code"] for row in rows}


def test_prep_writes_the_no_majority_utterances_apart_with_their_votes(prepared):
    folder = prepared["data"] / AMBIGUOUS_DIR
    ambiguous = read_map(folder / "utt2raw_emo")
    xxx = sorted(utt for utt, code in manifest_codes(prepared["corpus"]).items() if code == "xxx")
    assert sorted(utt.split("-", 1)[1] for utt in ambiguous) == xxx and set(ambiguous.values()) == {"xxx"}
    assert not (folder / "utt2emo").exists()
    votes = read_map(folder / "utt2votes")
    assert set(votes) == set(ambiguous) and all(votes.values())
    assert set(read_map(folder / "utt2spk")) == set(ambiguous)
    labelled = read_map(prepared["data"] / "utt2raw_emo")
    assert "xxx" not in labelled.values() and not set(labelled) & set(ambiguous)


def fold_data(prepared, fold: str, **config):
    targets = TargetSet.from_config({"data_dir": prepared["data"], "use_ambiguous": True, **config})
    return load_fold_data(prepared["data"], prepared["folds"] / fold, targets, ambiguous=True)


def test_training_gets_only_its_own_speakers_ambiguous_utterances(prepared):
    ambiguous = read_map(prepared["data"] / AMBIGUOUS_DIR / "utt2spk")
    utt2spk = read_map(prepared["data"] / "utt2spk")
    targets = TargetSet.from_config({"data_dir": prepared["data"], "vote_weight": 1.0})
    for fold in sorted(path.name for path in prepared["folds"].glob("fold*") if path.is_dir()):
        clear = load_fold_data(prepared["data"], prepared["folds"] / fold, targets)
        data = fold_data(prepared, fold, vote_weight=1.0)
        train_speakers = {utt2spk[u.utt_id] for u in clear.train.utterances}
        added = [u.utt_id for u in data.train.utterances[len(clear.train):]]
        assert sorted(added) == sorted(utt for utt, spk in ambiguous.items() if spk in train_speakers)
        assert added and all(u.emotion < 0 for u in data.train.utterances[len(clear.train):])
        for split in ("valid", "test"):  # the clear fold lists, unchanged
            assert [u.utt_id for u in getattr(data, split).utterances] == \
                   [u.utt_id for u in getattr(clear, split).utterances]
            assert not set(ambiguous) & {u.utt_id for u in getattr(data, split).utterances}


def test_ambiguous_utterances_teach_the_vote_loss_only(prepared):
    data = fold_data(prepared, "fold01", vote_weight=0.5)
    first_ambiguous = next(i for i, u in enumerate(data.train.utterances) if u.emotion < 0)
    batch = data.train.collate([data.train[0], data.train[first_ambiguous]])
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 1.0, 0.0, -2.0]])
    out = SEROutput(emo_logits=logits, phn_log_probs=None, frame_lens=None)
    total, parts = data.targets.loss(out, batch)
    expected_ce = torch.nn.functional.cross_entropy(logits[:1], batch.emo[:1].long())
    torch.testing.assert_close(parts["ER"], expected_ce)  # the labelled utterance alone
    soft = -(batch.votes * logits.log_softmax(-1)).sum(-1).mean()  # both have votes
    torch.testing.assert_close(parts["VT"], soft)
    torch.testing.assert_close(total, expected_ce + 0.5 * soft)

    only = data.train.collate([data.train[first_ambiguous]])
    _, parts = data.targets.loss(SEROutput(emo_logits=logits[1:], phn_log_probs=None, frame_lens=None), only)
    assert parts["ER"].item() == 0.0 and parts["VT"].item() > 0


def test_without_a_soft_target_or_an_ambiguous_folder_the_switch_is_refused(prepared, tmp_path):
    with pytest.raises(TargetError, match="vote_weight > 0"):
        fold_data(prepared, "fold01")
    bare = tmp_path / "data"
    bare.mkdir()
    for path in prepared["data"].iterdir():
        if path.is_file():
            (bare / path.name).write_bytes(path.read_bytes())
    targets = TargetSet.from_config({"data_dir": bare, "vote_weight": 1.0})
    with pytest.raises(DataDirError, match="ambiguous.*use_ambiguous: False"):
        load_fold_data(bare, prepared["folds"] / "fold01", targets, ambiguous=True)


def test_the_switch_names_the_experiment():
    assert "amb" in switch_parts({"use_ambiguous": True}, "brain")
    assert "amb" not in switch_parts({"use_ambiguous": False}, "brain")
