"""Fold protocols for corpora without IEMOCAP sessions, on RAVDESS-, CREMA-D- and release-split-like
utterance maps: validation never shares a speaker with test and always holds every class; the
protocol description and leakage report say how the folds were built."""
from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from serkit.data import datadir
from serkit.data.folds import (FoldError, check_no_leakage, load_fold, loso_session_folds, loso_speaker_folds, make_folds,
                          predefined_folds, random_kfold_folds, read_protocol, sentence_kfold_folds,
                          speaker_kfold_folds, stratified_sample)

RAVDESS_CODES = ["neu", "cal", "hap", "sad", "ang", "fea", "dis", "sur"]


def ravdess_like(n_actors=24):
    """24 actors x 60 files with RAVDESS's design: neutral 4 per actor, other emotions 8; 2 sentences."""
    utt2spk, utt2emo, utt2gender, utt2sentence = {}, {}, {}, {}
    for actor in range(1, n_actors + 1):
        spk = f"Actor_{actor:02d}"
        n = 0
        for emotion in RAVDESS_CODES:
            for _ in range(4 if emotion == "neu" else 8):
                utt = f"{spk}-{n:03d}"
                utt2spk[utt], utt2emo[utt] = spk, emotion
                utt2gender[utt] = "m" if actor % 2 else "f"
                utt2sentence[utt] = f"s0{n % 2 + 1}"
                n += 1
    return utt2spk, utt2emo, utt2gender, utt2sentence


def write_dir(path: Path, utt2spk, utt2emo, **optional) -> Path:
    datadir.write_map(path / "wav.scp", {u: f"/corpus/{u}.wav" for u in utt2spk})
    datadir.write_map(path / "utt2spk", utt2spk)
    datadir.write_map(path / "spk2utt", datadir.invert_utt2spk(utt2spk))
    datadir.write_map(path / "utt2emo", utt2emo)
    for name, mapping in optional.items():
        datadir.write_map(path / name, mapping)
    return path


def test_loso_session_valid_holds_every_class_where_quotas_drop_one():
    """The reported bug: sessions smuggled in as speakers, 10 % quotas below one neutral utterance per stratum."""
    utt2spk, utt2emo, _, _ = ravdess_like()
    pool = [u for u in utt2spk if utt2spk[u] != "Actor_01"]
    old = stratified_sample(pool, lambda u: (utt2spk[u], utt2emo[u]), 0.1, random.Random("1:loso_session:Actor_01"))
    assert "neu" not in {utt2emo[u] for u in old}  # what the draw gave before it covered every class
    for fold in loso_session_folds(utt2spk, dict(utt2spk), utt2emo, seed=1):
        assert {utt2emo[u] for u in fold.valid} == set(RAVDESS_CODES), fold.name


def test_loso_speaker_on_ravdess_like():
    utt2spk, utt2emo, utt2gender, _ = ravdess_like()
    folds = loso_speaker_folds(utt2spk, utt2emo, utt2gender, seed=1)
    assert [sorted({utt2spk[u] for u in f.test}) for f in folds] == [[f"Actor_{a:02d}"] for a in range(1, 25)]
    for fold in folds:
        valid_spks = {utt2spk[u] for u in fold.valid}
        assert {utt2emo[u] for u in fold.valid} == set(RAVDESS_CODES)
        assert len(valid_spks) == 2 and {utt2gender[u] for u in fold.valid} == {"f", "m"}  # ~10 %, genders alternate
        assert not valid_spks & {utt2spk[u] for u in fold.train + fold.test}
        check_no_leakage(fold.sets(), utt2spk)


def test_speaker_kfold_groups_balanced_by_gender():
    utt2spk, utt2emo, utt2gender = {}, {}, {}
    for n in range(91):  # CREMA-D: 48 male, 43 female
        spk = str(1001 + n)
        for e, emotion in enumerate(["ang", "dis", "fea", "hap", "neu", "sad"]):
            utt = f"{spk}-{e}"
            utt2spk[utt], utt2emo[utt], utt2gender[utt] = spk, emotion, "m" if n < 48 else "f"
    folds = speaker_kfold_folds(utt2spk, utt2emo, utt2gender, k=5, seed=1)
    tested = Counter(utt2spk[u] for f in folds for u in f.test)
    assert len(tested) == 91 and set(tested.values()) == {6}  # every speaker tested exactly once
    for fold in folds:
        genders = Counter(utt2gender[u] for u in fold.test)
        assert abs(genders["m"] / 6 - 48 / 5) <= 1 and abs(genders["f"] / 6 - 43 / 5) <= 1
        assert {utt2emo[u] for u in fold.valid} == {"ang", "dis", "fea", "hap", "neu", "sad"}
        check_no_leakage(fold.sets(), utt2spk)
    with pytest.raises(FoldError, match="k=90"):
        speaker_kfold_folds(utt2spk, utt2emo, utt2gender, k=90)


