"""docs/porting.md's worked example runs: its SAVEE module and class map, registered as the guide
says, prepare a SAVEE look-alike (letters parsed, not the first character) and fail a damaged full release."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
from corpus_trees import write_wav

from serkit import corpora
from serkit.corpora import CorpusError, get_preparer, load_class_map
from serkit.data.datadir import read_map

DOC = Path(__file__).resolve().parents[1] / "docs" / "porting.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture
def savee(tmp_path, monkeypatch):
    module = types.ModuleType("savee_example")
    exec(compile(blocks("python")[0], str(DOC), "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "savee_example", module)
    maps = tmp_path / "class_maps"
    (maps / "savee").mkdir(parents=True)
    (maps / "savee" / "7class.yaml").write_text(blocks("yaml")[0])
    monkeypatch.setattr(corpora, "CLASS_MAP_DIR", maps)
    monkeypatch.setitem(corpora.CORPORA, "savee", ("savee_example:prepare", "savee"))
    return get_preparer("savee")


def savee_tree(root: Path, per_code: dict[str, int]) -> Path:
    for speaker in ("DC", "JE", "JK", "KL"):
        for code, n in per_code.items():
            for k in range(1, n + 1):
                write_wav(root / "AudioData" / speaker / f"{code}{k:02d}.wav", rate=8000, seconds=0.06)
    return root


def test_the_guide_s_module_prepares_savee(savee, tmp_path):
    root = savee_tree(tmp_path / "SAVEE", {"a": 1, "sa": 2, "su": 1, "n": 2})
    (root / "AudioData" / "DC" / "x01.wav").write_bytes(b"")
    report = savee(root, "7class", tmp_path / "d", strict=False)
    emo = read_map(tmp_path / "d" / "utt2emo")
    assert emo["DC-sa01"] == "sad" and emo["JE-su01"] == "sur" and emo["KL-a01"] == "ang"
    assert report.skipped.counts["file name is not <emotion letters><NN>.wav"] == 1
    assert report.count_check == "not run (strict=False)" and load_class_map("7class", "savee").classes[:4] == ("ang", "hap", "sad", "neu")
    with pytest.raises(CorpusError, match="emotion code n: found 8, expected 120"):  # all 4 speakers: full release
        savee(root, "7class", tmp_path / "e")


def test_the_guide_s_module_names_what_is_missing_and_an_altered_copy(savee, tmp_path):
    """The worked example shows the loud contract: a missing speaker folder is named, a class of the
    map without utterances warns (and fails under strict), a copy at a rate SAVEE never had is flagged."""
    import shutil
    root = savee_tree(tmp_path / "SAVEE", {"a": 1, "sa": 2, "su": 1, "n": 2, "h": 1, "f": 1})  # no d: dis empty
    shutil.rmtree(root / "AudioData" / "KL")
    report = savee(root, "7class", tmp_path / "d", strict=False)
    assert f"speaker folder missing: {root / 'AudioData' / 'KL'}" in report.warnings
    assert any(line.startswith("class(es) of class map 7class with 0 utterances: dis (codes d: 0 found)")
               for line in report.warnings)
    assert any("sample rate 8000 Hz (24 files): the SAVEE release has 44100 Hz only" in line for line in report.warnings)
    assert (tmp_path / "d" / "prep_warnings.txt").read_text().splitlines() == report.warnings
    with pytest.raises(CorpusError, match=r"(?s)class dis: found 0, expected 60.*\./run\.sh --no-strict"):
        savee(root, "7class", tmp_path / "e", strict=True)  # under strict the count check names it first
