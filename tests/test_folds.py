"""Folds: LOSO, leave-one-session-out and random splits on a synthetic corpus."""
import logging
import random
from collections import Counter
from pathlib import Path

import pytest

from serkit.data import datadir
from serkit.bin import make_folds as make_folds_cli
from serkit.data.folds import (FoldError, check_no_leakage, load_fold, loso_folds, loso_session_folds,
                          make_folds, random_folds, stratified_sample)

EMOTIONS = ["ang", "hap", "sad", "neu"]


def synthetic_corpus(sessions=("Ses01", "Ses02", "Ses03"), single_speaker=(), seed=0):
    """utt2spk/utt2session/utt2emo: two speakers (F, M) per session, uneven utterance counts."""
    rng = random.Random(seed)
    utt2spk, utt2session, utt2emo = {}, {}, {}
    for session in sessions:
        for gender in ("F",) if session in single_speaker else ("F", "M"):
            speaker = session + gender
            for i in range(rng.randint(30, 50)):
                utt = f"{speaker}-u{i:03d}"
                utt2spk[utt], utt2session[utt] = speaker, session
                utt2emo[utt] = rng.choices(EMOTIONS, weights=[2, 3, 2, 3])[0]
    return utt2spk, utt2session, utt2emo


def write_corpus(data: Path, utt2spk, utt2session, utt2emo) -> Path:
    """A valid Kaldi data directory (stage 2 validates it before building folds)."""
    datadir.write_map(data / "wav.scp", {utt: f"/corpus/{utt}.wav" for utt in utt2spk})
    datadir.write_map(data / "spk2utt", {spk: " ".join(datadir.c_sorted(u for u in utt2spk if utt2spk[u] == spk))
                                         for spk in set(utt2spk.values())})
    datadir.write_map(data / "utt2spk", utt2spk)
    datadir.write_map(data / "utt2session", utt2session)
    datadir.write_map(data / "utt2emo", utt2emo)
    return data


def speakers(utts, utt2spk):
    return {utt2spk[u] for u in utts}


def test_loso_one_fold_per_speaker_with_session_partner_as_valid():
    utt2spk, utt2session, _ = synthetic_corpus()
    folds = loso_folds(utt2spk, utt2session)
    assert [f.name for f in folds] == [f"fold{i:02d}" for i in range(1, 7)]
    ordered = sorted(set(utt2spk.values()))
    for fold, test_spk in zip(folds, ordered):
        assert speakers(fold.test, utt2spk) == {test_spk}
        partner = test_spk[:-1] + ("M" if test_spk.endswith("F") else "F")
        assert speakers(fold.valid, utt2spk) == {partner}
        assert speakers(fold.train, utt2spk) == set(ordered) - {test_spk, partner}
        assert len(fold.train) + len(fold.valid) + len(fold.test) == len(utt2spk)
        assert fold.test == sorted(fold.test)
        check_no_leakage(fold.sets(), utt2spk)


def test_loso_single_speaker_session_gets_seeded_disjoint_valid(caplog):
    utt2spk, utt2session, _ = synthetic_corpus(single_speaker=("Ses02",))
    fold = next(f for f in loso_folds(utt2spk, utt2session, seed=3) if f.test[0].startswith("Ses02F"))
    valid_spks = speakers(fold.valid, utt2spk)
    assert len(valid_spks) == 1 and not valid_spks & {"Ses02F"}
    assert not valid_spks & speakers(fold.train, utt2spk)
    assert "no other speaker" in caplog.text
    again = next(f for f in loso_folds(utt2spk, utt2session, seed=3) if f.test[0].startswith("Ses02F"))
    assert again.valid == fold.valid
    check_no_leakage(fold.sets(), utt2spk)


def test_loso_session_valid_is_stratified_share_of_training():
    utt2spk, utt2session, utt2emo = synthetic_corpus()
    folds = loso_session_folds(utt2spk, utt2session, utt2emo, seed=1)
    assert len(folds) == 3
    for fold, session in zip(folds, ["Ses01", "Ses02", "Ses03"]):
        assert {utt2session[u] for u in fold.test} == {session}
        pool = fold.train + fold.valid
        assert len(fold.valid) == round(0.1 * len(pool))
        assert not set(fold.valid) & set(fold.train)
        groups = Counter((utt2spk[u], utt2emo[u]) for u in pool)
        taken = Counter((utt2spk[u], utt2emo[u]) for u in fold.valid)
        for group, size in groups.items():
            assert abs(taken[group] - 0.1 * size) < 1, group
        check_no_leakage(fold.sets(), utt2spk)


