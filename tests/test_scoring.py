"""Stage 4 scoring, RESULTS.md sections and the comparison table, on experiments built here.

Expected figures are worked out by hand in the comments, never taken from the code under test.
"""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from serkit.scoring import results_md, scoring
from serkit.bin import compare as compare_cli
from serkit.bin import score as score_cli
from serkit.scoring.results_md import ResultsError
from serkit.scoring.scoring import ScoringError
from serkit.targets.ctc import suffix_vote

CLASSES = ["ang", "hap", "sad", "neu"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# fold01: 4 utterances, neu mistaken for ang.
#   utt  ref  hyp   ref_tokens        hyp_tokens       edits  suffix vote
#   a1   ang  ang   F0 V0 L0 VS0      F0 V0 VS0        1      0 (right)
#   a2   hap  hap   S1 VS1            S1 VS0 V1        2      1 (two 1s vs one 0: right)
#   a3   sad  sad   N2 V2             (none)           2      none (counts as wrong)
#   a4   neu  ang   L3                L0 L3            1      tie 0/3 -> first seen, 0 (wrong)
FOLD01 = [
    ("a1", "ang", "ang", "F0 V0 L0 VS0", "F0 V0 VS0"),
    ("a2", "hap", "hap", "S1 VS1", "S1 VS0 V1"),
    ("a3", "sad", "sad", "N2 V2", ""),
    ("a4", "neu", "ang", "L3", "L0 L3"),
]
# fold02: 8 utterances, one hap mistaken for ang; tokens decoded perfectly.
FOLD02 = [
    (f"b{i}", ref, hyp, f"V{CLASSES.index(ref)}", f"V{CLASSES.index(ref)}")
    for i, (ref, hyp) in enumerate([("ang", "ang"), ("ang", "ang"), ("hap", "hap"), ("hap", "ang"),
                                    ("sad", "sad"), ("sad", "sad"), ("neu", "neu"), ("neu", "neu")])
]


def write_fold(exp_dir: Path, fold: str, rows, *, lam=0.1, phoneme_head=True, weights=None, history=None,
               family="w2v2_mtl"):
    fold_dir = exp_dir / fold
    fold_dir.mkdir(parents=True)
    token_columns = ["ref_tokens", "hyp_tokens"] if phoneme_head else []
    lines = ["\t".join(["utt", "ref", "hyp", *(f"p_{c}" for c in CLASSES), *token_columns])]
    for utt, ref, hyp, ref_tokens, hyp_tokens in rows:
        tokens = [ref_tokens, hyp_tokens] if phoneme_head else []
        lines.append("\t".join([utt, ref, hyp, "0.25", "0.25", "0.25", "0.25", *tokens]))
    (fold_dir / "test_predictions.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {"family": family, "classes": CLASSES, "options": {"mtl_lambda": lam} if lam is not None else {},
              "n_emotions": 4, "n_tokens": 25 if phoneme_head else 0,
              "ctc_targets": "emophone" if phoneme_head else None}
    (fold_dir / "model_config.json").write_text(json.dumps(config), encoding="utf-8")
    if weights is not None:
        (fold_dir / "layer_weights.json").write_text(json.dumps({"weights": weights}), encoding="utf-8")
    if history is not None:
        (fold_dir / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history), encoding="utf-8")
    return fold_dir


def two_fold_experiment(root: Path, tag="mtl", lam=0.1, **kwargs) -> Path:
    exp_dir = root / "exp" / tag / "loso"
    write_fold(exp_dir, "fold01", FOLD01, lam=lam, **kwargs)
    write_fold(exp_dir, "fold02", FOLD02, lam=lam, **kwargs)
    return exp_dir


