"""Serving the targets (serkit.targets' serving contract): export and inference name no target, the gender
prior is given or predicted, and an export folder written the way docs/formats.md documents it loads."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import soundfile
import torch
import torch.nn.functional as F
from speechbrain.utils.checkpoints import Checkpointer
from test_export_infer import SR, make_model, model_config, probs_array, signal, write_wav
from tiny_corpus import CLASSES, TOKENS

from serkit.bin import infer as infer_cli
from serkit.serving.export import export_model
from serkit.serving.inference import EmotionRecognizer, InferenceError
from serkit.model import SERModel, W2V2Network, build_tiny_w2v2
from serkit.model.build import model_from_config

ROOT = Path(__file__).resolve().parents[1]
GENERIC = ("serkit/serving/export.py", "serkit/serving/inference.py", "serkit/bin/infer.py")
TARGET_WORDS = ("tokens", "ctc", "phonem", "gender")


def code_words(source: str) -> list[str]:
    """The string constants (docstrings left out) and names of a module's code, lower-cased."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    words = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.append(node.value)
        elif isinstance(node, ast.Name):
            words.append(node.id)
        elif isinstance(node, ast.Attribute):
            words.append(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            words.append(node.name)
        elif isinstance(node, ast.arg):
            words.append(node.arg)
        elif isinstance(node, ast.alias):
            words.append(node.asname or node.name)
    return [word.lower() for word in words]


@pytest.mark.parametrize("module", GENERIC)
def test_export_and_inference_name_no_target(module):
    words = code_words((ROOT / module).read_text(encoding="utf-8"))
    named = sorted({word for word in words for target in TARGET_WORDS if target in word})
    assert not named, f"{module} names a target in its code: {named}"


def test_the_check_sees_targets_in_code_not_in_docstrings():
    source = ('"""Module: tokens."""\ndef f(ctc_out):\n    """Decodes phonemes."""\n'
              '    return ctc_out.gender_logits, config["tokens"]  # a comment on phonemes\n')
    words = code_words(source)
    assert {"ctc_out", "gender_logits", "tokens"} <= set(words)
    assert not [word for word in words if "phonem" in word or "module" in word]


# ----------------------------------------------------------------------------- the gender prior


def gender_model(encoder: Path, head: bool) -> SERModel:
    """A 'trained' W2V2 model with the gender prior (strong, so it changes the emotion) and maybe the head."""
    torch.manual_seed(7)
    network = W2V2Network.from_pretrained(str(encoder), n_emotions=len(CLASSES))
    model = SERModel(network, n_classes=len(CLASSES), prior_size=2, utterance_heads={"gender": 2} if head else None)
    with torch.no_grad():
        network.emotion_head.weight.normal_(0.0, 1.0)
        model.prior.weight.copy_(torch.tensor([[4.0, -4.0], [-4.0, 4.0], [0.0, 0.0], [1.0, -1.0]]))
        if head:
            model.utterance_heads["gender"].weight.normal_(0.0, 3.0)
    return model.eval()


def gender_config(model: SERModel) -> dict:
    """model_config.json of a gender model without a CTC head, as stage 3 writes it."""
    config = {**model_config(model), "n_tokens": 0, "tokens": [], "ctc_targets": None, "prior_size": 2,
              "options": {"mtl_lambda": 0.0}}
    if len(model.utterance_heads):
        config["utterance_heads"] = {"gender": 2}
    return config


def export_of(model: SERModel, root: Path) -> Path:
    """Stage 3's fold directory for ``model`` (one checkpoint), exported by stage 5."""
    fold = root / "fold01"
    fold.mkdir(parents=True)
    config = gender_config(model)
    (fold / "model_config.json").write_text(json.dumps(config), encoding="utf-8")
    holder = model_from_config(config)
    holder.load_state_dict(model.state_dict())
    Checkpointer(fold / "save", recoverables={"model": holder}).save_checkpoint(meta={"UA": 0.5, "epoch": 1})
    return export_model(fold, root / "export")


@pytest.fixture(scope="module")
def gender(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gender")
    encoder = build_tiny_w2v2(root / "tiny_w2v2")
    models = {"head": gender_model(encoder, head=True), "prior_only": gender_model(encoder, head=False)}
    return {"models": models, "exports": {name: export_of(model, root / name) for name, model in models.items()}}


def expected(model: SERModel, wav, gender: str | None) -> tuple[list[float], str]:
    """The in-memory model's posteriors with ``gender`` as the prior (None: its head's prediction), and the gender."""
    waveform = torch.from_numpy(wav).unsqueeze(0)
    with torch.no_grad():
        if gender is None:
            first = model(waveform, torch.ones(1), prior=torch.zeros(1, 2))
            gender = "fm"[int(first.utterance_logits["gender"].argmax())]
        out = model(waveform, torch.ones(1), prior=F.one_hot(torch.tensor(["fm".index(gender)]), 2).float())
    return torch.softmax(out.emo_logits[0], dim=-1).tolist(), gender


@pytest.mark.parametrize("given", ["f", "m"])
def test_a_given_gender_is_the_prior(gender, given):
    wav = signal(SR, 1.0, seed=3)
    prediction = EmotionRecognizer.from_export(gender["exports"]["head"], given={"gender": given}).predict_waveform(
        wav, SR)
    probs, _ = expected(gender["models"]["head"], wav, given)
    assert probs_array(prediction) == pytest.approx(probs, abs=1e-6)
    assert prediction.outputs["gender"] == given and prediction.emotion_phonemes is None


def test_the_prior_changes_the_emotion(gender):
    wav = signal(SR, 1.0, seed=3)
    assert expected(gender["models"]["head"], wav, "f")[0] != pytest.approx(
        expected(gender["models"]["head"], wav, "m")[0], abs=1e-3)


def test_without_a_given_gender_the_head_predicts_it(gender):
    recognizer = EmotionRecognizer.from_export(gender["exports"]["head"])
    for seed in range(4):
        wav = signal(SR, 0.9, seed=seed)
        probs, gender_of_wav = expected(gender["models"]["head"], wav, None)
        prediction = recognizer.predict_waveform(wav, SR)
        assert probs_array(prediction) == pytest.approx(probs, abs=1e-6)
        assert prediction.outputs["gender"] == gender_of_wav
        [batched] = recognizer.predict_batch([torch.from_numpy(wav)])
        assert batched.outputs == prediction.outputs and batched.probs == pytest.approx(prediction.probs, abs=1e-6)


def test_infer_cli_says_where_the_gender_came_from(gender, tmp_path, capsys):
    wav = write_wav(tmp_path / "a.wav", 0.8, seed=2)
    export = str(gender["exports"]["head"])
    assert infer_cli.main([export, str(wav), "--gender", "m"]) == 0
    assert capsys.readouterr().out.rstrip("\n").endswith("  gender: m (given)")
    assert infer_cli.main([export, str(wav)]) == 0
    _, gender_of_wav = expected(gender["models"]["head"], soundfile.read(wav, dtype="float32")[0], None)
    line = capsys.readouterr().out.rstrip("\n")
    assert line.endswith(f"  gender: {gender_of_wav} (predicted)")
    assert infer_cli.main([export, str(wav), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["gender"] == gender_of_wav and record["gender_source"] == "predicted"
    assert record["emotion_phonemes"] is None


def test_a_prior_nobody_gives_is_a_clear_error(gender, tmp_path, capsys):
    with pytest.raises(InferenceError, match="--gender f\\|m"):
        EmotionRecognizer.from_export(gender["exports"]["prior_only"])
    wav = write_wav(tmp_path / "a.wav", 0.8, seed=2)
    assert infer_cli.main([str(gender["exports"]["prior_only"]), str(wav)]) == 2
    assert "--gender" in capsys.readouterr().err
    recognizer = EmotionRecognizer.from_export(gender["exports"]["prior_only"], given={"gender": "f"})
    prediction = recognizer.predict_waveform(signal(SR, 0.8, seed=2), SR)
    assert probs_array(prediction) == pytest.approx(
        expected(gender["models"]["prior_only"], signal(SR, 0.8, seed=2), "f")[0], abs=1e-6)


def test_a_value_the_target_does_not_take_is_refused(gender):
    with pytest.raises(InferenceError, match="give one of f, m"):
        EmotionRecognizer.from_export(gender["exports"]["head"], given={"gender": "x"})


# ----------------------------------------------------------------------------- exports written before


def test_an_export_folder_as_documented_loads_and_scores(tmp_path):
    """model.pt, config.json (model_config.json plus provenance), classes.txt, tokens.txt, written by hand."""
    model = make_model(build_tiny_w2v2(tmp_path / "tiny_w2v2"), seed=5)
    export = tmp_path / "export"
    export.mkdir()
    torch.save(model.state_dict(), export / "model.pt")
    config = {**model_config(model), "source_checkpoint": "exp/x/save/CKPT+1", "valid_UA": 0.5,
              "git_commit": None, "serkit_version": "0.1"}
    (export / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (export / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES), encoding="utf-8")
    (export / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(TOKENS)), encoding="utf-8")
    wav = signal(SR, 1.0, seed=8)
    with torch.no_grad():
        out = model(torch.from_numpy(wav).unsqueeze(0), torch.ones(1))
    prediction = EmotionRecognizer.from_export(export).predict_waveform(wav, SR)
    assert probs_array(prediction) == pytest.approx(torch.softmax(out.emo_logits[0], -1).tolist(), abs=1e-6)
    ids = [i for i in torch.unique_consecutive(out.phn_log_probs[0].argmax(-1)).tolist() if i != 0]
    assert prediction.emotion_phonemes == prediction.outputs["ctc"] == [TOKENS[i] for i in ids]


def test_a_recording_in_windows_predicts_each_window_and_the_mean_gender(gender):
    """Each window takes its own predicted gender; the recording's is its duration-weighted mean posterior's."""
    model, wav = gender["models"]["head"], signal(SR, 1.3, seed=9)
    recognizer = EmotionRecognizer.from_export(gender["exports"]["head"], window_s=0.5)
    prediction = recognizer.predict_waveform(wav, SR)
    assert len(prediction.windows) == 3
    mean = torch.zeros(2, dtype=torch.float64)
    for window in prediction.windows:
        samples = wav[round(window.start * SR):round(window.end * SR)]
        assert [window.probs[c] for c in CLASSES] == pytest.approx(expected(model, samples, None)[0], abs=1e-6)
        with torch.no_grad():
            logits = model(torch.from_numpy(samples).unsqueeze(0), torch.ones(1), prior=torch.zeros(1, 2))
        mean += torch.softmax(logits.utterance_logits["gender"][0], -1).double() * len(samples)
    assert prediction.outputs["gender"] == "fm"[int(mean.argmax())]
