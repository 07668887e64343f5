"""IEMOCAP stage 0 on look-alike trees: every trap, class maps, count checks, wrong roots, CLI."""
from __future__ import annotations

from pathlib import Path

import pytest
from iemocap_tree import GHOST_TURN, DialogStyle, TreeUtt, build_trap_tree, write_iemocap_tree

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
from serkit.datadir import read_list, read_map, validate_data_dir

# Published full-release facts (corpora.md), typed here independently of the module under test.
PUBLISHED_CODES = {"xxx": 2507, "fru": 1849, "neu": 1708, "ang": 1103, "sad": 1084, "exc": 1041,
                   "hap": 595, "sur": 107, "fea": 40, "oth": 3, "dis": 2}
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
    out = tmp_path / "d"
    prepare_iemocap(tree.root, out, class_map="6class")
    (out / "utt2phn").write_text("stale\n")
    prepare_iemocap(tree.root, out, class_map="4class")
    assert not (out / "utt2phn").exists()
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


def _full_layout_tree(root: Path) -> Path:
    """5 sessions and 151 dialogs (the shape of the full release), one utterance each."""
    utts = [TreeUtt(1 + n % 5, "F", f"impro{n:03d}", "M", 0, "neu", seconds=0.2) for n in range(151)]
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
    with pytest.raises(IemocapError, match="expected"):
        prepare_iemocap(tree.root, tmp_path / "d", strict=True)


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
