"""Stage 1 (serkit.bin.make_targets): the planned experiments' targets make what they need, and only that;
the recipe driver names no target."""
from __future__ import annotations

import re
from pathlib import Path

from serkit.bin import make_targets, plan_experiments
from serkit.data.datadir import fix_data_dir, read_list, read_map
from test_ctc_targets import corpus_with_text
from test_families import CONF

SER_SH = Path(__file__).resolve().parents[1] / "egs" / "TEMPLATE" / "ser.sh"
#: Words that belong to one target: ser.sh may use them only in its usage text.
TARGET_WORDS = re.compile(r"\b(emophone|char|bpe|lang_char|lang_bpe|make_emophones|make_ctc_targets)\b")


def run_stage1(paths, tmp_path, capsys, *plan_options: str, stage1_options=()) -> tuple[set[str], str]:
    """Stage 1 for a plan; the data-dir files and lang dirs it added, and its standard output."""
    def listing() -> set[str]:
        return {p.name for p in paths["data"].iterdir()} | {p.name for p in tmp_path.glob("lang*")}

    before = listing()
    options = ["--class_map", "4class", "--seed", "1", "--conf_dir", str(CONF), "--recipe_conf_dir", str(tmp_path),
               "--lang", str(tmp_path / "lang"), *plan_options]
    capsys.readouterr()
    assert make_targets.main(["--data", str(paths["data"]), *stage1_options, *options]) == 0
    out = capsys.readouterr().out
    assert plan_experiments.main(options) == 0  # the lang dirs training is pointed at are those stage 1 wrote
    lang_dirs = {line.split("\t")[4] for line in capsys.readouterr().out.splitlines()} - {"-"}
    assert lang_dirs == {str(path) for path in tmp_path.glob("lang*") if (path / "tokens.txt").is_file()}
    return listing() - before, out


def test_an_emotion_only_plan_makes_nothing(tmp_path, capsys):
    paths = corpus_with_text(tmp_path / "corpus")
    added, out = run_stage1(paths, tmp_path, capsys, "--models", "tim_net egemaps_svm")
    assert added == set()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d Stage 1: CTC targets: skipped \(no experiment trains a CTC "
                        r"head\)\n", out)


def test_char_targets_make_their_units_and_inventory_only(tmp_path, capsys):
    paths = corpus_with_text(tmp_path / "corpus")
    added, out = run_stage1(paths, tmp_path, capsys, "--models", "tim_net egemaps_svm", "--lambdas", "0.1",
                            "--ctc_targets", "char")
    assert added == {"utt2char", "lang_char"}
    assert "Stage 1: CTC targets (char)" in out and "skipped" not in out
    units = {unit for value in read_map(paths["data"] / "utt2char").values() for unit in value.split()}
    tokens = [line.split()[0] for line in read_list(tmp_path / "lang_char" / "tokens.txt")]
    assert tokens[0] == "<blank>" and set(tokens[1:]) == units and "|" in units


def test_each_kind_is_made_once_in_plan_order_with_its_own_inventory(tmp_path, capsys):
    paths = corpus_with_text(tmp_path / "corpus")
    (paths["data"] / "utt2phn").unlink()  # stage 1 makes the emotion-phonemes again
    fix_data_dir(paths["data"])  # the complete data dir of stage 0 (spk2utt), which emotion-phonemes validate
    added, out = run_stage1(paths, tmp_path, capsys, "--models", "w2v2_mtl tim_net", "--lambdas", "0.1",
                            "--ctc_targets", "emophone bpe", stage1_options=("--bpe_units", "20"))
    assert added == {"utt2phn", "utt2arpabet", "emophone_report.txt", "utt2bpe", "lang", "lang_bpe"}
    steps = re.findall(r"Stage 1: CTC targets \((\w+)\)", out)
    assert steps == ["emophone", "bpe"]  # two families train each kind: made once each
    assert (tmp_path / "lang_bpe" / "bpe.model").is_file()
    phones = {token for value in read_map(paths["data"] / "utt2phn").values() for token in value.split()}
    assert phones and phones <= {line.split()[0] for line in read_list(tmp_path / "lang" / "tokens.txt")}


def test_the_recipe_driver_names_no_target_outside_its_usage_text():
    text = SER_SH.read_text()
    usage = re.search(r'\nhelp_message="(?:[^"\\]|\\.)*"\n', text, re.S)
    assert usage and TARGET_WORDS.search(usage.group(0))  # the options' usage does describe the kinds
    rest = text.replace(usage.group(0), "\n")
    offending = [line for line in rest.splitlines() if TARGET_WORDS.search(line)]
    assert not offending, offending
