"""Hostile and damaged input (issue 16): option values and override files are data, never code; refusals
are serkit errors with exit code 2 that say what was refused and never suggest turning a protection off.

Every hostile value here would create a marker file ``pwned`` if it ran; each test checks it never appears.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from serkit.bin import plan_experiments
from serkit.bin import train as train_cli
from serkit.safe_yaml import YamlRefused, cli_overrides, load_plain_mapping, typed_value

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf" / "w2v2_mtl.yaml"


def exploit(marker: Path) -> str:
    """A YAML value that runs ``touch MARKER`` when read by a loader with Python tags enabled."""
    return f'!!python/object/apply:os.system ["touch {marker}"]'


# ----------------------------------------------------------------------------- option values


def test_option_values_are_typed_one_by_one_and_never_parsed_as_yaml_text(tmp_path):
    marker = tmp_path / "pwned"
    overrides = cli_overrides(["--batch_size", "4", "--lr_heads=1e-3", "--sorting", "true", "--max_duration", "null",
                               "--data_dir", exploit(marker), "--lang_dir", f"data/all\nlr: {exploit(marker)}",
                               "--note", "a: b", "--layers", "[1, 2]", "--ref", "!ref <lr_heads>"])
    assert overrides == {"batch_size": 4, "lr_heads": 1e-3, "sorting": True, "max_duration": None,
                         "data_dir": exploit(marker), "lang_dir": f"data/all\nlr: {exploit(marker)}",
                         "note": "a: b", "layers": "[1, 2]", "ref": "!ref <lr_heads>"}  # no key added, no tag
    assert typed_value("0.1") == 0.1 and typed_value("yes") == "yes" and typed_value("") is None
    with pytest.raises(YamlRefused, match="--batch_size needs a value"):
        cli_overrides(["--batch_size"])
    with pytest.raises(YamlRefused, match="not a hyperparameter name"):
        cli_overrides(["--a: b", "1"])
    assert not marker.exists()


@pytest.mark.parametrize("option", ["--data_dir", "--lang_dir", "--fold_dir"])
def test_a_hostile_option_value_runs_nothing_and_trains_nothing(option, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "d").mkdir()
    paths = {"--data_dir": "d", "--lang_dir": "d", "--fold_dir": "d"}
    for value in (exploit(marker), f"d\nlr_heads: {exploit(marker)}\nnumber_of_epochs: 0"):
        args = [str(CONF), *[word for name, path in paths.items() for word in (name, value if name == option else path)],
                "--output_folder", str(tmp_path / "exp"), "--device", "cpu"]
        assert train_cli.main(args) == 1
        error = capsys.readouterr().err
        assert f"{option} {value.splitlines()[0]}" in error and "directory not found" in error
    assert not marker.exists() and not (tmp_path / "exp").exists()


# ----------------------------------------------------------------------------- override and config files


def test_an_overrides_file_with_a_python_tag_is_refused_naming_the_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    overrides = tmp_path / "hostile.yaml"
    overrides.write_text(f"batch_size: 4\nlr_heads: {exploit(marker)}\n")
    args = [str(CONF), "--overrides", str(overrides), "--data_dir", ".", "--fold_dir", ".",
            "--output_folder", str(tmp_path / "exp")]
    assert train_cli.main(args) == 2
    error = capsys.readouterr().err
    assert f"{overrides}, line 2: the tag !!python/object/apply:os.system is not allowed in an overrides file" in error
    assert "Traceback" not in error and not marker.exists() and not (tmp_path / "exp").exists()


@pytest.mark.parametrize("text, message", [
    ("- batch_size: 4\n- lr_heads: 0.1\n", "the overrides file is a list; it must be a mapping"),
    ("just a value\n", "the overrides file is a single value"),
    ("lr_heads: !ref <lr_encoder>\n", "line 1: the tag !ref is not allowed in an overrides file"),
    ("optimizer: !new:os.system\n  command: touch pwned\n", "line 1: the tag !new:os.system is not allowed"),
    ("a: [1\n", "not valid YAML"),
])
def test_an_overrides_file_must_be_a_mapping_of_plain_values(text, message, tmp_path):
    path = tmp_path / "overrides.yaml"
    path.write_text(text)
    with pytest.raises(YamlRefused, match=message.replace("[", r"\[").replace("!", "!")):
        load_plain_mapping(path)
    assert load_plain_mapping(REPO / "egs" / "mini_iemocap" / "conf" / "w2v2_mtl.yaml")["batch_size"] == 4


def test_a_config_with_a_python_tag_is_refused_but_hyperpyyaml_tags_are_allowed(tmp_path, capsys):
    marker = tmp_path / "pwned"
    config = tmp_path / "copied.yaml"
    config.write_text(CONF.read_text() + f"extra: {exploit(marker)}\n")
    line = len(CONF.read_text().splitlines()) + 1
    assert train_cli.main([str(config), "--data_dir", ".", "--fold_dir", ".", "--output_folder", str(tmp_path)]) == 2
    assert f"{config}, line {line}: the tag !!python/object/apply:os.system would run Python code" \
        in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.parametrize("text, message", [
    ("- batch_size: 4\n", "the overrides file is a list"),
    ("mtl_lambda: {exploit}\n", "line 1: the tag !!python/object/apply:os.system is not allowed"),
])
def test_the_planner_refuses_a_bad_overrides_file_before_any_stage(text, message, tmp_path, capsys):
    marker = tmp_path / "pwned"
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(text.format(exploit=exploit(marker)))
    code = plan_experiments.main(["--models", "w2v2_mtl tim_net", "--class_map", "4class", "--seed", "1",
                                  "--conf_dir", str(REPO / "conf"), "--recipe_conf_dir", str(tmp_path),
                                  "--overrides", str(overrides)])
    error = capsys.readouterr().err
    assert code == 2 and message in error and str(overrides) in error and "Traceback" not in error
    assert not marker.exists()


# ----------------------------------------------------------------------------- pickles and links in untrusted files


class Exploit:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_an_encoder_whose_weights_hold_a_pickle_is_refused_with_exit_code_2(tmp_path, capsys):
    """The ssl_probe export's encoder copy (or any encoder folder) with a pytorch_model.bin that names code."""
    import torch

    from serkit.bin import one_line_errors
    from serkit.errors import Refused
    from serkit.model import build_tiny_w2v2, load_encoder

    encoder = build_tiny_w2v2(tmp_path / "encoder")
    state = {name: tensor for name, tensor in load_encoder(str(encoder)).state_dict().items()}
    for path in encoder.glob("*.safetensors"):
        path.unlink()
    marker = tmp_path / "pwned"
    torch.save({**state, "exploit": Exploit(marker)}, encoder / "pytorch_model.bin")

    @one_line_errors("serkit-infer", exit_code=2)
    def main() -> int:
        load_encoder(str(encoder))
        return 0

    assert main() == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert not marker.exists()
    assert f"serkit-infer: error: encoder {encoder}: its weights file was refused: it holds a pickled reference to " \
           "the Python object" in error
    assert "weights_only" not in error and "Traceback" not in error
    with pytest.raises(Refused):
        load_encoder(str(encoder))


def test_training_refuses_a_fold_whose_validation_set_lacks_a_class(tmp_path, capsys):
    """Before issue 16 such a fold trained and scored with no word about the missing class."""
    from tiny_corpus import noisy_tones, write_tiny_corpus

    from serkit.model import build_tiny_w2v2

    paths = write_tiny_corpus(tmp_path / "corpus", 8, seconds=lambda i: 0.5, waveform=noisy_tones(200, 150),
                              splits={"train": range(0, 4), "valid": range(4, 6), "test": range(6, 8)})
    out = tmp_path / "exp"
    args = [str(CONF), "--data_dir", str(paths["data"]), "--fold_dir", str(paths["fold"]), "--lang_dir",
            str(paths["lang"]), "--output_folder", str(out), "--encoder_source", str(build_tiny_w2v2(tmp_path / "enc")),
            "--number_of_epochs", "1", "--num_workers", "0", "--device", "cpu", "--noprogressbar"]
    assert train_cli.main(args) == 1
    assert "'valid' has no utterance of sad, neu (ang 1, hap 1, sad 0, neu 0)" in capsys.readouterr().err
    assert not (out / "save").exists() and not (out / "train.done").exists()
