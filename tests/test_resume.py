"""Exact resume: a real training process killed with SIGKILL at a random step, then run again, ends
with the same test predictions as an uninterrupted run; a non-finite loss names its utterances.

The family is a tiny TIM-Net with dropout (so the restored random states matter), trained through
``python -m serkit.bin.train`` with a checkpoint after every optimizer step.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml
from tiny_corpus import noisy_tones, write_tiny_corpus

from serkit.data.datadir import DataDirError
from serkit.bin.train import load_hparams
from serkit.training.train import TrainError, train_fold

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf" / "tim_net.yaml"
TINY_TIM_NET = {"number_of_epochs": 3, "batch_size": 2, "seed": 5,
                "feature": {"kind": "mfcc", "params": {"n_mfcc": 13, "n_mels": 40, "win_ms": 25.0, "hop_ms": 10.0}},
                "network": {"n_filters": 8, "kernel_size": 2, "n_blocks": 3, "dropout": 0.3},
                "ckpt_interval_minutes": 0, "max_duration": 0.6}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("resume")
    paths = write_tiny_corpus(root, 16, seconds=lambda i: 0.5 + 0.1 * (i % 4), waveform=noisy_tones(220, 180),
                              splits={"train": range(0, 8), "valid": range(8, 12), "test": range(12, 16)})
    overrides = root / "tiny.yaml"
    overrides.write_text(yaml.safe_dump({**TINY_TIM_NET, "feature_cache": str(root / "dump")}))
    return {**paths, "root": root, "overrides": overrides}


def train_command(corpus: dict, out: Path) -> list[str]:
    return [sys.executable, "-m", "serkit.bin.train", str(CONF), "--overrides", str(corpus["overrides"]),
            "--data_dir", str(corpus["data"]), "--fold_dir", str(corpus["fold"]), "--output_folder", str(out),
            "--device", "cpu", "--noprogressbar", "--ckpt_interval_steps", "1"]


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def kill_after_checkpoints(command: list[str], save_dir: Path, step: int) -> int:
    """Start ``command``; SIGKILL it once a published checkpoint is at optimizer step ``step`` or later.

    Polling the steps (``brain.ckpt``) rather than counting checkpoint folders: intra-epoch
    checkpoints replace each other within milliseconds, so a count can miss some and let the run end
    first, while the highest step seen only grows.
    """
    process = subprocess.Popen(command, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while process.poll() is None and highest_step(save_dir) < step:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()


def highest_step(save_dir: Path) -> int:
    steps = [0]
    for brain_state in save_dir.glob("CKPT+*/brain.ckpt"):
        try:
            steps.append(int(yaml.safe_load(brain_state.read_text())["optimizer_step"]))
        except (OSError, TypeError, KeyError, ValueError, yaml.YAMLError):
            continue  # being replaced right now
    return max(steps)


@pytest.mark.e2e  # three training processes, one killed with SIGKILL
@pytest.mark.timeout(1800)  # with its module fixture's runs, on a loaded 2-core machine
def test_sigkill_at_a_random_step_then_resume_gives_identical_predictions(corpus, tmp_path):
    reference = tmp_path / "uninterrupted"
    subprocess.run(train_command(corpus, reference), env=environment(), check=True, capture_output=True)
    # 3 epochs x 4 steps: a checkpoint after each step (intra-epoch ones replace each other), 15 in all
    step = random.Random().randint(2, 10)  # of the run's 12 optimizer steps
    killed = tmp_path / "killed"
    returncode = kill_after_checkpoints(train_command(corpus, killed), killed / "save", step)
    assert returncode == -signal.SIGKILL, f"the run ended on its own (exit {returncode}) before step {step}"
    assert not (killed / "train.done").exists()
    resumed = subprocess.run(train_command(corpus, killed), env=environment(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (killed / "train_log.txt").read_text()
    assert "loading checkpoint" in log, f"killed after {n} checkpoints but did not resume"
    expected = (reference / "test_predictions.tsv").read_text()
    assert (killed / "test_predictions.tsv").read_text() == expected, f"killed after {n} checkpoints"
    assert (killed / "train.done").read_text() == (reference / "train.done").read_text()
    history = [yaml.safe_load(line) for line in (killed / "history.jsonl").read_text().splitlines()]
    reference_history = [yaml.safe_load(line) for line in (reference / "history.jsonl").read_text().splitlines()]
    assert history == reference_history


def data_dir_with(corpus: dict, tmp_path: Path, utt: str, wav: Path) -> Path:
    """A copy of the corpus's data directory whose ``utt`` points at ``wav``."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("utt2emo", "utt2dur", "utt2phn", "classes"):
        (data / name).write_text((corpus["data"] / name).read_text())
    lines = (corpus["data"] / "wav.scp").read_text().splitlines()
    (data / "wav.scp").write_text("".join(f"{utt} {wav}\n" if line.startswith(f"{utt} ") else line + "\n"
                                          for line in lines))
    return data


