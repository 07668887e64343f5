"""Stage 0 of RAVDESS, CREMA-D, Emo-DB, ESD and MSP-Podcast on look-alike trees: ground truth, every
trap counted with its reason, full-release count checks (intact passes, damaged fails naming what is
missing), the rater votes (utt2votes) of CREMA-D and MSP-Podcast, the audio audit, the shared
contract (registry, CLI, validator)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from corpus_trees import (ESD_TEXTS, ESD_ZH_TEXTS, LABLAUT_PHONES, crema_full, crema_tree, emodb_full, emodb_tree,
                          esd_tree, msp_tree, ravdess_full, ravdess_tree, write_wav)

from serkit.bin import prepare_corpus as prepare_cli
from serkit.bin import validate_data_dir as validate_cli
from serkit.corpora import CorpusError, get_preparer, load_class_map, shipped_class_maps
from serkit.corpora.common import AudioAudit, Tally, audit_wav, declared_wav_frames
from serkit.corpora.emodb import parse_lablaut
from serkit.data.datadir import DataDirError, read_list, read_map, validate_data_dir
from serkit.data.votes import parse_votes

# Class maps typed here independently of the shipped YAML files.
RAVDESS_8 = {"01": "neu", "02": "cal", "03": "hap", "04": "sad", "05": "ang", "06": "fea", "07": "dis", "08": "sur"}
CREMA_6 = {"ANG": "ang", "DIS": "dis", "FEA": "fea", "HAP": "hap", "NEU": "neu", "SAD": "sad"}
EMODB_7 = {"W": "ang", "L": "bor", "E": "dis", "A": "fea", "F": "hap", "T": "sad", "N": "neu"}
MSP_8 = {"A": "ang", "H": "hap", "S": "sad", "N": "neu", "F": "fea", "D": "dis", "U": "sur", "C": "con"}


def prepare(corpus, root, out, class_map, **kw):
    return get_preparer(corpus)(root, class_map, out, **kw)


def check_ground_truth(out: Path, tree, mapping, fields=("spk", "gender", "sentence", "split")):
    files = {"spk": "utt2spk", "gender": "utt2gender", "sentence": "utt2sentence", "split": "utt2split"}
    assert sorted(read_map(out / "wav.scp")) == sorted(tree.expected)
    assert read_map(out / "utt2emo") == {u: mapping[e["code"]] for u, e in tree.expected.items()}
    assert read_map(out / "utt2raw_emo") == {u: e["code"] for u, e in tree.expected.items()}
    for field in fields:
        assert read_map(out / files[field]) == {u: e[field] for u, e in tree.expected.items()}, field
    validate_data_dir(out, complete=True)


def check_votes(out: Path, tree, mapping) -> dict[str, list[int]]:
    """``utt2votes`` holds each written utterance's planted votes counted per class (codes the map drops
    not counted)."""
    classes = read_list(out / "classes")
    expected = {}
    for utt in read_map(out / "wav.scp"):
        expected[utt] = [0] * len(classes)
        for code, count in tree.votes[utt].items():
            if code in mapping:
                expected[utt][classes.index(mapping[code])] += count
    written = {utt: parse_votes(value, classes, utt) for utt, value in read_map(out / "utt2votes").items()}
    assert written == expected
    validate_data_dir(out, complete=True)
    return written


def check_skips(report, tree):
    """Every planted trap is a counted skip whose reason names what is wrong."""
    for reason_fragment, names in tree.skipped.items():
        matching = [r for r in report.skipped.counts if reason_fragment in r]
        assert matching, f"no skip reason mentions {reason_fragment!r}: {dict(report.skipped.counts)}"
        examples = " ".join(e for r in matching for e in report.skipped.examples[r])
        for name in names:
            assert name in examples, (reason_fragment, name)
    text = (report.out_dir / "prep_report.txt").read_text()
    assert all(e in text for examples in report.skipped.examples.values() for e in examples)


# ------------------------------------------------------------------------------------ RAVDESS

@pytest.fixture(scope="module")
def ravdess(tmp_path_factory):
    tree = ravdess_tree(tmp_path_factory.mktemp("ravdess") / "RAVDESS")
    out = tmp_path_factory.mktemp("d") / "ravdess"
    return tree, prepare("ravdess", tree.root, out, "8class"), out


def test_ravdess_ground_truth_and_traps(ravdess):
    tree, report, out = ravdess
    check_ground_truth(out, tree, RAVDESS_8, fields=("spk", "gender", "sentence"))
    check_skips(report, tree)
    assert read_list(out / "language") == ["en"] and read_list(out / "classes") == list(
        load_class_map("8class", "ravdess").classes)
    texts = read_map(out / "text")
    assert texts["Actor_02-03-01-05-01-02-01-02"] == "Dogs are sitting by the door"
    assert texts["Actor_02-03-01-05-01-01-01-02"] == "Kids are talking by the door"
    assert not (out / "utt2session").exists() and not (out / "utt2split").exists()
    assert report.count_check == "not run (partial copy)" and not report.full_release


def test_ravdess_odd_audio_is_kept_and_audited(ravdess):
    tree, report, out = ravdess
    durations = read_map(out / "utt2dur")
    assert durations["Actor_01-03-01-03-02-01-02-01"] == "0.100"  # extra LIST chunk before data: read fine
    assert any("03-01-04-02-02-02-01" in e for e in report.notes.examples["wav not mono (kept; loaders downmix)"])
    assert any("44100 Hz" in e for e in report.notes.examples["wav not 16000 Hz (kept; loaders resample)"])
    quiet = [r for r in report.notes.counts if r.startswith("very quiet")]
    assert quiet and "03-01-06-02-01-02-01" in report.notes.examples[quiet[0]][0]
    summary = "\n".join(report.summary_lines())
    assert "48000 Hz: " in summary and "44100 Hz: 1" in summary and "channels 1: " in summary and "2: 1" in summary
    assert "peak dBFS" in summary and "silence" in summary


@pytest.mark.parametrize("name, kept", [("4class", {"01", "03", "04", "05"}),
                                        ("6class", {"01", "03", "04", "05", "06", "07"})])
def test_ravdess_subset_maps_exclude_and_count(ravdess, tmp_path, name, kept):
    tree, _, _ = ravdess
    report = prepare("ravdess", tree.root, tmp_path / "d", name)
    assert set(read_map(tmp_path / "d" / "utt2raw_emo").values()) == kept
    excluded = {c for c in RAVDESS_8 if c not in kept}
    assert set(report.excluded_codes) == excluded
    for code in excluded:  # every speech file of an excluded code is counted, broken ones too (never read)
        assert report.excluded_codes[code] == report.code_counts[code] >= sum(
            1 for e in tree.expected.values() if e["code"] == code)


@pytest.fixture(scope="module")
def ravdess_release(tmp_path_factory):
    return ravdess_full(tmp_path_factory.mktemp("ravdess_full") / "RAVDESS")


def test_ravdess_full_release_passes_and_a_damaged_one_fails_naming_the_file(ravdess_release, tmp_path):
    report = prepare("ravdess", ravdess_release, tmp_path / "ok", "8class")
    assert report.full_release and report.count_check == "passed" and report.n_utterances == 1440
    assert report.class_counts["neu"] == 96 and report.class_counts["sur"] == 192
    lost = ravdess_release / "Actor_07" / "03-01-05-02-01-02-07.wav"
    aside = tmp_path / lost.name
    shutil.move(lost, aside)
    try:
        with pytest.raises(CorpusError) as info:
            prepare("ravdess", ravdess_release, tmp_path / "bad", "8class")
        partial = prepare("ravdess", ravdess_release, tmp_path / "partial", "8class", strict=False)
    finally:
        shutil.move(aside, lost)
    message = str(info.value)
    assert "emotion code 05: found 191, expected 192" in message
    assert "Actor_07/03-01-05-02-01-02-07.wav" in message and "--no-strict" in message
    assert not (tmp_path / "bad").exists()
    assert partial.count_check == "not run (strict=False)" and partial.n_utterances == 1439


def test_ravdess_wrong_roots_say_where_to_point(ravdess, tmp_path):
    tree, _, _ = ravdess
    with pytest.raises(CorpusError, match="does not exist"):
        prepare("ravdess", tmp_path / "nope", tmp_path / "d", "8class")
    with pytest.raises(CorpusError, match=f"use --root {tree.root}"):
        prepare("ravdess", tree.root.parent, tmp_path / "d", "8class")
    typo = tmp_path / "typo.yaml"
    typo.write_text('classes: [a]\nmap: {"5": a}\n')
    with pytest.raises(CorpusError, match=r"\['5'\] that RAVDESS does not use"):
        prepare("ravdess", tree.root, tmp_path / "d", typo)


# ------------------------------------------------------------------------------------ CREMA-D

def test_crema_ground_truth_known_empty_clip_and_traps(tmp_path):
    tree = crema_tree(tmp_path / "CREMA-D")
    report = prepare("crema_d", tree.root, tmp_path / "d", "6class")
    check_ground_truth(tmp_path / "d", tree, CREMA_6, fields=("spk", "gender", "sentence"))
    check_skips(report, tree)
    assert report.skipped.counts["known empty clip of the release"] == 1
    assert read_map(tmp_path / "d" / "text")["1001-1001_IEO_ANG_XX"] == "It's eleven o'clock"
    (tree.root / "VideoDemographics.csv").unlink()
    report = prepare("crema_d", tree.root, tmp_path / "e", "6class")
    assert not (tmp_path / "e" / "utt2gender").exists()
    assert "VideoDemographics.csv missing (no utt2gender written)" in report.notes.counts


def test_crema_voice_only_rater_votes_from_tabulated_votes(tmp_path):
    tree = crema_tree(tmp_path / "CREMA-D")
    report = prepare("crema_d", tree.root, tmp_path / "d", "6class")
    written = check_votes(tmp_path / "d", tree, CREMA_6)
    assert written["1002-1002_IEO_NEU_LO"] == [0] * 6  # no rater row: empty value, noted
    assert report.notes.examples["no votes in tabulatedVotes.csv (empty utt2votes value)"] == ["1002_IEO_NEU_LO"]
    tabulated = tree.root / "processedResults" / "tabulatedVotes.csv"
    assert report.notes.examples["tabulatedVotes.csv row whose id or vote counts are not numbers (not counted)"] == [
        f"{tabulated}:{len(tabulated.read_text().splitlines())}"]
    report = prepare("crema_d", tree.root, tmp_path / "four", "4class")
    check_votes(tmp_path / "four", tree, {"ANG": "ang", "HAP": "hap", "SAD": "sad", "NEU": "neu"})


def test_crema_without_rater_file_writes_no_votes_and_a_bad_header_names_the_file(tmp_path):
    tree = crema_tree(tmp_path / "CREMA-D", raters=False)
    report = prepare("crema_d", tree.root, tmp_path / "d", "6class")
    assert not (tmp_path / "d" / "utt2votes").exists()
    tabulated = tree.root / "processedResults" / "tabulatedVotes.csv"
    assert report.notes.examples["rater file missing (no utt2votes written; the votes target needs it)"] == [
        str(tabulated)]
    tabulated.parent.mkdir()
    tabulated.write_text('"","A","D","F","H","N","fileName"\n"100001",1,0,0,0,0,"1001_DFA_ANG_XX"\n')
    with pytest.raises(CorpusError) as info:
        prepare("crema_d", tree.root, tmp_path / "e", "6class")
    assert str(tabulated) in str(info.value) and "['S'] missing" in str(info.value)


def test_crema_full_release_expects_7441_written_and_fails_when_damaged(tmp_path):
    root = crema_full(tmp_path / "CREMA-D")
    report = prepare("crema_d", root, tmp_path / "ok", "6class")
    assert report.full_release and report.count_check == "passed"
    assert report.n_utterances == 7441 and report.class_counts["sad"] == 1270 and report.class_counts["neu"] == 1087
    (root / "AudioWAV" / "1050_TIE_NEU_XX.wav").unlink()
    with pytest.raises(CorpusError) as info:
        prepare("crema_d", root, tmp_path / "bad", "6class")
    assert "emotion code NEU: found 1086, expected 1087" in str(info.value)
    assert "1050 " in str(info.value)  # the actor with the fewest files is named


# ------------------------------------------------------------------------------------- Emo-DB

def test_emodb_ground_truth_lablaut_phones_and_traps(tmp_path):
    tree = emodb_tree(tmp_path / "emodb", folder="wav_corpus")
    report = prepare("emodb", tree.root, tmp_path / "d", "7class")
    check_ground_truth(tmp_path / "d", tree, EMODB_7, fields=("spk", "gender", "sentence"))
    check_skips(report, tree)
    assert read_list(tmp_path / "d" / "language") == ["de"]
    sampa = read_map(tmp_path / "d" / "utt2sampa")
    assert sampa["03-03a01Wa"] == " ".join(LABLAUT_PHONES)  # the xx file wins over its twin
    assert sampa["03-03a02Wb"] == ""  # no label file: empty, counted
    assert report.notes.counts["two lablaut files for one utterance (the 'xx' one used)"] == 1
    assert read_map(tmp_path / "d" / "text")["08-08a04La"] == "Heute abend könnte ich es ihm sagen."
    shutil.rmtree(tree.root / "lablaut")
    prepare("emodb", tree.root, tmp_path / "d", "4class")
    assert not (tmp_path / "d" / "utt2sampa").exists()  # stale file of the first run removed


def test_lablaut_is_latin1_with_a_header(tmp_path):
    path = tmp_path / "x.lablaut"
    path.write_bytes("signal x\nnfields 1\n#\n  0.1 121 .\n  0.2 121 'a:\n  0.3 121 \xe7\n".encode("latin-1"))
    assert parse_lablaut(path) == [".", "'a:", "\xe7"]


def test_emodb_full_release_counts(tmp_path):
    root = emodb_full(tmp_path / "emodb")
    report = prepare("emodb", root, tmp_path / "ok", "7class")
    assert report.full_release and report.count_check == "passed" and report.n_utterances == 535
    next((root / "wav").glob("?????W?.wav")).unlink()
    with pytest.raises(CorpusError, match="emotion code W: found 126, expected 127"):
        prepare("emodb", root, tmp_path / "bad", "7class")


# ---------------------------------------------------------------------------------------- ESD

def test_esd_english_encodings_splits_and_other_language(tmp_path):
    tree = esd_tree(tmp_path / "ESD", speakers=("0011", "0015", "0012"), encodings=("utf-8", "utf-16", "latin-1"))
    report = prepare("esd", tree.root, tmp_path / "d", "5class")
    check_ground_truth(tmp_path / "d", tree, {e: e for e in ()} or {"Angry": "ang", "Happy": "hap", "Sad": "sad",
                                                                    "Neutral": "neu", "Surprise": "sur"},
                       fields=("spk", "gender", "split"))
    texts = read_map(tmp_path / "d" / "text")
    assert {texts[u] for u in tree.expected if u.startswith("0015")} == set(ESD_TEXTS)  # utf-16 decoded
    assert {texts[u] for u in tree.expected if u.startswith("0012")} == set(ESD_TEXTS)  # latin-1 decoded
    assert "text file not UTF-8, read as latin-1" in report.notes.counts
    check_skips(report, tree)
    assert report.skipped.counts["transcript line not '<id><TAB><text><TAB><emotion>'"] == 3
    assert report.notes.counts["transcript line without its wav"] == 3
    assert read_map(tmp_path / "d" / "utt2sentence")["0011-0011_000002"] == "café_au_lait_s_il_vous_plaît"
    assert any("0001" in e for e in report.notes.examples[
        "speaker folder of the other language (use --corpus esd_zh; left out)"])


def test_esd_mandarin_half_and_copies_without_split_folders(tmp_path):
    tree = esd_tree(tmp_path / "ESD", splits=False)
    report = prepare("esd_zh", tree.root, tmp_path / "zh", "5class")
    assert read_list(tmp_path / "zh" / "language") == ["zh"] and not (tmp_path / "zh" / "utt2gender").exists()
    assert set(read_map(tmp_path / "zh" / "text").values()) == set(ESD_ZH_TEXTS)
    assert report.split_counts == {"train": 5}
    prepare("esd", tree.root, tmp_path / "en", "5class")
    assert not (tmp_path / "en" / "utt2split").exists()  # no split folders: no predefined partitions
    with pytest.raises(CorpusError) as info:
        prepare("esd", tree.root, tmp_path / "strict", "5class", strict=True)
    assert "speaker+emotion 0011 Angry: found 3, expected 350" in str(info.value)
    assert "speaker+emotion 0020 Sad: found 0, expected 350" in str(info.value)


# -------------------------------------------------------------------------------- MSP-Podcast

def test_msp_ground_truth_other_and_no_agreement_excluded(tmp_path):
    tree = msp_tree(tmp_path / "MSP")
    report = prepare("msp_podcast", tree.root, tmp_path / "d", "8class")
    check_ground_truth(tmp_path / "d", tree, MSP_8, fields=("spk", "split"))
    assert dict(report.excluded_codes) == {"O": 1, "X": 1}
    assert report.skipped.counts["no EmoClass (label not released, e.g. a hidden test set)"] == 1
    assert report.skipped.counts["audio file without a label row"] == 1
    assert not (tmp_path / "d" / "utt2gender").exists()  # one utterance's gender is Unknown
    assert read_map(tmp_path / "d" / "utt2spk")["unknown-MSP-PODCAST_0103_0001"] == "unknown"
    assert report.full_release and report.count_check == "passed"
    assert "development set named Development" in report.facts[0]


@pytest.mark.parametrize("layout", ["emodetail", "major"])
def test_msp_rater_votes_from_labels_detailed(tmp_path, layout):
    tree = msp_tree(tmp_path / "MSP", raters=layout)
    report = prepare("msp_podcast", tree.root, tmp_path / "d", "8class")
    written = check_votes(tmp_path / "d", tree, MSP_8)
    assert written["100-MSP-PODCAST_0004_0001"] == [0] * 8  # no annotator row: empty value, noted
    assert report.notes.examples["no votes in labels_detailed.csv (empty utt2votes value)"] == ["MSP-PODCAST_0004_0001"]
    assert sum(tree.votes["100-MSP-PODCAST_0001_0001"].values()) > sum(written["100-MSP-PODCAST_0001_0001"])  # O
    detailed = tree.root / "Labels" / "labels_detailed.csv"
    assert report.notes.examples["labels_detailed.csv row without a file name or a primary emotion (not counted)"] == [
        f"{detailed}:{len(detailed.read_text().splitlines()) - 1}"]
    assert report.notes.counts["labels_detailed.csv: unknown primary emotion (not counted)"] == 1
    report = prepare("msp_podcast", tree.root, tmp_path / "four", "4class")
    check_votes(tmp_path / "four", tree, {"A": "ang", "H": "hap", "S": "sad", "N": "neu"})


def test_msp_without_rater_file_writes_no_votes_and_a_bad_header_names_the_file(tmp_path):
    tree = msp_tree(tmp_path / "MSP")
    prepare("msp_podcast", tree.root, tmp_path / "d", "8class")
    detailed = tree.root / "Labels" / "labels_detailed.csv"
    detailed.rename(detailed.with_suffix(".bak"))
    report = prepare("msp_podcast", tree.root, tmp_path / "d", "8class")  # rerun: the stale utt2votes goes
    assert not (tmp_path / "d" / "utt2votes").exists()
    missing = report.notes.examples["rater file missing (no utt2votes written; the votes target needs it)"]
    assert missing == [str(detailed)]
    detailed.write_text("FileName,Rater,Label\nMSP-PODCAST_0001_0001.wav,W1,Angry\n")
    with pytest.raises(CorpusError) as info:
        prepare("msp_podcast", tree.root, tmp_path / "e", "8class")
    assert str(detailed) in str(info.value) and "FileName,EmoDetail" in str(info.value)


def test_msp_older_release_spelling_and_validation_set(tmp_path):
    tree = msp_tree(tmp_path / "MSP", old_release=True)
    report = prepare("msp_podcast", tree.root, tmp_path / "d", "4class")
    assert "Validation" in set(read_map(tmp_path / "d" / "utt2split").values())
    assert any("labels_concensus.csv" in fact for fact in report.facts)


def test_msp_damaged_release_fails_and_partial_copy_is_reported(tmp_path):
    tree = msp_tree(tmp_path / "damaged", missing=1)
    with pytest.raises(CorpusError) as info:
        prepare("msp_podcast", tree.root, tmp_path / "d", "8class")
    assert "MSP-PODCAST_0103_0001.wav" in str(info.value) and "missing from Audios/" in str(info.value)
    tree = msp_tree(tmp_path / "partial", missing=8)
    report = prepare("msp_podcast", tree.root, tmp_path / "p", "8class")
    assert not report.full_release and report.count_check == "not run (partial copy)"
    assert report.skipped.counts["wav missing"] == 5  # of the 8 gone, O, X and the unlabelled row are never read


# ----------------------------------------------------------------------------- audio audit

def test_iemocap_stage0_skips_poisoned_audio_too(tmp_path):
    from iemocap_tree import TreeUtt, write_iemocap_tree

    from serkit.corpora.iemocap import prepare_iemocap

    utts = [TreeUtt(1, "F", "impro01", "F", i, "neu") for i in range(4)]
    tree = write_iemocap_tree(tmp_path / "iemocap", utts, traps=False)
    for utt, kind in zip(utts[1:], ("nan", "truncated", "zeros")):
        write_wav(utt.wav_path(tree.root), kind=kind)
    report = prepare_iemocap(tree.root, tmp_path / "d")
    assert list(read_map(tmp_path / "d" / "wav.scp")) == [utts[0].utt_id]
    for utt, reason in zip(utts[1:], ("wav holds NaN or Inf samples", "wav truncated (data shorter than its header "
                                      "says)", "wav all zeros (digital silence)")):
        assert utt.corpus_id in report.skipped.examples[reason][0]
    assert "wav truncated" in (tmp_path / "d" / "prep_report.txt").read_text()


@pytest.mark.parametrize("kind, reason", [
    ("empty", "wav empty (no samples)"), ("nan", "wav holds NaN or Inf samples"),
    ("zeros", "wav all zeros (digital silence)"), ("truncated", "wav truncated (data shorter than its header says)"),
    ("corrupt", "wav unreadable"), ("zero_bytes", "wav empty (0 bytes)")])
def test_audit_skips_poisoned_files_by_reason(tmp_path, kind, reason):
    path = write_wav(tmp_path / f"{kind}.wav", kind=kind)
    skipped, notes, audit = Tally(), Tally(), AudioAudit()
    assert audit_wav(path, skipped, notes, audit) is None
    assert dict(skipped.counts) == {reason: 1} and str(path) in skipped.examples[reason][0]
    assert audit.durations == []


def test_audit_reads_extra_chunks_and_flags_inf(tmp_path):
    path = write_wav(tmp_path / "list.wav", kind="list_chunk", rate=48000)
    assert declared_wav_frames(path) == (4800, 4800)
    truncated = write_wav(tmp_path / "cut.wav", kind="truncated")
    declared, held = declared_wav_frames(truncated)
    assert held < declared == 1600
    inf = tmp_path / "inf.wav"
    data = np.full(1600, 0.1, dtype=np.float32)
    data[3] = np.inf
    soundfile.write(str(inf), data, 16000, subtype="FLOAT")
    skipped, notes, audit = Tally(), Tally(), AudioAudit()
    facts = audit_wav(path, skipped, notes, audit)
    assert facts.frames == 4800 and facts.sample_rate == 48000 and not skipped.counts
    assert audit_wav(inf, skipped, notes, audit) is None and skipped.counts["wav holds NaN or Inf samples"] == 1


# ------------------------------------------------------------------------------- the contract

def test_prepare_corpus_cli_and_registry(ravdess, tmp_path, capsys):
    tree, _, _ = ravdess
    assert prepare_cli.main(["--list"]) == 0
    listing = capsys.readouterr().out
    for corpus in ("iemocap", "ravdess", "crema_d", "emodb", "esd", "esd_zh", "msp_podcast"):
        assert f"{corpus}: class maps" in listing
    assert prepare_cli.main(["--corpus", "ravdess", "--root", str(tree.root), "--out", str(tmp_path / "d"),
                             "--class-map", "4class"]) == 0
    assert set(read_map(tmp_path / "d" / "utt2emo").values()) == {"ang", "hap", "sad", "neu"}
    assert prepare_cli.main(["--corpus", "ravdess", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "e")]) == 1
    assert "prepare_corpus: error: RAVDESS root" in capsys.readouterr().err
    with pytest.raises(CorpusError, match="unknown corpus 'savee'"):
        get_preparer("savee")
    assert shipped_class_maps("iemocap") == ["4class", "5class", "6class"]
    assert load_class_map("4class").source.parent.name == "iemocap"  # bare names keep meaning IEMOCAP's maps
    assert shipped_class_maps("msp_podcast") == ["4class", "8class"]
    assert "O" not in load_class_map("8class", "msp_podcast").mapping


def test_validator_complete_needs_durations_and_existing_wavs(ravdess, tmp_path, capsys):
    _, _, out = ravdess
    copy = tmp_path / "d"
    shutil.copytree(out, copy)
    assert validate_cli.main([str(copy), "--complete"]) == 0
    wavs = read_map(copy / "wav.scp")
    first = sorted(wavs)[0]
    (copy / "wav.scp").write_text("".join(f"{u} {('/gone/x.wav' if u == first else p)}\n" for u, p in sorted(wavs.items())))
    (copy / "utt2dur").unlink()
    validate_data_dir(copy)  # structurally fine
    with pytest.raises(DataDirError) as info:
        validate_data_dir(copy, complete=True)
    assert "utt2dur: required by training" in str(info.value) and "/gone/x.wav" in str(info.value)
    assert validate_cli.main([str(copy), "--complete"]) == 1
