"""The five corpus recipes run unchanged on their look-alike trees: stages 0-2 (data dir, phone labels
by language, the recipe's protocol with its description), then stages 3-5 with the tiny model on one
fold and one epoch (training, scoring, export, inference), as a fresh clone would run them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from corpus_trees import crema_tree, emodb_tree, esd_tree, msp_tree, ravdess_tree
from test_recipes import copy_recipes, run_recipe

from serkit.data.datadir import read_list, read_map, validate_data_dir
from serkit.data.folds import check_no_leakage, load_fold, read_protocol

#: End-to-end tier: every test runs a recipe's run.sh; the module's first test also runs all five
#: recipes' stages (the ``ran`` fixture), which the timeout covers.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

# recipe -> (db.sh variable, tree builder, protocol, classes, language)
RECIPES = {
    "ravdess": ("RAVDESS", ravdess_tree, "loso_speaker", 8, "en"),
    "crema_d": ("CREMA_D", lambda root: crema_tree(root, actors=tuple(range(1001, 1009))), "speaker_kfold", 6, "en"),
    "emodb": ("EMODB", emodb_tree, "loso_speaker", 7, "de"),
    "esd": ("ESD", esd_tree, "predefined", 5, "en"),
    "msp_podcast": ("MSP_PODCAST", msp_tree, "predefined", 8, "en"),
}
#: Recipes run through stages 3-5 (the rest stop after stage 2). Each costs ~35 s of CPU, mostly
#: process start-ups; all five run, as the issue asks, and this is the one place to trim.
FULL_RUN = tuple(RECIPES)
TINY_OVERRIDES = """encoder_source: {tiny}
number_of_epochs: 1
batch_size: 4
lr_encoder: 0.001
lr_heads: 0.005
num_workers: 0
"""


@pytest.fixture(scope="module")
def egs(tmp_path_factory) -> Path:
    return copy_recipes(tmp_path_factory.mktemp("corpus_recipes"))


@pytest.fixture(scope="module")
def tiny_overrides(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    subprocess.run([sys.executable, "-m", "serkit.bin.make_tiny_w2v2", "--out", str(folder / "w2v2")], check=True,
                   capture_output=True)
    path = folder / "tiny.yaml"
    path.write_text(TINY_OVERRIDES.format(tiny=folder / "w2v2"))
    return path


@pytest.fixture(scope="module")
def ran(egs, tiny_overrides, tmp_path_factory):
    """Every recipe, stages 0-5 in one run on its look-alike tree (one fold, one epoch of the tiny model)."""
    results = {}
    for name, (var, build, _, _, _) in RECIPES.items():
        tree = build(tmp_path_factory.mktemp(f"{name}_corpus") / name)
        last = [] if name in FULL_RUN else ["--stop_stage", "2"]
        # the recipe's own per-family override file (the floor keeps its config as shipped)
        (egs / name / "conf" / "w2v2_mtl.yaml").write_text(tiny_overrides.read_text())
        result = run_recipe(egs / name, *last, "--folds", "1", "--nj", "1", "--threads", "1",
                            env={var: str(tree.root)})
        results[name] = (egs / name, tree, result)
    return results


@pytest.mark.parametrize("name", list(RECIPES))
def test_stages_0_to_2_on_the_look_alike(ran, name):
    recipe, tree, result = ran[name]
    _, _, protocol, n_classes, language = RECIPES[name]
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    data = recipe / "data" / "all"
    validate_data_dir(data, complete=True)
    assert sorted(read_map(data / "utt2spk")) == sorted(tree.expected)
    assert len(read_list(data / "classes")) == n_classes and read_list(data / "language") == [language]
    phones = read_map(data / "utt2phn")
    assert sum(bool(v) for v in phones.values()) >= 0.9 * len(phones)  # phones from the language's own source
    info = read_protocol(recipe / "data" / "folds" / protocol)
    assert info["name"] == protocol and info["n_folds"] >= 1 and info["description"]
    utt2spk, utt2emo = read_map(data / "utt2spk"), read_map(data / "utt2emo")
    for fold_dir in sorted((recipe / "data" / "folds" / protocol).glob("fold[0-9]*")):
        fold = load_fold(fold_dir)
        check_no_leakage(fold, utt2spk, speaker_disjoint=not info["speaker_dependent"])
        assert {utt2emo[u] for u in fold["valid"]} == set(utt2emo.values()), fold_dir
    assert (recipe / "data" / "folds" / protocol / "leakage.txt").is_file()
    assert not (recipe / "data" / "folds" / "loso_session").exists()  # no sessions: no IEMOCAP protocols


def test_wrong_root_names_the_layout(egs, tmp_path):
    result = run_recipe(egs / "emodb", "--stop_stage", "0", env={"EMODB": str(tmp_path / "nowhere")})
    assert result.returncode != 0 and "EMODB=" in result.stderr and "lablaut" in result.stderr


@pytest.mark.parametrize("name", FULL_RUN)
def test_stages_3_to_5_train_score_export(ran, name):
    recipe, _, run = ran[name]
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    for n, stage in [(3, "training"), (4, "scoring"), (5, "export and inference")]:
        assert f"Stage {n}: {stage}" in run.stdout
    exp = next((recipe / "exp").glob("*_lambda0.1_seed1"))
    protocol = RECIPES[name][2]
    assert (exp / protocol / "fold01" / "train.done").is_file()
    assert (exp / protocol / "scores" / "summary.json").is_file() and (recipe / "RESULTS.md").is_file()
    assert (exp / "export" / "model.pt").is_file()
    floor = next((recipe / "exp").glob("egemaps_svm_*_seed1"))  # every recipe compares with the floor
    assert (floor / protocol / "fold01" / "train.done").is_file() and (floor / "export" / "model.pt").is_file()
    assert "## Comparison: w2v2_mtl egemaps_svm" in (recipe / "RESULTS.md").read_text()
    classes = read_list(recipe / "data" / "all" / "classes")
    demo = read_map(recipe / "exp" / "export_demo.scp")
    for utt in demo:
        line = next(line for line in run.stdout.splitlines() if line.startswith(utt))
        assert line.split()[1] in classes
