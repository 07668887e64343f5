"""serkit.atomic: the one way serkit writes a file that another stage or process reads."""
from __future__ import annotations

import pytest

from serkit.atomic import atomic_write, atomic_write_text


def test_a_write_that_fails_midway_leaves_the_old_file_whole_and_no_temporary(tmp_path):
    path = tmp_path / "utt2emo"
    atomic_write_text(path, "u1 ang\nu2 hap\n")

    def killed(tmp):
        tmp.write_text("u1 sad\n")  # half of the new content, then the job dies
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, killed)
    assert path.read_text() == "u1 ang\nu2 hap\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["utt2emo"]


def test_a_write_replaces_the_file_and_makes_its_folder(tmp_path):
    path = tmp_path / "new" / "folder" / "classes"
    atomic_write_text(path, "ang\n")
    atomic_write_text(path, "ang\nhap\n")
    assert path.read_text() == "ang\nhap\n"
    assert [p.name for p in path.parent.iterdir()] == ["classes"]
