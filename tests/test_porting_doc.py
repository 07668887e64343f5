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
from serkit.datadir import read_map

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