HISTORY = [{"epoch": e, "train_loss": 2.0 / e, "valid_loss": 2.5 / e, "valid_UA": 0.3 + 0.1 * e} for e in (1, 2, 3)]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The two-fold experiment, scored once for the tests that only read its results."""
    exp_dir = tmp_path_factory.mktemp("scored") / "exp" / "mtl" / "loso"
    write_fold(exp_dir, "fold01", FOLD01, weights=[0.5, 0.25, 0.25], history=HISTORY)
    write_fold(exp_dir, "fold02", FOLD02, weights=[0.1, 0.2, 0.7], history=HISTORY)
    return exp_dir, scoring.score_experiment(exp_dir)


# --------------------------------------------------------------------------------------------
# Scoring maths


def test_per_fold_scores(scored):
    _, summary = scored
    f1 = summary["folds"]["fold01"]
    # fold01: 3 of 4 right; recalls ang 1, hap 1, sad 1, neu 0
    assert f1["WA"] == pytest.approx(3 / 4)
    assert f1["UA"] == pytest.approx(3 / 4)
    assert f1["recall"] == pytest.approx({"ang": 1.0, "hap": 1.0, "sad": 1.0, "neu": 0.0})
    # F1: ang precision 1/2 recall 1 -> 2/3; hap 1; sad 1; neu 0 -> mean 2/3
    assert f1["macro_F1"] == pytest.approx(2 / 3)
    assert f1["confusion"] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]
    f2 = summary["folds"]["fold02"]
    # fold02: 7 of 8 right; recalls 1, 1/2, 1, 1 -> UA 3.5/4
    assert f2["WA"] == pytest.approx(7 / 8)
    assert f2["UA"] == pytest.approx(3.5 / 4)
    assert f2["n_utts"] == 8


def test_pooled_differs_from_mean(scored):
    _, summary = scored
    # mean over folds: WA (3/4 + 7/8) / 2 = 13/16; UA (3/4 + 7/8) / 2 = 13/16
    assert summary["mean"]["WA"] == pytest.approx(13 / 16)
    assert summary["mean"]["UA"] == pytest.approx(13 / 16)
    # sample std of two values = |difference| / sqrt(2)
    assert summary["std"]["WA"] == pytest.approx((7 / 8 - 3 / 4) / 2 ** 0.5)
    # pooled: 10 of 12 right; recalls ang 3/3, hap 2/3, sad 3/3, neu 2/3 -> UA 10/12
    pooled = summary["pooled"]
    assert pooled["n_utts"] == 12
    assert pooled["WA"] == pytest.approx(10 / 12)
    assert pooled["UA"] == pytest.approx((1 + 2 / 3 + 1 + 2 / 3) / 4)
    assert pooled["WA"] != pytest.approx(summary["mean"]["WA"])
    assert pooled["confusion"] == [[3, 0, 0, 0], [1, 2, 0, 0], [0, 0, 3, 0], [1, 0, 0, 2]]
    # per-class recall mean over folds: hap (1 + 1/2) / 2
    assert summary["mean"]["recall"]["hap"] == pytest.approx(0.75)


def test_per_and_suffix_accuracy(scored):
    _, summary = scored
    f1, f2, pooled = summary["folds"]["fold01"], summary["folds"]["fold02"], summary["pooled"]
    # fold01: 1 + 2 + 2 + 1 = 6 edits over 4 + 2 + 2 + 1 = 9 reference tokens
    assert f1["PER"] == pytest.approx(6 / 9)
    # votes right, right, none, wrong (tie broken towards the first suffix seen)
    assert f1["suffix_acc"] == pytest.approx(2 / 4)
    assert f1["n_no_tokens"] == 1
    assert f2["PER"] == 0.0 and f2["suffix_acc"] == 1.0 and f2["n_no_tokens"] == 0
    # pooled PER is 6 edits over 17 tokens, not the mean of 6/9 and 0
    assert pooled["PER"] == pytest.approx(6 / 17)
    assert summary["mean"]["PER"] == pytest.approx(3 / 9)
    assert pooled["suffix_acc"] == pytest.approx(10 / 12)
    assert pooled["n_no_tokens"] == 1


def test_suffix_vote():
    assert suffix_vote(["VS2", "F2", "L1"]) == 2
    assert suffix_vote(["L0", "L3"]) == 0  # tie: first suffix seen
    assert suffix_vote(["L3", "L0"]) == 3
    assert suffix_vote(["S12"]) == 12  # multi-digit suffixes are whole numbers
    assert suffix_vote([]) is None
    with pytest.raises(ValueError, match="no emotion suffix"):
        suffix_vote(["<blank>"])


def test_model_without_phoneme_head_has_no_per(tmp_path):
    summary = scoring.score_experiment(two_fold_experiment(tmp_path, phoneme_head=False))
    assert summary["pooled"]["PER"] is None and summary["mean"]["suffix_acc"] is None
    table = results_md.fold_table(summary)
    assert "| fold01 | 4 | 75.0 | 75.0 | 66.7 |" in table and "PER" not in table


def test_layer_weights_and_history_summary(scored):
    _, summary = scored
    # mean of (0.5, 0.25, 0.25) and (0.1, 0.2, 0.7)
    assert summary["layer_weights"]["mean"] == pytest.approx([0.3, 0.225, 0.475])
    assert summary["history"]["fold02"][2]["valid_UA"] == pytest.approx(0.6)
    assert "| **mean** | 30.0 | 22.5 | 47.5 |" in results_md.layer_weights_table(summary)


# --------------------------------------------------------------------------------------------
# Bad input


def test_missing_fold_is_an_error_naming_it(tmp_path):
    exp_dir = tmp_path / "exp" / "mtl" / "loso"
    write_fold(exp_dir, "fold01", FOLD01)
    write_fold(exp_dir, "fold03", FOLD02)  # fold02 never started: no folder at all
    (exp_dir / "fold04").mkdir()  # fold04 started but has no predictions
    with pytest.raises(ScoringError, match=r"2 of 4 folds .*fold02, fold04.*--allow-partial"):
        scoring.score_experiment(exp_dir)


def test_allow_partial_lists_missing_folds(tmp_path):
    exp_dir = tmp_path / "exp" / "mtl" / "loso"
    write_fold(exp_dir, "fold01", FOLD01)
    write_fold(exp_dir, "fold03", FOLD02)
    summary = scoring.score_experiment(exp_dir, allow_partial=True)
    assert summary["missing_folds"] == ["fold02"] and not summary["complete"]
    assert sorted(summary["folds"]) == ["fold01", "fold03"]
    table = results_md.fold_table(summary)
    assert "| fold02 | missing |" in table and "Partial experiment" in table


def test_expected_folds_from_fold_definitions(tmp_path):
    exp_dir = two_fold_experiment(tmp_path)
    folds_dir = tmp_path / "data" / "folds" / "loso"
    for name in ("fold01", "fold02", "fold03"):
        (folds_dir / name).mkdir(parents=True)
    with pytest.raises(ScoringError, match="fold03"):
        scoring.score_experiment(exp_dir, folds_dir=folds_dir)


def test_unknown_label_names_file_and_line(tmp_path):
    exp_dir = tmp_path / "exp" / "mtl" / "loso"
    write_fold(exp_dir, "fold01", FOLD01[:2] + [("a3", "fear", "sad", "N2", "N2")])
    with pytest.raises(ScoringError, match=r"fold01/test_predictions.tsv:4: ref label 'fear'"):
        scoring.score_experiment(exp_dir)


def test_suffix_beyond_classes_is_an_error(tmp_path):
    exp_dir = tmp_path / "exp" / "mtl" / "loso"
    write_fold(exp_dir, "fold01", [("a1", "ang", "ang", "F0", "F7")])
    with pytest.raises(ScoringError, match=r"test_predictions.tsv:2: .*suffix 7"):
        scoring.score_experiment(exp_dir)


def test_bad_header_and_field_count(tmp_path):
    path = tmp_path / "test_predictions.tsv"
    path.write_text("utt\tref\thyp\n", encoding="utf-8")
    with pytest.raises(ScoringError, match="unexpected header"):
        scoring.read_predictions(path)
    path.write_text("utt\tref\thyp\tp_ang\tp_hap\tref_tokens\thyp_tokens\nu1\tang\tang\t1\t0\tF0\n", encoding="utf-8")
    with pytest.raises(ScoringError, match=r":2: 6 tab-separated fields, header has 7"):
        scoring.read_predictions(path)
    with pytest.raises(ScoringError, match="must match in order"):
        scoring.read_predictions(path, classes=["hap", "ang"])


def test_same_utterance_in_two_folds_is_an_error(tmp_path):
    exp_dir = tmp_path / "exp" / "mtl" / "loso"
    write_fold(exp_dir, "fold01", FOLD01)
    write_fold(exp_dir, "fold02", FOLD01[:1])
    with pytest.raises(ScoringError, match="more than one fold.*'a1'"):
        scoring.score_experiment(exp_dir)


# --------------------------------------------------------------------------------------------
# Output files


def test_score_files_are_written(scored):
    exp_dir, summary = scored
    scores = exp_dir / "scores"
    for name in ("confusion_fold01", "confusion_fold02", "confusion_pooled", "layer_weights", "learning_curves"):
        data = (scores / f"{name}.png").read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert len(data) > 5000, name  # a real figure, not an empty canvas
    text = (scores / "confusion_pooled.txt").read_text(encoding="utf-8")
    # pooled hap row: 1 as ang, 2 as hap, total 3; row % 33.3 / 66.7
    assert "hap" in text and text.split("\n")[3].split() == ["hap", "1", "2", "0", "0", "3"]
    assert "33.3   66.7" in text
    on_disk = json.loads((scores / "summary.json").read_text(encoding="utf-8"))
    assert on_disk["pooled"]["WA"] == summary["pooled"]["WA"]
    assert scoring.load_summary(exp_dir)["folds"].keys() == summary["folds"].keys()


def test_rescore_removes_stale_fold_figures(tmp_path):
    exp_dir = two_fold_experiment(tmp_path)
    scoring.score_experiment(exp_dir)
    (exp_dir / "fold02" / "test_predictions.tsv").unlink()
    scoring.score_experiment(exp_dir, allow_partial=True)
    assert not (exp_dir / "scores" / "confusion_fold02.png").exists()
    assert (exp_dir / "scores" / "confusion_fold01.png").exists()


# --------------------------------------------------------------------------------------------
# RESULTS.md


def section_for(summary, results):
    return results_md.experiment_section(summary, results, command="./run.sh --stage 3",
                                         environment={"python": "3.x"}, commit="abc123")


def test_experiment_section_content(scored, tmp_path):
    exp_dir, summary = scored
    config = tmp_path / "conf.yaml"
    config.write_text("lambda: 0.1\nlr: 5.0e-5\n", encoding="utf-8")
    text = results_md.experiment_section(summary, exp_dir.parent.parent.parent / "RESULTS.md", config=config, overrides="--lambda 0.1",
                                         command="./run.sh", environment={"torch": "9.9"}, commit="abc123 (dirty)")
    assert "## mtl / loso" in text and "leave-one-speaker-out" in text
    assert "abc123 (dirty)" in text and "torch        9.9" in text
    assert "lr: 5.0e-5" in text and "`--lambda 0.1`" in text and "`./run.sh`" in text
    # per-fold row and summary rows in percent with one decimal
    assert "| fold02 | 8 | 87.5 | 87.5 |" in text
    assert "| **pooled (2 folds)** | 12 | 83.3 | 83.3 |" in text
    assert "81.2 ± 8.8" in text  # 13/16 = 81.25 -> 81.2 ; std 0.125/sqrt(2) = 8.84
    # pooled confusion as counts (row %)
    assert "| **hap** | 1 (33.3) | 2 (66.7) | 0 (0.0) | 0 (0.0) | 3 |" in text
    assert "(exp/mtl/loso/scores/confusion_pooled.png)" in text


def test_override_file_is_shown_with_its_contents(scored, tmp_path):
    """A recipe's override file (conf/train.yaml) is recorded with what it changes, not just named."""
    exp_dir, summary = scored
    config = tmp_path / "conf.yaml"
    config.write_text("batch_size: 16\n", encoding="utf-8")
    overrides = tmp_path / "train.yaml"
    overrides.write_text("batch_size: 4  # CPU demo\n", encoding="utf-8")
    text = results_md.experiment_section(summary, tmp_path / "RESULTS.md", config=config, overrides=str(overrides),
                                         command="./run.sh", environment={}, commit="abc")
    assert "**Overrides**: `train.yaml`" in text
    assert "batch_size: 4  # CPU demo" in text


