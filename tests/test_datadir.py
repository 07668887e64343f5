"""Data-directory validator and fixer: each kind of problem is caught, the fixer repairs what it can."""
from __future__ import annotations

from pathlib import Path

import pytest

from serkit.bin import validate_data_dir as validate_cli
from serkit.data.datadir import (
    DataDirError,
    fix_data_dir,
    read_list,
    read_map,
    validate_data_dir,
    write_list,
    write_map,
)

# Two speakers, five utterances; every id starts with its speaker id.
UTTS = {
    "Ses01F-Ses01F_impro01_F000": ("Ses01F", "f", "ang"),
    "Ses01F-Ses01F_impro01_F001": ("Ses01F", "f", "hap"),
    "Ses01F-Ses01M_script01_1_F000": ("Ses01F", "f", "neu"),
    "Ses01M-Ses01F_impro01_M000": ("Ses01M", "m", "sad"),
    "Ses01M-Ses01F_impro01_M001": ("Ses01M", "m", "neu"),
}


def make_valid_dir(path: Path) -> Path:
    """Write a consistent data directory by hand (sorted files, spk2utt listed explicitly)."""
    path.mkdir(parents=True)
    (path / "wav.scp").write_text("".join(f"{u} /corpus/{u}.wav\n" for u in UTTS))
    (path / "text").write_text("".join(f"{u} hello there\n" for u in UTTS))
    (path / "utt2spk").write_text("".join(f"{u} {s}\n" for u, (s, _, _) in UTTS.items()))
    (path / "utt2gender").write_text("".join(f"{u} {g}\n" for u, (_, g, _) in UTTS.items()))
    (path / "utt2emo").write_text("".join(f"{u} {e}\n" for u, (_, _, e) in UTTS.items()))
    (path / "utt2dur").write_text("".join(f"{u} {1.5 + n:.3f}\n" for n, u in enumerate(UTTS)))
    (path / "classes").write_text("ang\nhap\nsad\nneu\n")
    (path / "spk2utt").write_text(
        "Ses01F Ses01F-Ses01F_impro01_F000 Ses01F-Ses01F_impro01_F001 Ses01F-Ses01M_script01_1_F000\n"
        "Ses01M Ses01M-Ses01F_impro01_M000 Ses01M-Ses01F_impro01_M001\n")
    return path


@pytest.fixture
def data_dir(tmp_path):
    return make_valid_dir(tmp_path / "data")


def edit(path: Path, name: str, change) -> None:
    """Apply ``change(lines) -> lines`` to one file of the directory, keeping its line order."""
    lines = (path / name).read_text().splitlines()
    (path / name).write_text("".join(f"{line}\n" for line in change(lines)))


def problems_of(path: Path) -> str:
    with pytest.raises(DataDirError) as info:
        validate_data_dir(path)
    return str(info.value)


def test_valid_directory(data_dir):
    assert validate_data_dir(data_dir) == {"utterances": 5, "speakers": 2}


def first_value(value: str):
    """A change that gives the first line of a file a new value."""
    return lambda lines: [f"{lines[0].split()[0]} {value}".rstrip()] + lines[1:]


@pytest.mark.parametrize("name, change, expected", [
    ("utt2emo", lambda lines: lines[::-1], "utt2emo: keys are not sorted in C (byte) order"),
    ("text", lambda lines: lines[:-1],
     "text: lacks utterances that utt2spk has (1 key(s), e.g. Ses01M-Ses01F_impro01_M001)"),
    ("utt2gender", lambda lines: lines + ["Ses02F-Ses02F_x_F000 f"], "utt2gender: has utterances that utt2spk lacks"),
    ("utt2dur", first_value("0.000"), "utt2dur: duration is not a positive number"),
    ("utt2dur", first_value("long"), "utt2dur: duration is not a positive number"),
    ("utt2gender", first_value("x"), "utt2gender: gender is not 'f' or 'm'"),
    ("utt2emo", first_value("fru"), "utt2emo: emotion label not listed in 'classes'"),
    ("utt2spk", first_value(""), "utt2spk: empty value"),
    ("spk2utt", lambda lines: [lines[0].rsplit(" ", 1)[0], lines[1]],
     "spk2utt: is not the inverse of utt2spk for speakers 1 key(s), e.g. Ses01F"),
    ("spk2utt", lambda lines: lines + ["Ses09F Ses09F-x"], "spk2utt: is not the inverse of utt2spk"),
    ("utt2spk", first_value("Ses01M"), "do not start with their speaker id"),
    ("utt2emo", lambda lines: lines + [lines[-1]], "utt2emo: cannot be read"),
    ("classes", lambda lines: lines + ["ang"], "classes: duplicate class label(s) ang"),
])
def test_each_problem_is_caught(data_dir, name, change, expected):
    edit(data_dir, name, change)
    message = problems_of(data_dir)
    assert expected in message
    assert str(data_dir) in message and "--fix" in message


@pytest.mark.parametrize("name", ["wav.scp", "utt2spk"])
def test_required_files(data_dir, name):
    (data_dir / name).unlink()
    assert f"{name}: required file is missing" in problems_of(data_dir)