def test_predefined_splits_of_msp_and_esd():
    utt2split = {f"s{i:02d}": split for i, split in enumerate(
        ["Train"] * 6 + ["Validation"] * 3 + ["Test1"] * 2 + ["Test2"] * 2)}
    utt2emo = {u: ("ang", "neu", "hap")[i % 3] for i, u in enumerate(sorted(utt2split))}
    folds = predefined_folds(utt2split, utt2emo)
    assert [f.test for f in folds] == [["s09", "s10"], ["s11", "s12"]]
    assert all(f.valid == ["s06", "s07", "s08"] and len(f.train) == 6 for f in folds)
    esd = {"a": "train", "b": "evaluation", "c": "test"}
    (fold,) = predefined_folds(esd)
    assert (fold.train, fold.valid, fold.test) == (["a"], ["b"], ["c"])
    with pytest.raises(FoldError, match="holds no utterance of class"):
        predefined_folds(utt2split, dict(utt2emo, s06="sad", s07="sad", s08="sad"))
    with pytest.raises(FoldError, match="neither train"):
        predefined_folds({"a": "train", "b": "holdout", "c": "test"})


def test_random_kfold_and_sentence_kfold(tmp_path):
    utt2spk, utt2emo, utt2gender, utt2sentence = ravdess_like(6)
    folds = random_kfold_folds(utt2emo, k=5, seed=2)
    assert sorted(u for f in folds for u in f.test) == sorted(utt2emo)  # each utterance tested once
    assert all({utt2emo[u] for u in f.valid} == set(RAVDESS_CODES) for f in folds)
    folds = sentence_kfold_folds(utt2sentence, utt2emo, k=5, seed=1)
    assert len(folds) == 2  # RAVDESS has two sentences
    for fold in folds:
        assert not {utt2sentence[u] for u in fold.test} & {utt2sentence[u] for u in fold.train + fold.valid}


def test_protocol_files_describe_the_folds_built(tmp_path):
    utt2spk, utt2emo, utt2gender, utt2sentence = ravdess_like(6)
    data = write_dir(tmp_path / "data", utt2spk, utt2emo, utt2gender=utt2gender, utt2sentence=utt2sentence)
    with pytest.raises(FoldError, match="no utt2session"):
        make_folds(data, tmp_path / "folds", protocols=["default"])
    with pytest.raises(FoldError, match="needs .*utt2split"):
        make_folds(data, tmp_path / "folds", protocols=["predefined"])
    make_folds(data, tmp_path / "folds", protocols=["loso_speaker", "random_kfold", "sentence_kfold"], k=3)
    loso = read_protocol(tmp_path / "folds" / "loso_speaker")
    assert loso["name"] == "loso_speaker" and loso["speaker_dependent"] is False and loso["n_folds"] == 6
    assert "Leave one speaker out: 6 folds" in loso["description"] and "2 distinct sentence" in loso["description"]
    assert loso["sentence_overlap"] is True and loso["valid_missing_classes"] == {}
    assert [f["test_speakers"] for f in loso["folds"]] == [[f"Actor_{a:02d}"] for a in range(1, 7)]
    dependent = read_protocol(tmp_path / "folds" / "random_kfold")
    assert dependent["speaker_dependent"] is True and dependent["k"] == 3
    assert "Speaker-DEPENDENT" in dependent["description"]
    sentence = read_protocol(tmp_path / "folds" / "sentence_kfold")
    assert sentence["sentence_overlap"] is False and "Sentence-disjoint 2-fold" in sentence["description"]
    leakage = (tmp_path / "folds" / "random_kfold" / "leakage.txt").read_text().splitlines()
    assert "speaker-DEPENDENT" in leakage[0] and "2 distinct sentences" in leakage[1]
    assert leakage[3].startswith("fold01\tActor_01,Actor_02")
    fold = load_fold(tmp_path / "folds" / "loso_speaker" / "fold01")
    assert sum(map(len, fold.values())) == len(utt2spk)
    (tmp_path / "folds" / "loso_speaker" / "protocol.json").unlink()
    with pytest.raises(FoldError, match=r"rebuild the folds in the recipe folder: \./run\.sh --stage 2 --stop_stage 2"):
        read_protocol(tmp_path / "folds" / "loso_speaker")