def test_random_split_is_80_10_10_by_emotion_and_warns(caplog):
    utt2spk, _, utt2emo = synthetic_corpus()
    with caplog.at_level(logging.WARNING):
        (fold,) = random_folds(utt2emo, seed=1)
    assert "speaker-DEPENDENT" in caplog.text
    n = len(utt2emo)
    assert len(fold.test) == round(0.1 * n)
    assert abs(len(fold.valid) - 0.1 * n) <= 1
    per_emotion = Counter(utt2emo.values())
    test_emotions = Counter(utt2emo[u] for u in fold.test)
    for emotion, count in per_emotion.items():
        assert abs(test_emotions[emotion] - 0.1 * count) < 1
    check_no_leakage(fold.sets(), utt2spk, speaker_disjoint=False)
    with pytest.raises(FoldError, match="also in train"):
        check_no_leakage(fold.sets(), utt2spk, speaker_disjoint=True)


def test_stratified_sample_does_not_round_small_strata_away():
    utts = [f"u{i:02d}" for i in range(20)]
    chosen = stratified_sample(utts, lambda u: int(u[1:]) % 4, 0.1, random.Random(0))
    assert len(chosen) == 2
    assert len({int(u[1:]) % 4 for u in chosen}) == 2


def test_make_folds_writes_files_and_is_deterministic(tmp_path):
    data = write_corpus(tmp_path / "data", *synthetic_corpus())
    built = make_folds(data, tmp_path / "a", seed=7)
    make_folds(data, tmp_path / "b", seed=7)
    make_folds(data, tmp_path / "c", seed=8, protocols=["random"])
    assert {p: len(f) for p, f in built.items()} == {"loso": 6, "loso_session": 3, "random": 1}
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files_a) == 3 * (6 + 3 + 1) + 3 * 3  # + folds.tsv, protocol.json, leakage.txt per protocol
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert load_fold(tmp_path / "a/random/fold01")["test"] != load_fold(tmp_path / "c/random/fold01")["test"]

    rows = (tmp_path / "a/loso/folds.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:6] == ["fold", "test_speakers", "valid_speakers", "n_train", "n_valid", "n_test"]
    first = rows[1].split("\t")
    assert first[:3] == ["fold01", "Ses01F", "Ses01M"]
    loaded = load_fold(tmp_path / "a/loso/fold01")
    assert [int(x) for x in first[3:6]] == [len(loaded[s]) for s in ("train", "valid", "test")]


def test_leakage_check_catches_corrupted_fold(tmp_path):
    utt2spk, utt2session, utt2emo = synthetic_corpus()
    make_folds(write_corpus(tmp_path / "data", utt2spk, utt2session, utt2emo), tmp_path / "folds",
               protocols=["loso"])
    fold_dir = tmp_path / "folds/loso/fold02"
    fold = load_fold(fold_dir)
    check_no_leakage(fold, utt2spk)
    moved = {**fold, "valid": fold["valid"] + fold["test"][:1], "test": fold["test"][1:]}
    with pytest.raises(FoldError, match="also in valid"):
        check_no_leakage(moved, utt2spk)
    doubled = {**fold, "train": fold["train"] + fold["valid"][:1]}
    with pytest.raises(FoldError, match="in both"):
        check_no_leakage(doubled, utt2spk, speaker_disjoint=False)
    dropped = {**fold, "train": fold["train"][1:]}
    with pytest.raises(FoldError, match="in no set"):
        check_no_leakage(dropped, utt2spk)


def test_rerun_with_fewer_speakers_removes_stale_folds(tmp_path):
    data = write_corpus(tmp_path / "data", *synthetic_corpus())
    make_folds(data, tmp_path / "folds", protocols=["loso"])
    write_corpus(data, *synthetic_corpus(sessions=("Ses01", "Ses02")))
    make_folds(data, tmp_path / "folds", protocols=["loso"])
    assert sorted(p.name for p in (tmp_path / "folds/loso").glob("fold[0-9]*")) == ["fold01", "fold02", "fold03", "fold04"]


def test_cli_and_its_errors(tmp_path, capsys):
    data = write_corpus(tmp_path / "data", *synthetic_corpus())
    out = tmp_path / "folds"
    assert make_folds_cli.main(["--data", str(data), "--out", str(out), "--protocols", "loso_session"]) == 0
    assert (out / "loso_session/folds.tsv").is_file() and not (out / "loso").exists()
    assert make_folds_cli.main(["--data", str(data), "--out", str(out), "--protocols", "lopo"]) == 1
    assert "unknown protocol" in capsys.readouterr().err
    (data / "utt2session").unlink()
    assert make_folds_cli.main(["--data", str(data), "--out", str(out)]) == 1
    assert "utt2session" in capsys.readouterr().err


def test_make_folds_refuses_an_inconsistent_data_dir(tmp_path):
    """Stage 2 validates its data directory first: an unsorted utt2spk is reported, not folded."""
    from serkit.data.folds import make_folds

    data = write_corpus(tmp_path / "data", *synthetic_corpus())
    lines = (data / "utt2spk").read_text().splitlines()
    (data / "utt2spk").write_text("\n".join(reversed(lines)) + "\n")
    with pytest.raises(datadir.DataDirError, match="utt2spk"):
        make_folds(data, tmp_path / "folds")
    assert not (tmp_path / "folds").exists()