def test_all_problems_are_reported_at_once(data_dir):
    edit(data_dir, "utt2emo", lambda lines: lines[::-1])
    edit(data_dir, "text", lambda lines: lines[1:])
    edit(data_dir, "utt2gender", lambda lines: [line.replace(" f", " F") for line in lines])
    (data_dir / "spk2utt").unlink()
    message = problems_of(data_dir)
    assert "4 problem(s)" in message
    for fragment in ("utt2emo: keys are not sorted", "text: lacks utterances",
                     "utt2gender: gender is not 'f' or 'm' (3 key(s)", "spk2utt: file is missing"):
        assert fragment in message


def test_byte_order_not_locale_order(tmp_path):
    # Upper case sorts before lower case in C order; a locale-aware sort would interleave them.
    path = tmp_path / "d"
    path.mkdir()
    (path / "utt2spk").write_text("B-1 B\na-1 a\n")
    (path / "wav.scp").write_text("B-1 /x.wav\na-1 /y.wav\n")
    (path / "spk2utt").write_text("B B-1\na a-1\n")
    assert validate_data_dir(path) == {"utterances": 2, "speakers": 2}
    (path / "wav.scp").write_text("a-1 /y.wav\nB-1 /x.wav\n")
    assert "wav.scp: keys are not sorted" in problems_of(path)


def test_fixer_repairs_and_counts(data_dir):
    edit(data_dir, "utt2emo", lambda lines: lines[::-1])                                   # unsorted
    edit(data_dir, "text", lambda lines: lines[:-1])                                        # M001 missing
    edit(data_dir, "utt2dur", first_value("-1"))                                           # F000 bad
    edit(data_dir, "utt2gender", lambda lines: lines + ["Ses01M-Ses01F_impro01_M009 m"])   # only here
    edit(data_dir, "spk2utt", lambda lines: lines[:1])                                      # stale
    counts = fix_data_dir(data_dir)
    assert counts["kept"] == 3 and counts["removed"] == 3
    assert counts["removed_by_reason"] == {
        "missing from text": 2,  # M001 and the stray M009
        "missing from wav.scp": 1, "missing from utt2spk": 1, "missing from utt2emo": 1, "missing from utt2dur": 1,
        "utt2dur: duration is not a positive number": 1,
    }
    kept = ["Ses01F-Ses01F_impro01_F001", "Ses01F-Ses01M_script01_1_F000", "Ses01M-Ses01F_impro01_M000"]
    for name in ("wav.scp", "text", "utt2spk", "utt2gender", "utt2emo", "utt2dur"):
        assert list(read_map(data_dir / name)) == kept
    assert read_map(data_dir / "utt2emo")["Ses01M-Ses01F_impro01_M000"] == "sad"  # values survive
    assert read_map(data_dir / "spk2utt") == {"Ses01F": " ".join(kept[:2]), "Ses01M": kept[2]}
    assert read_list(data_dir / "classes") == ["ang", "hap", "sad", "neu"]
    assert validate_data_dir(data_dir) == {"utterances": 3, "speakers": 2}


def test_fixer_on_a_valid_directory_changes_nothing(data_dir):
    before = {p.name: p.read_bytes() for p in data_dir.iterdir()}
    assert fix_data_dir(data_dir) == {"kept": 5, "removed": 0, "removed_by_reason": {}}
    assert {p.name: p.read_bytes() for p in data_dir.iterdir()} == before


def test_fixer_refuses_what_it_cannot_decide(data_dir):
    edit(data_dir, "utt2emo", lambda lines: lines + [lines[-1].replace("neu", "ang")])  # duplicate key
    with pytest.raises(DataDirError, match="duplicate key"):
        fix_data_dir(data_dir)


def test_fixer_reports_unfixable_speaker_prefix(data_dir):
    edit(data_dir, "utt2spk", first_value("Ses01M"))
    with pytest.raises(DataDirError, match="do not start with their speaker id"):
        fix_data_dir(data_dir)


def test_fixer_needs_required_files(data_dir):
    (data_dir / "utt2spk").unlink()
    with pytest.raises(DataDirError, match="utt2spk: required file is missing"):
        fix_data_dir(data_dir)


def test_write_map_output_validates(tmp_path):
    # The lead's writer and this validator must agree on the format (sorting, empty values).
    path = tmp_path / "d"
    utt2spk = {u: s for u, (s, _, _) in UTTS.items()}
    write_map(path / "utt2spk", utt2spk)
    write_map(path / "wav.scp", {u: f"/c/{u}.wav" for u in UTTS})
    write_map(path / "text", {u: "" for u in UTTS})
    write_map(path / "spk2utt", {"Ses01F": " ".join(u for u in sorted(UTTS) if u.startswith("Ses01F")),
                                 "Ses01M": " ".join(u for u in sorted(UTTS) if u.startswith("Ses01M"))})
    write_list(path / "classes", ["ang"])
    assert validate_data_dir(path) == {"utterances": 5, "speakers": 2}


def test_cli_exit_codes(data_dir, tmp_path, capsys):
    assert validate_cli.main([str(data_dir)]) == 0
    assert "is valid (5 utterances, 2 speakers)" in capsys.readouterr().out
    edit(data_dir, "text", lambda lines: lines[:-1])
    assert validate_cli.main([str(data_dir)]) == 1
    assert "text: lacks utterances" in capsys.readouterr().err
    assert validate_cli.main([str(data_dir), "--fix"]) == 0
    out = capsys.readouterr().out
    assert "kept 4 utterance(s), removed 1" in out and "missing from text" in out
    assert validate_cli.main([str(tmp_path / "absent")]) == 1
    assert "data directory not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        validate_cli.main([])
    assert info.value.code == 2