def test_too_few_speakers_is_a_clear_error():
    utt2spk = {"a-1": "a", "b-1": "b", "c-1": "c"}
    utt2emo = {"a-1": "ang", "b-1": "neu", "c-1": "hap"}  # every speaker holds a class nobody else has
    with pytest.raises(FoldError, match="no training speaker is left"):
        loso_speaker_folds(utt2spk, utt2emo)


def test_confounded_port_reports_coverage_confounding_genders_and_real_sizes(tmp_path, caplog):
    """The second port of issue 19: 6 speakers (3 f, 3 m) who each recorded one or two of 4 emotions.
    Validation speakers match the test speaker's gender; folds.tsv, protocol.json, the log and
    leakage.txt say which classes each test/valid set holds and who recorded what; the description
    states validation's real share rather than a nominal ~10 %."""
    recorded = {"F1": ["ang", "hap"], "F2": ["sad", "neu"], "F3": ["ang", "neu"],
                "M1": ["hap", "sad"], "M2": ["ang"], "M3": ["neu", "sad", "hap"]}
    utt2spk, utt2emo, utt2gender = {}, {}, {}
    for spk, emotions in recorded.items():
        for emotion in emotions:
            for n in range(5):
                utt = f"{spk}-{emotion}{n}"
                utt2spk[utt], utt2emo[utt], utt2gender[utt] = spk, emotion, spk[0].lower()
    data = write_dir(tmp_path / "data", utt2spk, utt2emo, utt2gender=utt2gender)
    with caplog.at_level("INFO"):
        folds = make_folds(data, tmp_path / "folds", ["loso_speaker"])["loso_speaker"]
    out = tmp_path / "folds" / "loso_speaker"
    rows = [dict(zip(*(line.split("\t") for line in pair)))
            for pair in [((out / "folds.tsv").read_text().splitlines()[0], line)
                         for line in (out / "folds.tsv").read_text().splitlines()[1:]]]
    for fold, row in zip(folds, rows):
        test_spk = row["test_speakers"]
        first_valid = sorted({utt2spk[u] for u in fold.valid})
        assert any(s[0] == test_spk[0] for s in first_valid), (test_spk, first_valid)  # a voice of the same gender
        assert row["test_genders"] == ("f1" if test_spk[0] == "F" else "m1")
        assert row["valid_genders"] != "-"
    m2 = rows[4]
    assert m2["test_speakers"] == "M2" and m2["test_classes"] == "1/4 (no hap,neu,sad)"
    assert "4/4" == m2["valid_classes"]
    assert "2 of 5 speakers, 25 of 55 non-test utterances (45%)" in m2["valid_rule"]
    assert "the first drawn of the test speaker's gender (m)" in m2["valid_rule"]
    info = read_protocol(out)
    assert info["test_missing_classes"]["fold05"] == ["hap", "neu", "sad"]
    assert info["confounded_speakers"] == {s: sorted(e) for s, e in recorded.items()}
    assert info["folds"][4]["test_classes"] == ["ang"] and info["folds"][4]["valid_classes"] == ["ang", "hap", "neu", "sad"]
    assert "% of the non-test utterances" in info["description"] and "~10" not in info["description"]
    assert "in 6 of 6 fold(s) the test set lacks a class" in info["description"]
    leakage = (out / "leakage.txt").read_text()
    assert "6 of 6 speakers recorded only some of the 4 classes" in leakage
    assert "#   M2: ang (no hap,neu,sad)" in leakage
    log = caplog.text
    assert "fold05: the test set holds 1/4 (no hap,neu,sad) classes" in log
    assert "loso_speaker fold05: test M2 (10 utts" not in log and "loso_speaker fold05: test M2 (5 utts, classes 1/4" in log