def test_section_replacement_keeps_other_sections(scored, tmp_path):
    results = tmp_path / "RESULTS.md"
    second = scored[1]
    first = dict(second, tag="single")
    results_md.update_results(results, "single/loso", section_for(first, results))
    results_md.update_results(results, "mtl/loso", section_for(second, results))
    with open(results, "a", encoding="utf-8") as handle:
        handle.write("\nNotes written by hand.\n")
    before = results.read_text(encoding="utf-8")
    mtl_block = before[before.index("<!-- serkit:begin mtl/loso -->"):before.index("<!-- serkit:end mtl/loso -->")]

    results_md.update_results(results, "single/loso", "## single / loso\n\nre-scored\n")
    after = results.read_text(encoding="utf-8")
    assert after.count("<!-- serkit:begin single/loso -->") == 1
    assert "re-scored" in after
    assert "| fold01 | 4 | 75.0" in mtl_block and mtl_block in after  # the other section is untouched
    assert "Notes written by hand." in after
    assert after.index("single/loso") < after.index("mtl/loso")  # it stays where it was


def test_broken_markers_are_refused(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n<!-- serkit:begin a/loso -->\nhalf a section\n", encoding="utf-8")
    with pytest.raises(ResultsError, match="markers of section 'a/loso' are broken"):
        results_md.update_results(results, "a/loso", "new")
    assert "half a section" in results.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Command-line entry points


def test_score_cli(tmp_path, capsys):
    exp_dir = two_fold_experiment(tmp_path)
    results = tmp_path / "RESULTS.md"
    assert score_cli.main(["--exp", str(exp_dir), "--results", str(results), "--command", "./run.sh"]) == 0
    out = capsys.readouterr().out
    assert "| **pooled (2 folds)** | 12 | 83.3 |" in out
    assert "<!-- serkit:begin mtl/loso -->" in results.read_text(encoding="utf-8")


REPO = Path(__file__).resolve().parents[1]


def absolute_paths(text: str) -> list[str]:
    """Words of ``text`` that are (or hold, after '=') an absolute path: what RESULTS.md must not record."""
    words = re.split(r"[\s`'\"()\[\]]+", text)
    return [word for word in words if re.match(r"(--[\w-]+=)?/\w", word)]


def test_generated_results_md_records_no_machine_path(tmp_path, monkeypatch, caplog):
    """Stage 4 is given absolute paths (as a recipe run from elsewhere gives them): the committed
    RESULTS.md names them relative to the recipe, and a corpus outside it only by its last component."""
    checkout = tmp_path / "checkout"  # a checkout with a recipe in it, as egs/<corpus>/ is
    recipe = checkout / "egs" / "corpus"
    (checkout / ".git").mkdir(parents=True)
    exp_dir = two_fold_experiment(recipe)
    (checkout / "conf").mkdir()
    config = checkout / "conf" / "w2v2_mtl.yaml"
    config.write_text("lr: 1.0e-4\n", encoding="utf-8")
    outside = tmp_path / "corpora" / "IEMOCAP_full_release"
    command = f"./run.sh --corpus_root {outside} --data={recipe}/data/all --stage 3"
    monkeypatch.chdir(tmp_path)  # not the recipe: nothing may depend on where scoring runs from
    argv = ["--exp", str(exp_dir), "--results", str(recipe / "RESULTS.md"), "--config", str(config),
            "--overrides", f"--data_dir {recipe}/data", "--command", command]
    assert score_cli.main(argv) == 0
    assert compare_cli.main(["--results", str(recipe / "RESULTS.md"), "--title", "one", str(exp_dir)]) == 0
    text = (recipe / "RESULTS.md").read_text(encoding="utf-8")
    assert absolute_paths(text) == [] and str(tmp_path) not in text
    assert "--corpus_root <...>/IEMOCAP_full_release --data=data/all --stage 3" in text
    assert "--exp exp/mtl/loso" in text and "--config ../../conf/w2v2_mtl.yaml" in text
    assert "**Overrides**: `--data_dir data`" in text
    assert "IEMOCAP_full_release: outside the recipe" in caplog.text  # said, not silently dropped


def test_links_through_an_exp_symlink_stay_inside_the_recipe(tmp_path, monkeypatch):
    """exp/ as a symlink to a scratch disk (as Kaldi recipes make it): RESULTS.md links and names the
    experiment through exp/..., never through the disk's path."""
    checkout = tmp_path / "checkout"
    recipe = checkout / "egs" / "corpus"
    (checkout / ".git").mkdir(parents=True)
    recipe.mkdir(parents=True)
    scratch = tmp_path / "scratch"
    two_fold_experiment(scratch)  # scratch/exp/mtl/loso
    (recipe / "exp").symlink_to(scratch / "exp", target_is_directory=True)
    monkeypatch.chdir(recipe)
    assert score_cli.main(["--exp", "exp/mtl/loso", "--results", "RESULTS.md"]) == 0
    text = (recipe / "RESULTS.md").read_text(encoding="utf-8")
    assert "](exp/mtl/loso/scores/confusion_pooled.png)" in text
    assert "](exp/mtl/loso/scores/summary.json)" in text
    assert "scratch" not in text and "](../" not in text
    assert "## mtl / loso" in text


def test_a_recipe_reached_through_a_symlink_is_recognised_either_way(tmp_path):
    """A checkout under a symlinked home: a command may spell the recipe's paths through the link or
    through the real folder (``pwd -P``); both become paths relative to the recipe."""
    real = tmp_path / "disk" / "checkout"
    (real / ".git").mkdir(parents=True)
    (real / "egs" / "corpus").mkdir(parents=True)
    (tmp_path / "home").symlink_to(real, target_is_directory=True)
    linked = tmp_path / "home" / "egs" / "corpus"
    text = f"--exp {linked}/exp/a --data {real}/egs/corpus/data --config {real}/conf/x.yaml"
    assert results_md.portable_text(text, linked) == "--exp exp/a --data data --config ../../conf/x.yaml"


def test_recipe_command_names_the_corpus_by_its_db_sh_variable(tmp_path):
    """ser.sh records ``./run.sh ...`` with the corpus as ``"$IEMOCAP"`` (db.sh's variable), set from
    the environment or db.sh's default, and quotes other words as the shell needs them."""
    recipe = tmp_path / "iemocap"
    recipe.mkdir()
    (recipe / "db.sh").write_text("# where the corpus lives\nIEMOCAP=${IEMOCAP:-/path/to/IEMOCAP_full_release}\n"
                                  "OTHER=${OTHER:-}\n")
    script = '. "$1"; shift; portable_cmdline "$@"'

    def recorded(*args: str, **env: str) -> str:
        done = subprocess.run(["bash", "-c", script, "bash", str(REPO / "egs/TEMPLATE/utils/recipe_command.sh"), *args],
                              cwd=recipe, env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True,
                              check=True)
        return done.stdout.strip()

    assert recorded("--corpus_root", "/data/IEMOCAP", "--models", "w2v2_mtl egemaps_svm", "--stage", "3",
                    IEMOCAP="/data/IEMOCAP") == \
        """./run.sh --corpus_root "$IEMOCAP" --models 'w2v2_mtl egemaps_svm' --stage 3"""
    assert recorded("--corpus_root", "/path/to/IEMOCAP_full_release/Session1", "--title", "it's") == \
        """./run.sh --corpus_root "$IEMOCAP/Session1" --title 'it'\\''s'"""
    assert recorded("--corpus_root", "/data/IEMOCAP", "--folds", "") == "./run.sh --corpus_root /data/IEMOCAP --folds ''"


def test_score_cli_reports_missing_fold(tmp_path, capsys):
    exp_dir = tmp_path / "exp" / "mtl" / "loso"
    write_fold(exp_dir, "fold02", FOLD02)
    assert score_cli.main(["--exp", str(exp_dir), "--results", str(tmp_path / "R.md")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("score: error:") and "fold01" in err
    assert not (tmp_path / "R.md").exists()


def test_compare_orders_by_lambda(scored, tmp_path, capsys):
    # Four lambda variants: copies of the scored experiment's summary under other tags and lambdas.
    exp_dirs = {}
    for tag, lam in (("lam1", 1), ("lam0", 0.0), ("lam0.01", 0.01), ("lam0.1", 0.1)):
        exp_dirs[tag] = tmp_path / "exp" / tag / "loso"
        variant = dict(scored[1], tag=tag, model=dict(scored[1]["model"], options={"mtl_lambda": lam}))
        scoring.write_summary(exp_dirs[tag] / "scores" / "summary.json", variant)
    other = tmp_path / "exp" / "crnn" / "loso"  # another family, given first: its rows come first
    write_fold(other, "fold01", FOLD02, phoneme_head=False, lam=None, family="tim_net")
    scoring.score_experiment(other)

    results = tmp_path / "RESULTS.md"
    argv = ["--results", str(results), "--title", "lambda ablation", str(other),
            *(str(exp_dirs[t]) for t in ("lam1", "lam0", "lam0.01", "lam0.1"))]
    assert compare_cli.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "/ loso" in line]
    assert [row.split(" | ")[0] for row in rows] == [
        "| crnn / loso", "| lam0 / loso", "| lam0.01 / loso", "| lam0.1 / loso", "| lam1 / loso"]
    # mean ± std WA and UA 13/16 ± 0.125/sqrt(2); macro-F1 fold01 2/3 (from the test above), fold02
    # (ang 0.8, hap 2/3, sad 1, neu 1) 13/15: mean 23/30 ± (13/15 - 2/3)/sqrt(2); PER 6/9 and 0: mean 1/3
    # ± (2/3)/sqrt(2); suffix acc 1/2 and 1: 3/4 ± 0.5/sqrt(2); pooled WA = UA 10/12
    cells = rows[1].strip("| ").split(" | ")
    assert cells[:9] == ["lam0 / loso", "`w2v2_mtl` (mtl_lambda = 0.0, CTC targets emophone)", "2/2", "81.2 ± 8.8",
                         "81.2 ± 8.8", "76.7 ± 14.1", "33.3 ± 47.1", "75.0 ± 35.4", "83.3"]
    assert cells[9] == "83.3"
    # pooled macro-F1: ang 3 right of 5 said (P 3/5, R 1): 0.75; hap, neu 2/3 recall, P 1: 0.8; sad 1
    assert float(cells[10]) == pytest.approx(100 * (0.75 + 0.8 + 1 + 0.8) / 4, abs=0.06)
    # one fold only: no std; pooled = that fold (7 of 8); no CTC head: no PER, and no lambda in its name;
    # scored without a data directory: no speakers, so no interval and no paired test (the first row is the reference)
    assert rows[0] == "| crnn / loso | `tim_net` | 1/1 | 87.5 | 87.5 | 86.7 | – | – | 87.5 | 87.5 | 86.7 | – | reference |"
    assert cells[11:] == ["–", "–"]
    assert "UA per fold" in out
    text = results.read_text(encoding="utf-8")
    assert "<!-- serkit:begin compare:lambda-ablation -->" in text
    # the picture of the table: next to RESULTS.md, linked from the section by a relative path
    figure = tmp_path / "figures" / "lambda-ablation.png"
    assert figure.read_bytes().startswith(PNG_SIGNATURE) and figure.stat().st_size > 5000
    assert "](figures/lambda-ablation.png)" in text

    # re-running the comparison replaces its section instead of adding another
    assert compare_cli.main(argv[:4] + [str(exp_dirs["lam0"])]) == 0
    text = results.read_text(encoding="utf-8")
    assert text.count("## Comparison: lambda ablation") == 1 and "lam1 / loso" not in text


def test_a_column_only_some_rows_have_is_blank_in_the_others(scored):
    """An ablation row that trains an extra target (e.g. a gender head) adds its columns; the rows without
    that target show '–' there."""
    with_gender = dict(scored[1], tag="with_gender", mean=dict(scored[1]["mean"], gender_UA=0.75),
                       std=dict(scored[1]["std"], gender_UA=0.05), pooled=dict(scored[1]["pooled"], gender_UA=0.75))
    table = results_md.comparison_table([dict(scored[1], tag="plain"), with_gender])
    plain, gendered = ([cell.strip() for cell in line.split("|")] for line in table.splitlines()
                       if line.startswith(("| plain", "| with_gender")))
    header = [cell.strip() for cell in table.splitlines()[0].split("|")]
    column = header.index("gender UA mean ± std")
    assert plain[column] == "–" and gendered[column] == "75.0 ± 5.0"


def test_compare_needs_scored_experiments(tmp_path, capsys):
    assert compare_cli.main(["--results", str(tmp_path / "R.md"), "--title", "t", str(tmp_path / "nope")]) == 1
    assert "score the experiment first" in capsys.readouterr().err


def test_history_nan_becomes_null_and_bad_weights_are_refused(tmp_path):
    history = tmp_path / "history.jsonl"
    history.write_text('{"epoch": 1, "train_loss": NaN, "valid_UA": 0.5}\n\n{"epoch": 2, "train_loss": 1.0}\n')
    records = scoring.read_history(history)
    assert records == [{"epoch": 1, "train_loss": None, "valid_UA": 0.5}, {"epoch": 2, "train_loss": 1.0}]
    history.write_text('{"epoch": 1}\n{"epoch": 2\n')
    with pytest.raises(ScoringError, match="history.jsonl:2: not valid JSON"):
        scoring.read_history(history)
    weights = tmp_path / "layer_weights.json"
    weights.write_text('{"weights": [0.5, NaN]}')
    with pytest.raises(ScoringError, match="layer_weights.json: expected"):
        scoring.read_layer_weights(weights)


def test_git_state_outside_a_repository(tmp_path):
    assert results_md.git_state(tmp_path).startswith("unknown")


def test_git_state_ignores_only_the_results_file(tmp_path):
    """Rewriting RESULTS.md itself does not make the commit 'dirty'; any other change does."""
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    recipe = tmp_path / "egs" / "r"
    recipe.mkdir(parents=True)
    (recipe / "RESULTS.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (recipe / "RESULTS.md").write_text("new section\n")  # the only change: a modified tracked file
    state = results_md.git_state(recipe, ignore=recipe / "RESULTS.md")
    assert not state.endswith("(dirty)") and len(state) == 40
    (tmp_path / "code.py").write_text("x = 2\n")
    assert results_md.git_state(recipe, ignore=recipe / "RESULTS.md").endswith("(dirty)")


def test_results_md_describes_the_folds_stage_2_built_and_labels_speaker_dependent_ones(tmp_path):
    """RESULTS.md takes the protocol's description from data/folds/<protocol>/protocol.json, so a
    corpus's folds are described as built (not in IEMOCAP's words), and speaker-dependent ones say so."""
    exp_dir = two_fold_experiment(tmp_path, tag="mtl")
    folds_dir = tmp_path / "data" / "folds" / "loso"
    for fold in ("fold01", "fold02"):
        (folds_dir / fold).mkdir(parents=True)
    info = {"name": "random_kfold", "description": "stratified random 2-fold over utterances",
            "speaker_dependent": True, "k": 2, "n_folds": 2, "folds": {}}
    (folds_dir / "protocol.json").write_text(json.dumps(info), encoding="utf-8")
    summary = scoring.score_experiment(exp_dir, folds_dir=folds_dir)
    text = results_md.experiment_section(summary, tmp_path / "RESULTS.md", command="./run.sh",
                                         environment={"python": "3"}, commit="abc")
    assert "**Protocol**: **speaker-dependent** `loso`: stratified random 2-fold over utterances." in text
    assert "(**speaker-dependent**)" in results_md.comparison_table([summary])
    # without protocol.json: the generic description, and no speaker-dependent label for loso
    plain = results_md.protocol_description("loso")
    assert plain.startswith("`loso`: leave-one-speaker-out") and "speaker-dependent**" not in plain


def test_results_md_states_the_precision_each_fold_trained_in(tmp_path):
    """model_config.json's precision (written by the trainer) reaches RESULTS.md; folds that differ are listed."""
    exp_dir = two_fold_experiment(tmp_path, tag="mtl")
    text = results_md.experiment_section(scoring.score_experiment(exp_dir), tmp_path / "RESULTS.md",
                                         environment={"python": "3"}, commit="abc")
    assert "**Precision**" not in text  # not recorded (a closed-form fit): no line rather than a guess
    bf16 = {"device": "cpu", "train": "bf16", "train_reason": "auto: cpu has bf16 units (avx512_bf16)",
            "eval": "fp32", "eval_reason": "asked for"}
    for fold, precision in (("fold01", bf16), ("fold02", dict(bf16, train="fp32", train_reason="asked for"))):
        path = exp_dir / fold / "model_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "precision": precision}), encoding="utf-8")
    text = results_md.experiment_section(scoring.score_experiment(exp_dir), tmp_path / "RESULTS.md",
                                         environment={"python": "3"}, commit="abc")
    assert ("**Precision**: training bf16 (auto: cpu has bf16 units (avx512_bf16)), evaluation fp32 (asked for) "
            "on cpu (folds fold01); training fp32 (asked for), evaluation fp32 (asked for) on cpu (folds fold02).") in text
    (exp_dir / "fold02" / "model_config.json").write_text(
        json.dumps({**json.loads((exp_dir / "fold02" / "model_config.json").read_text()), "precision": bf16}))
    text = results_md.experiment_section(scoring.score_experiment(exp_dir), tmp_path / "RESULTS.md",
                                         environment={"python": "3"}, commit="abc")
    assert "**Precision**: training bf16 (auto: cpu has bf16 units (avx512_bf16)), evaluation fp32 (asked for) on cpu." in text


def test_fold_whose_test_lacks_classes_is_labelled_and_stage_0_warnings_are_shown(tmp_path):
    """Issue 19: per-fold UA is the mean over the classes a test set holds; RESULTS.md must say so for a
    fold that lacks some, and repeat stage 0's warnings (an altered copy) that protocol.json carries."""
    exp_dir = tmp_path / "exp" / "mtl" / "loso"
    write_fold(exp_dir, "fold01", FOLD01)
    write_fold(exp_dir, "fold02", [row for row in FOLD02 if row[1] in ("ang", "hap")])  # no sad, no neu
    summary = scoring.score_experiment(exp_dir)
    summary["protocol_info"] = {"description": "Leave one speaker out.", "speaker_dependent": False,
                                "data_warnings": ["ALTERED COPY? every one of the 48 kept files lasts 2.000 s"]}
    text = section_for(summary, tmp_path / "RESULTS.md")
    assert "| fold02 (UA over 2 of 4 classes: test lacks sad, neu) | 4 |" in text
    assert "| fold01 | 4 |" in text
    assert "**Warning**: ALTERED COPY? every one of the 48 kept files lasts 2.000 s" in text
    comparison = results_md.per_fold_comparison([summary])
    assert "| fold02 (UA over 2 of 4 classes: test lacks sad, neu) |" in comparison
