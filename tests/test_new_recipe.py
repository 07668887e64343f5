"""The recipe generator: the shipped corpus recipes are exactly its output (no hand-edited drift), and
its command writes a runnable skeleton for a registered corpus, refusing unknown ones."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from serkit.bin import new_recipe
from serkit.bin.prepare_corpus import default_class_map

REPO = Path(__file__).resolve().parents[1]
# The commands that wrote the shipped recipes (docs/porting.md step 4).
SHIPPED = {
    "ravdess": dict(var="RAVDESS", protocol="loso_speaker", kfold=None,
                    title="RAVDESS speech (24 actors, 8 emotions), W2V2-MTL, leave-one-speaker-out."),
    "crema_d": dict(var="CREMA_D", protocol="speaker_kfold", kfold=5,
                    title="CREMA-D (91 actors, 6 emotions), W2V2-MTL, speaker-grouped 5-fold balanced by gender."),
    "emodb": dict(var="EMODB", protocol="loso_speaker", kfold=None,
                  title="Emo-DB (10 speakers, 7 emotions, German; phones from its lablaut files), W2V2-MTL, "
                        "leave-one-speaker-out."),
    "esd": dict(var="ESD", protocol="predefined", kfold=None,
                title="ESD English half (speakers 0011-0020, 5 emotions), W2V2-MTL, the release's "
                      "train/evaluation/test split (speaker-dependent)."),
    "msp_podcast": dict(var="MSP_PODCAST", protocol="predefined", kfold=None,
                        title="MSP-Podcast (8 primary emotions; O and X excluded), W2V2-MTL, the release's "
                              "Train/Development/Test sets."),
}


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_recipes_are_the_generator_s_output(name):
    spec = SHIPPED[name]
    files = new_recipe.recipe_files(name, name, spec["var"], default_class_map(name), spec["protocol"],
                                    spec["kfold"], spec["title"])
    for rel, content in files.items():
        path = REPO / "egs" / name / rel
        assert path.read_text(encoding="utf-8") == content, f"{path} differs from the generator's output"
    for script in ("run.sh", "local/data.sh"):
        assert os.access(REPO / "egs" / name / script, os.X_OK)


def test_generator_command(tmp_path, capsys):
    egs = tmp_path / "egs"
    (egs / "TEMPLATE").mkdir(parents=True)
    (egs / "TEMPLATE" / "ser.sh").write_text("#!/bin/sh\n")
    assert new_recipe.main(["--name", "esd_zh", "--corpus", "esd_zh", "--db-var", "ESD", "--protocol", "predefined",
                            "--egs", str(egs)]) == 0
    run = (egs / "esd_zh" / "run.sh").read_text()
    assert '--corpus_root "$ESD" --class_map 5class --protocol predefined "$@"' in run
    assert "--corpus esd_zh" in (egs / "esd_zh" / "local" / "data.sh").read_text()
    (egs / "esd_zh" / "db.sh").write_text("ESD=/data/ESD\n")
    assert new_recipe.main(["--name", "esd_zh", "--corpus", "esd_zh", "--egs", str(egs)]) == 0
    assert (egs / "esd_zh" / "db.sh").read_text() == "ESD=/data/ESD\n"  # kept without --force
    assert new_recipe.main(["--name", "savee", "--egs", str(egs)]) == 1
    assert "unknown corpus 'savee'" in capsys.readouterr().err
