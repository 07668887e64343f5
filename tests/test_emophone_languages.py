"""Stage 1 by language: German SAMPA labels and Mandarin pinyin mapped to the six phone classes (mappings
typed here from docs/emophone.md, independently of the code), emotion-only with a clear message where no
phone source exists, and never another language's G2P."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from serkit.data import datadir
from serkit.labels.emophone import label_data_dir
from serkit.labels.phone_sources import SourceStats, final_classes, pinyin_classes, sampa_classes


class RefusingG2P:
    """Any use of the English G2P on a non-English data dir fails the test."""

    def convert(self, text):
        raise AssertionError(f"English G2P used on {text!r}")


def data_dir(path: Path, language: str, texts: dict[str, str], **extra: dict[str, str]) -> Path:
    utts = sorted(texts)
    datadir.write_map(path / "wav.scp", {u: f"/c/{u}.wav" for u in utts})
    utt2spk = {u: u.split("-")[0] for u in utts}
    datadir.write_map(path / "utt2spk", utt2spk)
    datadir.write_map(path / "spk2utt", datadir.invert_utt2spk(utt2spk))
    datadir.write_map(path / "text", texts)
    datadir.write_map(path / "utt2emo", {u: ("ang", "neu")[i % 2] for i, u in enumerate(utts)})
    datadir.write_list(path / "classes", ["ang", "neu"])
    datadir.write_list(path / "language", [language])
    for name, mapping in extra.items():
        datadir.write_map(path / name, mapping)
    return path


@pytest.mark.parametrize("labels, classes", [
    # stress marks present: the marked vowel is VS, every other vowel V
    ([".", "d", "E:6", "l", "'a", "p", "@", "n", "."], ["S", "V", "L", "VS", "S", "V", "N"]),
    (['"aI', "n", "ts", "I", "C", "%u:", "x", "Q", "pf", "R", "j", "N", "n="], ["VS", "N", "S", "V", "F", "VS", "F", "S",
                                                                                "S", "L", "L", "N", "N"]),
    # no stress mark in the file: reduced vowels @ and 6 are V, full vowels VS
    (["h", "a:", "b", "@", "n", "v", "i:", "6", "y:", "2:", "9", "OY", "aU"], ["F", "VS", "S", "V", "N", "F", "VS", "V",
                                                                                "VS", "VS", "VS", "VS", "VS"]),
])
def test_german_sampa_classes(labels, classes):
    assert sampa_classes(labels, SourceStats()) == classes


def test_unknown_sampa_labels_are_counted_not_guessed():
    stats = SourceStats()
    assert sampa_classes(["t", "<nib>", "xyz", "a"], stats) == ["S", "VS"]
    assert stats.unknown == {"xyz": 1}


@pytest.mark.parametrize("final, classes", [
    ("a3", ["VS"]), ("en5", ["V", "N"]), ("iang1", ["L", "VS", "N"]), ("uei4", ["L", "VS"]), ("van2", ["L", "VS", "N"]),
    ("ing2", ["VS", "N"]), ("iong3", ["L", "VS", "N"]), ("er2", ["VS"]), ("i1", ["VS"]), ("v3", ["VS"]),
    ("anr4", ["VS", "N", "L"]), ("ou5", ["V"])])
def test_mandarin_finals(final, classes):
    assert final_classes(final) == classes


def test_mandarin_text_through_pinyin():
    stats = SourceStats()
    phones, classes = pinyin_classes("我们走吧！OK", stats)  # wo3 men5 zou3 ba5
    assert phones == ["uo3", "m", "en5", "z", "ou3", "b", "a5"]
    assert classes == ["L", "VS", "N", "V", "N", "S", "VS", "S", "V"]
    assert stats.unknown == {"O": 1, "K": 1}


def test_german_data_dir_uses_the_corpus_labels_not_a_g2p(tmp_path):
    d = data_dir(tmp_path / "d", "de", {"03-a": "Der Lappen liegt.", "03-b": "Das will sie."},
                 utt2sampa={"03-a": "d 'e:6 l", "03-b": ""})
    report = label_data_dir(d, tmp_path / "lang", g2p=RefusingG2P())
    assert datadir.read_map(d / "utt2phn") == {"03-a": "S0 VS0 L0", "03-b": ""}
    assert datadir.read_map(d / "utt2phones") == {"03-a": "d 'e:6 l", "03-b": ""}
    assert report.empty == ["03-b"] and not (d / "utt2arpabet").exists()
    assert "language de" in (d / "emophone_report.txt").read_text()
    assert len((tmp_path / "lang" / "tokens.txt").read_text().splitlines()) == 13


def test_mandarin_data_dir(tmp_path):
    d = data_dir(tmp_path / "d", "zh", {"0001-a": "我们走吧"})
    label_data_dir(d, tmp_path / "lang", g2p=RefusingG2P())
    assert datadir.read_map(d / "utt2phn") == {"0001-a": "L0 VS0 N0 V0 N0 S0 VS0 S0 V0"}


@pytest.mark.parametrize("language, extra, why", [("fr", {}, "language 'fr' has no phone source"),
                                                  ("de", {}, "utt2sampa is missing")])
def test_no_phone_source_trains_emotion_only_and_says_so(tmp_path, caplog, language, extra, why):
    d = data_dir(tmp_path / "d", language, {"x-a": "Bonjour", "x-b": "Merci"}, **extra)
    with caplog.at_level(logging.WARNING):
        report = label_data_dir(d, tmp_path / "lang", g2p=RefusingG2P())
    assert datadir.read_map(d / "utt2phn") == {"x-a": "", "x-b": ""} and report.n_phones == 0
    assert why in caplog.text and "EMOTION-ONLY" in caplog.text and "lambda 0" in caplog.text
    assert why in (d / "emophone_report.txt").read_text()