def tiny_hparams(corpus: dict, tmp_path: Path, data: Path, **extra) -> dict:
    overrides = {**TINY_TIM_NET, "data_dir": str(data), "fold_dir": str(corpus["fold"]),
                 "output_folder": str(tmp_path / "exp"), "feature_cache": None, "number_of_epochs": 1, **extra}
    return load_hparams(str(CONF), overrides)


def test_a_nan_audio_file_stops_training_naming_the_file(corpus, tmp_path):
    samples = 0.1 * np.ones(8000, dtype=np.float32)
    samples[4000] = np.nan
    poisoned = tmp_path / "spk0-u02.wav"
    soundfile.write(poisoned, samples, 16000, subtype="FLOAT")
    data = data_dir_with(corpus, tmp_path, "spk0-u02", poisoned)
    with pytest.raises(DataDirError, match=r"1 recording\(s\) of the fold cannot be trained on, as stage 0 would have "
                                           r"skipped them: spk0-u02 \(train\): .*spk0-u02\.wav: 1 NaN or infinite "
                                           r"sample value\(s\), the first at sample 4000"):
        train_fold(tiny_hparams(corpus, tmp_path, data), {"device": "cpu", "noprogressbar": True})
    assert not (tmp_path / "exp" / "save").exists()


def test_an_all_zero_recording_is_refused_before_training_and_counted(corpus, tmp_path):
    """Stage 0 skips all-zero recordings; one put into the data directory later trained silently."""
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(8000, dtype=np.float32), 16000)
    data = data_dir_with(corpus, tmp_path, "spk3-u13", silent)
    with pytest.raises(DataDirError, match=r"wav.scp: 1 recording\(s\) of the fold cannot be trained on, as stage 0 "
                                           r"would have skipped them: spk3-u13 \(test\): .*silent\.wav: all samples "
                                           r"are zero"):
        train_fold(tiny_hparams(corpus, tmp_path, data), {"device": "cpu", "noprogressbar": True})
    assert not (tmp_path / "exp" / "save").exists()


@pytest.mark.parametrize("sync_every", ["auto", 3])
def test_a_non_finite_loss_names_the_utterances_of_its_batch(corpus, tmp_path, sync_every):
    """A learning rate of 1e12 blows the weights up: the error names the batch's utterances, also when
    the losses are read back from the device only every 3 steps (as on a GPU)."""
    hparams = tiny_hparams(corpus, tmp_path, corpus["data"], lr=1e12, max_grad_norm=1e30, sync_every=sync_every)
    with pytest.raises(TrainError, match=r"training loss is (nan|inf) \(epoch 1, batch of utterance\(s\) "
                                         r"spk\d-u\d\d, spk\d-u\d\d\).*training diverged"):
        train_fold(hparams, {"device": "cpu", "noprogressbar": True, "nonfinite_patience": 0})


def test_non_finite_features_name_their_utterance(corpus, tmp_path):
    """A feature cache entry gone bad (NaN features for a sound file): the loss error names it."""
    import torch

    cache = tmp_path / "dump"
    train_fold(tiny_hparams(corpus, tmp_path, corpus["data"], feature_cache=str(cache)),
               {"device": "cpu", "noprogressbar": True})
    (entry,) = cache.glob("mfcc-*/spk1-u05.pt")
    stored = torch.load(entry, weights_only=True)
    stored["feats"][3, 0] = float("nan")
    torch.save(stored, entry)
    hparams = tiny_hparams(corpus, tmp_path, corpus["data"], feature_cache=str(cache),
                           output_folder=str(tmp_path / "again"))
    with pytest.raises(TrainError, match=r"utterance\(s\) spk1-u05 have NaN or infinite input values"):
        train_fold(hparams, {"device": "cpu", "noprogressbar": True})
