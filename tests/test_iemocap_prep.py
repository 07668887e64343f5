"""IEMOCAP stage 0 on look-alike trees: every trap, class maps, count checks, wrong roots, CLI."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from iemocap_tree import (
    GHOST_TURN,
    PUBLISHED_CODES,
    DialogStyle,
    TreeUtt,
    build_trap_tree,
    published_count_utts,
    write_iemocap_tree,
)

from serkit.bin import prepare_iemocap as prepare_cli
from serkit.corpora import CorpusError, load_class_map, shipped_class_maps
from serkit.corpora.iemocap import (
    IemocapError,
    Tally,
    check_full_release,
    parse_emo_evaluation,
    parse_transcription,
    parse_utterance_id,
    prepare_iemocap,
)
from serkit.labels.ctc_targets import STAGE1_FILES, TARGET_FILES, TRANSCRIPT_KINDS, make_ctc_targets
from serkit.data.datadir import read_list, read_map, validate_data_dir
from serkit.labels.emophone import label_data_dir
from serkit.labels.g2p import G2P

# Published full-release facts (corpora.md), typed independently of the module under test.
PUBLISHED_4CLASS = {"ang": 1103, "hap": 1636, "sad": 1084, "neu": 1708}
PUBLISHED_SESSIONS = {"Ses01": 1085, "Ses02": 1023, "Ses03": 1151, "Ses04": 1031, "Ses05": 1241}

MAPS = {
    "4class": {"ang": "ang", "hap": "hap", "exc": "hap", "sad": "sad", "neu": "neu"},
    "5class": {"ang": "ang", "hap": "hap", "exc": "hap", "sad": "sad", "neu": "neu", "fru": "fru"},
    "6class": {"ang": "ang", "hap": "hap", "exc": "exc", "sad": "sad", "neu": "neu", "fru": "fru"},
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_trap_tree(tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release")


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "iemocap"
    return prepare_iemocap(tree.root, out), out


# ----------------------------------------------------------------------------------- parsers

@pytest.mark.parametrize("utt, speaker, gender", [
    ("Ses01F_impro01_M000", "Ses01M", "m"),
    ("Ses01M_script01_1_F003", "Ses01F", "f"),
    ("Ses03M_impro05a_F002", "Ses03F", "f"),
    ("Ses03M_impro08b_M010", "Ses03M", "m"),
    ("Ses05M_script01_1b_F001", "Ses05F", "f"),
])
def test_speaker_is_session_plus_the_turns_own_gender(utt, speaker, gender):
    turn = parse_utterance_id(utt)
    assert (turn.speaker, turn.gender) == (speaker, gender)
    assert turn.dialog == utt.rsplit("_", 1)[0]


@pytest.mark.parametrize("utt", ["Ses01F_impro01_MXX0", "Ses01F_impro01", "impro01_F000", "Ses01F_impro01_X000"])
def test_ids_without_a_gendered_turn_are_rejected(utt):
    with pytest.raises(ValueError, match=utt):
        parse_utterance_id(utt)


def test_emo_evaluation_keeps_only_consensus_lines(tmp_path):
    path = tmp_path / "Ses01F_impro01.txt"
    path.write_bytes(
        b"% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\r\n\r\n"
        b"[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\r\n"
        b"C-E2:\tNeutral;\t()\r\nC-F1:\tNeutral; Anger;\t(curious)\r\nA-E3:\tval 3; act 2; dom  2;\t()\r\n\r\n"
        b"[10.0 -  11.5]   Ses01F_impro01_M000 ang  [1.0, 4.0, 4.0]\r\n"   # spaces, odd spacing
        b"C-M1:\tAnger;\t()\r\n"
        b"[12.0 - 13.0]\tSes01F_impro01_F001\texc\r\n"                      # no V/A/D triple
        b"[oops]\tSes01F_impro01_F002\n"                                    # malformed
        b"stray words\n"
    )
    skipped, notes = Tally(), Tally()
    labels = parse_emo_evaluation(path, skipped, notes)
    assert [(label.utt, label.code) for label in labels] == [
        ("Ses01F_impro01_F000", "neu"), ("Ses01F_impro01_M000", "ang"), ("Ses01F_impro01_F001", "exc")]
    assert labels[0].source == f"{path}:3"
    assert skipped.counts == {"malformed consensus line in EmoEvaluation": 1, "unrecognised line in EmoEvaluation": 1}
    assert skipped.examples["malformed consensus line in EmoEvaluation"] == [f"{path}:11: [oops]\tSes01F_impro01_F002"]


def test_transcription_lines_odd_lines_and_noise_tags(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\n"
                    "M: Yeah.\n"
                    "Ses01F_impro01_MXX0 [009.0000-009.5000]: [LAUGHTER] Hm.\n"
                    "Ses01F_impro01_M000 [010.0000-011.0000]:   Get [BREATHING] out.  \n"
                    "Ses01F_impro01_M001 [012.0000-013.0000]:\n"
                    "Ses01F_impro01_F000 [014.0000-015.0000]: again\n", encoding="utf-8")
    skipped, notes = Tally(), Tally()
    texts = parse_transcription(path, skipped, notes)
    assert texts == {"Ses01F_impro01_F000": "Excuse me.", "Ses01F_impro01_MXX0": "[LAUGHTER] Hm.",
                     "Ses01F_impro01_M000": "Get [BREATHING] out.", "Ses01F_impro01_M001": ""}
    assert skipped.counts == {"transcript line without utterance id and time": 1,
                              "duplicate transcript line (first kept)": 1}


# ----------------------------------------------------------------------------- full preparation

def test_data_dir_matches_ground_truth(tree, prepared):
    report, out = prepared
    expected = tree.expected(MAPS["4class"])
    assert sorted(read_map(out / "wav.scp")) == sorted(expected)
    assert read_map(out / "utt2spk") == {k: u.speaker for k, u in expected.items()}
    assert read_map(out / "utt2gender") == {k: u.gender for k, u in expected.items()}
    assert read_map(out / "utt2raw_emo") == {k: u.code for k, u in expected.items()}
    assert read_map(out / "utt2emo") == {k: MAPS["4class"][u.code] for k, u in expected.items()}
    assert read_map(out / "utt2dur") == {k: u.duration for k, u in expected.items()}
    assert read_map(out / "utt2session") == {k: f"Ses{u.session:02d}" for k, u in expected.items()}
    assert read_map(out / "text") == {k: u.text or "" for k, u in expected.items()}
    assert read_list(out / "classes") == ["ang", "hap", "sad", "neu"]
    for key, path in read_map(out / "wav.scp").items():
        u = expected[key]
        assert Path(path).is_absolute()
        assert Path(path) == tree.root.absolute() / f"Session{u.session}/sentences/wav/{u.dialog}/{u.corpus_id}.wav"
    n_speakers = len({u.speaker for u in expected.values()})
    assert validate_data_dir(out) == {"utterances": len(expected), "speakers": n_speakers}
    assert report.n_utterances == len(expected)


def test_suffixed_dialog_speakers(prepared):
    _, out = prepared
    utt2spk = read_map(out / "utt2spk")
    assert utt2spk["Ses03F-Ses03M_impro05a_F000"] == "Ses03F"
    assert utt2spk["Ses03M-Ses03M_impro05a_M000"] == "Ses03M"
    assert utt2spk["Ses05F-Ses05M_script01_1b_F000"] == "Ses05F"
    assert read_map(out / "utt2gender")["Ses05M-Ses05M_script01_1b_M000"] == "m"


def test_traps_are_skipped_and_counted(tree, prepared):
    report, out = prepared
    assert not any(GHOST_TURN in key for key in read_map(out / "wav.scp")), "a trap file was read as labels"
    assert report.skipped.counts["EmoEvaluation sub-folder (not consensus labels)"] == tree.n_trap_files["sub-folder"]
    assert report.skipped.counts["macOS '._' file"] == tree.n_trap_files["._"]
    n_dialogs = len({u.dialog for u in tree.utts})
    assert report.n_dialogs == n_dialogs
    assert report.skipped.counts["transcript line without utterance id and time"] == n_dialogs
    assert report.notes.counts["transcript line of an XX turn (no label, no wav)"] == n_dialogs
    unlabelled = [u.corpus_id for u in tree.utts if u.code is None]
    assert report.notes.examples["transcript line without consensus label"] == unlabelled


def test_skipped_wavs_are_reported_with_their_path(tree, prepared):
    report, out = prepared
    missing = [u for u in tree.labelled() if u.wav == "missing" and u.code in MAPS["4class"]]
    corrupt = [u for u in tree.labelled() if u.wav == "corrupt" and u.code in MAPS["4class"]]
    assert report.skipped.examples["wav missing"] == [
        str(tree.root.absolute() / f"Session{u.session}/sentences/wav/{u.dialog}/{u.corpus_id}.wav") for u in missing]
    assert len(report.skipped.examples["wav unreadable"]) == len(corrupt)
    assert corrupt[0].corpus_id in report.skipped.examples["wav unreadable"][0]
    text = (out / "prep_report.txt").read_text()
    assert report.skipped.examples["wav missing"][0] in text and corrupt[0].corpus_id in text


def test_the_report_is_the_shared_one_and_lists_every_file_written(prepared):
    """IEMOCAP finishes through serkit.corpora.common.finish, as every corpus does."""
    report, out = prepared
    written = {path.name for path in out.iterdir()} - {"prep_report.txt", "prep_warnings.txt"}
    assert set(report.files_written) == written
    assert f"  files: {' '.join(report.files_written)}" in (out / "prep_report.txt").read_text().splitlines()


def test_odd_audio_and_missing_transcripts_are_kept_and_noted(tree, prepared):
    report, out = prepared
    wavs = read_map(out / "wav.scp")
    for note, pick in [("wav not 16000 Hz (kept; loaders resample)", lambda u: u.sample_rate != 16000),
                       ("wav not mono (kept; loaders downmix)", lambda u: u.channels != 1)]:
        odd = [u for u in tree.expected(MAPS["4class"]).values() if pick(u)]
        assert len(odd) == 1 and odd[0].utt_id in wavs
        assert report.notes.counts[note] == 1 and odd[0].corpus_id in report.notes.examples[note][0]
    no_text = [u for u in tree.expected(MAPS["4class"]).values() if u.text is None]
    assert read_map(out / "text")[no_text[0].utt_id] == ""
    assert report.notes.counts["labelled utterance without transcript line (kept, empty text)"] == len(no_text)


SHORT = "wav shorter than 0.05 s (too short for wav2vec 2.0)"
# Reasons for files in sentences/wav that no consensus line names.
FILE_REASONS = ("macOS '._' file", "sentence wav with no label line",
                "file in a sentence wav folder that is not a .wav", "file in sentences/wav outside a dialog folder",
                "folder inside a sentence wav folder", "sentence wav of a dialog without EmoEvaluation file",
                "sentence wav in another dialog's folder (its label looks elsewhere)")


def test_too_short_wavs_are_skipped_and_reported(tree, prepared):
    report, out = prepared
    short = [u for u in tree.labelled() if u.code in MAPS["4class"] and u.wav == "ok" and not u.usable]
    assert len(short) == 1
    assert [e.split(": ")[0] for e in report.skipped.examples[SHORT]] == [str(short[0].wav_path(tree.root))]
    assert short[0].utt_id not in read_map(out / "wav.scp")
    assert str(short[0].wav_path(tree.root)) in (out / "prep_report.txt").read_text()
    # a short wav of an excluded code is accounted for by its code, not reported as short
    assert not any("_F001" in e and "impro08b" in e for e in report.skipped.examples[SHORT])


def test_short_wav_boundary(tmp_path):
    U = TreeUtt
    utts = [U(2, "F", "impro01", "F", 0, "neu", seconds=0.05),                   # 800 samples: kept
            U(2, "F", "impro01", "M", 0, "ang", seconds=0.049),                  # 784: too short
            U(2, "F", "impro01", "F", 1, "sad", seconds=0.04, sample_rate=8000),  # 320 at 8 kHz: too short
            U(2, "F", "impro01", "M", 1, "hap", seconds=1 / 16000),              # one sample: too short, not empty
            U(2, "F", "impro01", "F", 2, "exc", seconds=0.0),                    # no sample: empty
            U(2, "F", "impro01", "M", 2, "neu", seconds=0.0501, sample_rate=8000)]  # 401 at 8 kHz: kept
    tree = write_iemocap_tree(tmp_path / "root", utts, traps=False)
    report = prepare_iemocap(tree.root, tmp_path / "d")
    assert sorted(read_map(tmp_path / "d" / "wav.scp")) == sorted(tree.expected(MAPS["4class"]))
    assert sorted(read_map(tmp_path / "d" / "wav.scp")) == sorted([utts[0].utt_id, utts[5].utt_id])
    assert report.skipped.counts[SHORT] == 3
    assert [e.split(": ")[0] for e in report.skipped.examples[SHORT]] == [
        str(u.wav_path(tree.root.absolute())) for u in (utts[1], utts[2], utts[3])]
    assert "784 samples at 16000 Hz" in report.skipped.examples[SHORT][0]
    assert report.skipped.examples["wav empty (no samples)"] == [str(utts[4].wav_path(tree.root.absolute()))]


def _files_under(folder: Path) -> list[Path]:
    """Every entry below ``folder`` (hidden ones included); folders only where they hold nothing walked."""
    found = []
    for top, dirs, files in os.walk(folder):
        found += [Path(top) / name for name in files]
    return sorted(found)


def test_every_file_in_sentences_wav_is_accounted_for(tree, prepared):
    report, out = prepared
    examples = report.skipped.examples
    assert examples["sentence wav with no label line"] == [str(p) for p in tree.unlabelled_wavs()]
    assert sorted(examples["file in a sentence wav folder that is not a .wav"]) == sorted(map(str, tree.stray_files))
    twins = [e for e in examples["macOS '._' file"] if "/sentences/wav/" in e]
    assert len(twins) == 2 * len({u.dialog for u in tree.utts})  # a folder twin and a wav twin per dialog
    # wavs that a consensus line names are accounted for by that line (used, excluded code, skipped wav)
    labelled = {str(u.wav_path(tree.root)): u for u in tree.labelled()}
    file_examples = {e for reason in FILE_REASONS for e in examples.get(reason, [])}
    assert not file_examples & set(labelled)
    used = set(read_map(out / "wav.scp").values())
    all_examples = [e for reason_examples in examples.values() for e in reason_examples]
    text = (out / "prep_report.txt").read_text()
    for path in _files_under(tree.root):
        if "sentences" not in path.parts:
            continue
        if str(path) in used:
            continue
        u = labelled.get(str(path))
        if u is not None and u.code not in MAPS["4class"]:
            assert report.excluded_codes[u.code] >= 1
        elif u is not None:
            assert any(u.corpus_id in e for e in all_examples), path
        else:
            assert str(path) in file_examples and str(path) in text, f"{path} is not accounted for"


def test_odd_entries_of_sentences_wav_are_reported_by_reason(tmp_path):
    U = TreeUtt
    utts = [U(2, "F", "impro01", "F", 0, "neu"), U(2, "F", "impro01", "M", 0, "fru"),
            U(2, "M", "impro02", "F", 0, "ang"), U(2, "M", "impro02", "M", 0, "sad"),
            U(2, "F", "impro03", "F", 0, "neu")]
    tree = write_iemocap_tree(tmp_path / "root", utts, traps=False)
    wav_root = tree.root / "Session2" / "sentences" / "wav"
    (tree.root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02M_impro02.txt").unlink()  # a dialog without labels
    (wav_root / "readme.txt").write_text("stray")
    (wav_root / "Ses02F_impro01" / "old").mkdir()
    shutil.copy(utts[0].wav_path(tree.root), wav_root / "Ses02F_impro03" / f"{utts[0].corpus_id}.wav")  # misplaced
    report = prepare_iemocap(tree.root, tmp_path / "d")
    examples = report.skipped.examples
    assert examples["sentence wav of a dialog without EmoEvaluation file"] == [
        str(utts[2].wav_path(tree.root)), str(utts[3].wav_path(tree.root))]
    assert examples["sentence wav in another dialog's folder (its label looks elsewhere)"] == [
        str(wav_root / "Ses02F_impro03" / f"{utts[0].corpus_id}.wav")]
    assert examples["file in sentences/wav outside a dialog folder"] == [str(wav_root / "readme.txt")]
    assert examples["folder inside a sentence wav folder"] == [str(wav_root / "Ses02F_impro01" / "old")]
    assert "sentence wav with no label line" not in examples  # the fru wav is accounted for by its code
    assert report.excluded_codes == {"fru": 1}
    text = (tmp_path / "d" / "prep_report.txt").read_text()
    assert all(e in text for reason in FILE_REASONS for e in examples.get(reason, []))


def test_excluded_codes_are_counted_per_code(tree, prepared):
    report, _ = prepared
    excluded = {}
    for u in tree.labelled():
        if u.code not in MAPS["4class"]:
            excluded[u.code] = excluded.get(u.code, 0) + 1
    assert dict(report.excluded_codes) == excluded
    codes = {}
    for u in tree.labelled():
        codes[u.code] = codes.get(u.code, 0) + 1
    assert dict(report.code_counts) == codes
    assert report.count_check.startswith("not run") and not report.full_release


@pytest.mark.parametrize("name", ["4class", "5class", "6class"])
def test_class_maps(tree, tmp_path, name):
    report = prepare_iemocap(tree.root, tmp_path / "d", class_map=name)
    expected = tree.expected(MAPS[name])
    assert read_map(tmp_path / "d" / "utt2emo") == {k: MAPS[name][u.code] for k, u in expected.items()}
    classes = read_list(tmp_path / "d" / "classes")
    assert classes[:4] == ["ang", "hap", "sad", "neu"]  # shared classes keep their index
    assert set(classes) == set(MAPS[name].values())
    assert sum(report.class_counts.values()) == len(expected)


def test_shipped_maps_and_custom_map_file(tmp_path):
    assert {"4class", "5class", "6class"} <= set(shipped_class_maps())
    for name, mapping in MAPS.items():
        assert load_class_map(name).mapping == mapping
    custom = tmp_path / "binary.yaml"
    custom.write_text("classes: [neg, pos]\nmap: {ang: neg, sad: neg, hap: pos, exc: pos}\n")
    loaded = load_class_map(str(custom))
    assert loaded.classes == ("neg", "pos") and loaded.label("exc") == "pos" and loaded.label("neu") is None


@pytest.mark.parametrize("content, message", [
    ("classes: [a, b]\nmap: {ang: a}\n", "receive no corpus code"),
    ("classes: [a, a]\nmap: {ang: a}\n", "twice"),
    ("classes: [a]\nmap: {ang: z}\n", "does not list"),
    ("map: {ang: a}\n", "needs the keys"),
    ("classes: [a\n", "not a readable YAML"),
])
def test_bad_class_maps_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(CorpusError, match=message) as info:
        load_class_map(path)
    assert str(path) in str(info.value)


def test_unknown_class_map_name_and_misspelt_code(tree, tmp_path):
    with pytest.raises(CorpusError, match="4class"):
        load_class_map("four")
    typo = tmp_path / "typo.yaml"
    typo.write_text("classes: [ang, hap]\nmap: {ang: ang, exec: hap}\n")
    with pytest.raises(IemocapError, match="exec"):
        prepare_iemocap(tree.root, tmp_path / "d", class_map=typo)


def test_unknown_consensus_code_is_reported_by_name(tmp_path):
    utts = [TreeUtt(2, "F", "impro02", "F", 0, "neu"), TreeUtt(2, "F", "impro02", "M", 0, "Neutral")]
    tree = write_iemocap_tree(tmp_path / "root", utts, traps=False)
    report = prepare_iemocap(tree.root, tmp_path / "d")
    assert report.skipped.counts["unknown consensus code 'Neutral'"] == 1
    assert "Neutral" in (tmp_path / "d" / "prep_report.txt").read_text()
    assert list(read_map(tmp_path / "d" / "utt2emo")) == ["Ses02F-Ses02F_impro02_F000"]


def test_crlf_and_space_separated_files_parse_like_the_others(tmp_path):
    utts = [TreeUtt(4, "F", "script02_2", "F", 0, "ang"), TreeUtt(4, "F", "script02_2", "M", 0, "sad", text="Hi.")]
    plain = prepare_iemocap(write_iemocap_tree(tmp_path / "a", utts, traps=False).root, tmp_path / "da")
    styled = prepare_iemocap(write_iemocap_tree(tmp_path / "b", utts, {"Ses04F_script02_2": DialogStyle(True, True)},
                                                traps=False).root, tmp_path / "db")
    for name in ("utt2emo", "text", "utt2spk", "utt2dur"):
        assert read_map(tmp_path / "da" / name) == read_map(tmp_path / "db" / name)
    assert plain.class_counts == styled.class_counts
    assert plain.skipped.counts == styled.skipped.counts == {"transcript line without utterance id and time": 1}


def test_rerun_overwrites_and_removes_stale_stage1_files(tree, tmp_path):
    """Stage 1's files follow from stage 0's labels: a new stage 0 removes every one of them."""
    out = tmp_path / "d"
    prepare_iemocap(tree.root, out, class_map="6class")
    stage0 = {path.name for path in out.iterdir()}
    label_data_dir(out, tmp_path / "lang", G2P(use_pos_tagger=False))
    for kind in TRANSCRIPT_KINDS:
        make_ctc_targets(out, tmp_path / f"lang_{kind}", kind, bpe_units=24)
    stage1 = {path.name for path in out.iterdir()} - stage0
    assert stage1 >= set(TARGET_FILES.values()) and stage1 <= set(STAGE1_FILES), "STAGE1_FILES must list them all"
    prepare_iemocap(tree.root, out, class_map="4class")
    assert not stage1 & {path.name for path in out.iterdir()}
    assert set(read_map(out / "utt2emo").values()) == {"ang", "hap", "sad", "neu"}
    assert read_list(out / "classes") == ["ang", "hap", "sad", "neu"]
    validate_data_dir(out)


# --------------------------------------------------------------------- full-release count check

def test_published_counts_pass_the_check():
    check_full_release(PUBLISHED_CODES, PUBLISHED_4CLASS, PUBLISHED_SESSIONS, load_class_map("4class"))
    six = {"ang": 1103, "hap": 595, "exc": 1041, "sad": 1084, "neu": 1708, "fru": 1849}
    check_full_release(PUBLISHED_CODES, six, {"Ses01": 1}, load_class_map("6class"))  # no session table for 6class


def test_count_mismatch_lists_found_vs_expected():
    classes = dict(PUBLISHED_4CLASS, hap=1462)  # 174 happy utterances lost
    with pytest.raises(IemocapError) as info:
        check_full_release(PUBLISHED_CODES, classes, PUBLISHED_SESSIONS, load_class_map("4class"),
                           skipped={"wav missing": 174})
    message = str(info.value)
    assert "class hap: found 1462, expected 1636" in message
    assert "wav" in message and "wav missing 174" in message
    codes = dict(PUBLISHED_CODES, neu=1707)
    sessions = dict(PUBLISHED_SESSIONS, Ses05=1240)
    with pytest.raises(IemocapError) as info:
        check_full_release(codes, dict(PUBLISHED_4CLASS, neu=1707), sessions, load_class_map("4class"))
    message = str(info.value)
    assert "consensus code neu: found 1707, expected 1708" in message
    assert "session Ses05: found 1240, expected 1241" in message
    assert "EmoEvaluation" in message


def _full_layout_tree(root: Path, n_dialogs: int = 151) -> Path:
    """5 sessions and ``n_dialogs`` dialogs (151: the shape of the full release), one utterance each."""
    utts = [TreeUtt(1 + n % 5, "F", f"impro{n:03d}", "M", 0, "neu", seconds=0.2) for n in range(n_dialogs)]
    return write_iemocap_tree(root, utts, traps=False).root


def test_full_release_shape_triggers_the_count_check(tmp_path):
    root = _full_layout_tree(tmp_path / "root")
    with pytest.raises(IemocapError, match="consensus code neu: found 151, expected 1708"):
        prepare_iemocap(root, tmp_path / "d")
    assert not (tmp_path / "d").exists(), "nothing may be written when the check fails"
    report = prepare_iemocap(root, tmp_path / "d", strict=False)
    assert report.full_release and report.count_check == "not run (strict=False)"
    assert report.n_utterances == 151


def test_strict_forces_the_check_on_a_partial_tree(tree, tmp_path):
    with pytest.raises(IemocapError, match="expected") as info:
        prepare_iemocap(tree.root, tmp_path / "d", strict=True)
    assert f"found {len({u.dialog for u in tree.utts})} dialogs" in str(info.value)


@pytest.mark.parametrize("n_dialogs", [139, 140, 150, 152])
def test_a_full_copy_with_a_wrong_dialog_count_fails(tmp_path, n_dialogs):
    """All 5 sessions and >= 140 dialogs: a damaged full release (error); fewer: a partial copy (report only)."""
    root = _full_layout_tree(tmp_path / "root", n_dialogs)
    if n_dialogs < 140:
        report = prepare_iemocap(root, tmp_path / "d")
        assert not report.full_release and report.count_check == "not run (partial copy)"
        assert report.n_dialogs == n_dialogs and report.code_counts == {"neu": n_dialogs}
        assert f"{n_dialogs} dialogs" in (tmp_path / "d" / "prep_report.txt").read_text()
        return
    with pytest.raises(IemocapError) as info:
        prepare_iemocap(root, tmp_path / "d")
    message = str(info.value)
    assert f"found {n_dialogs} dialogs" in message and "expected 151" in message
    assert ("incomplete" if n_dialogs < 151 else "extra files") in message
    assert f"consensus code neu: found {n_dialogs}, expected 1708" in message  # the counts are checked too
    assert not (tmp_path / "d").exists()
    report = prepare_iemocap(root, tmp_path / "d", strict=False)
    assert report.full_release and report.count_check == "not run (strict=False)"
    assert "full release: yes, 151 dialogs expected" in report.summary_lines()[0]


@pytest.fixture(scope="module")
def published_tree(tmp_path_factory):
    """An intact full release in shape and counts (151 dialogs, 10,039 labels, 5,531 four-class wavs)."""
    return write_iemocap_tree(tmp_path_factory.mktemp("full") / "IEMOCAP_full_release", published_count_utts(),
                              traps=False, reuse_audio=True)


def test_intact_full_release_passes_the_checks(published_tree, tmp_path):
    report = prepare_iemocap(published_tree.root, tmp_path / "d")
    assert report.full_release and report.count_check == "passed" and report.n_dialogs == 151
    assert dict(report.code_counts) == PUBLISHED_CODES
    assert dict(report.class_counts) == PUBLISHED_4CLASS and dict(report.session_counts) == PUBLISHED_SESSIONS
    assert "full release: yes," in report.summary_lines()[0]
    assert not any(reason in report.skipped.counts for reason in FILE_REASONS)


def test_full_release_with_a_stray_emo_evaluation_file_fails(published_tree, tmp_path):
    """Counts intact, one extra .txt: only the dialog count can catch it."""
    stray = published_tree.root / "Session4" / "dialog" / "EmoEvaluation" / "notes.txt"
    stray.write_text("checked 2009-05-01\n")
    try:
        with pytest.raises(IemocapError) as info:
            prepare_iemocap(published_tree.root, tmp_path / "d")
    finally:
        stray.unlink()
    message = str(info.value)
    assert "found 152 dialogs" in message and "expected 151" in message and "extra files" in message
    assert "Session4/dialog/EmoEvaluation/notes.txt (no sentences/wav folder, no consensus line)" in message
    assert "consensus code" not in message and "--no-strict" in message
    assert not (tmp_path / "d").exists()


def test_full_release_missing_an_emo_evaluation_file_fails(published_tree, tmp_path):
    label_file = published_tree.root / "Session2" / "dialog" / "EmoEvaluation" / "Ses02M_impro07.txt"
    aside = tmp_path / label_file.name
    shutil.move(label_file, aside)
    try:
        with pytest.raises(IemocapError) as info:
            prepare_iemocap(published_tree.root, tmp_path / "d")
        report = prepare_iemocap(published_tree.root, tmp_path / "e", strict=False)
    finally:
        shutil.move(aside, label_file)
    message = str(info.value)
    assert "found 150 dialogs" in message and "expected 151" in message and "incomplete" in message
    assert ("Session2/dialog/EmoEvaluation/Ses02M_impro07.txt (missing; sentences/wav folder and transcription "
            "present)") in message
    assert "consensus code" in message  # its labels are gone from the counts too
    lost = [u for u in published_tree.utts if u.dialog == "Ses02M_impro07" and u.wav == "ok"]
    assert report.skipped.examples["sentence wav of a dialog without EmoEvaluation file"] == sorted(
        str(u.wav_path(published_tree.root)) for u in lost)


# ---------------------------------------------------------------------------------- wrong root

def test_missing_root(tmp_path):
    with pytest.raises(IemocapError, match="does not exist") as info:
        prepare_iemocap(tmp_path / "nope", tmp_path / "d")
    assert "Session1 .. Session5" in str(info.value)


def test_root_above_the_release_says_where_to_point(tree, tmp_path):
    with pytest.raises(IemocapError) as info:
        prepare_iemocap(tree.root.parent, tmp_path / "d")
    assert f"use --root {tree.root}" in str(info.value)


def test_session_folder_as_root(tree, tmp_path):
    with pytest.raises(IemocapError, match="single SessionN folder"):
        prepare_iemocap(tree.root / "Session1", tmp_path / "d")


def test_unrelated_folder(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(IemocapError, match="not an IEMOCAP root") as info:
        prepare_iemocap(tmp_path / "stuff", tmp_path / "d")
    assert "dialog/EmoEvaluation/<dialog>.txt" in str(info.value)


# ------------------------------------------------------------------------------------------ CLI

def test_cli_success_and_failure(tree, tmp_path, capsys):
    assert prepare_cli.main(["--root", str(tree.root), "--out", str(tmp_path / "d"), "--class-map", "5class"]) == 0
    assert set(read_map(tmp_path / "d" / "utt2emo").values()) == {"ang", "hap", "sad", "neu", "fru"}
    assert prepare_cli.main(["--root", str(tmp_path / "nope"), "--out", str(tmp_path / "e")]) == 1
    assert "prepare_iemocap: error:" in capsys.readouterr().err
    assert prepare_cli.main(["--root", str(tree.root), "--out", str(tmp_path / "e"), "--strict"]) == 1
    with pytest.raises(SystemExit) as info:
        prepare_cli.main(["--root", str(tree.root)])
    assert info.value.code == 2
