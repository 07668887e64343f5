"""Multi-process training of one fold (DDP under torchrun; gloo on CPU) against a one-process run.

One fold of a tiny corpus is trained for 3 epochs by one process and by two torchrun processes.
The two-process run is stopped when epoch 2 starts (after epoch 1's checkpoint, as a killed job)
and then started again through the real command line, ``python -m serkit.bin.train --nproc 2``.

Why the runs can be compared closely: the tiny wav2vec 2.0 has every dropout set to 0 (fine-tuning
never masks), so training is deterministic; the two processes train disjoint shares of the same
global batches as the single process, and each process's loss is weighted by its share, so DDP's
averaged gradient is the whole batch's gradient. What remains is float summation order (a batch
summed in two parts, then all-reduced): about 1e-7 relative per step, grown by 9 Adam steps to well
under ``RTOL``. The batch size (3) splits batches unevenly (2 + 1), so the weighting is exercised.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_corpus import CLASSES, noisy_tones, write_tiny_corpus

from serkit.training import expdir
from serkit.bin import train as train_cli
from serkit.bin.train import load_hparams
from serkit.data.dataio import DurationBucketBatchSampler
from serkit.training.distributed import torchrun_command
from serkit.model import build_tiny_w2v2
from serkit.model.tim_net import MaskedBatchNorm1d
from serkit.training.train import SERBrain, train_fold

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")
CONF = REPO / "conf" / "w2v2_mtl.yaml"
EPOCHS = 3
RTOL = 1e-5          # losses: measured differences are ~1e-7 relative
PROB_ATOL = 2e-5     # posteriors, written with 6 decimals: rounding alone differs by 1e-6
DROPOUTS = ("hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout", "final_dropout",
            "layerdrop")


# ----------------------------------------------------------------------------- the sampler's shares


def test_each_rank_yields_its_share_of_the_same_global_batches():
    durations = [0.5 + 0.37 * ((7 * i) % 11) for i in range(23)]
    single = DurationBucketBatchSampler(durations, batch_size=5, shuffle=True, seed=4)
    shards = [DurationBucketBatchSampler(durations, batch_size=5, shuffle=True, seed=4, num_replicas=3, rank=r)
              for r in range(3)]
    for epoch in (1, 2):
        for sampler in [single, *shards]:
            sampler.set_epoch(epoch)
        per_rank = [list(sampler) for sampler in shards]
        assert all(len(batches) == len(single) == len(list(single)) for batches in per_rank)
        for step, batch in enumerate(single):
            shares = [batches[step] for batches in per_rank]
            assert sorted(i for share in shares for i in share) == sorted(batch)  # disjoint, complete
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
    single.set_epoch(1)
    first = list(single)
    single.set_epoch(2)
    assert list(single) != first  # a new epoch draws new batches; set_epoch(1) replays the old ones
    single.set_epoch(1)
    assert list(single) == first


def test_a_last_batch_smaller_than_the_process_count_joins_its_neighbour():
    durations = [float(i + 1) for i in range(7)]  # batches of 3 by duration: [0,1,2] [3,4,5] [6]
    assert list(DurationBucketBatchSampler(durations, batch_size=3, shuffle=False)) == [[0, 1, 2], [3, 4, 5], [6]]
    shares = [list(DurationBucketBatchSampler(durations, batch_size=3, shuffle=False, num_replicas=2, rank=r))
              for r in range(2)]
    assert shares == [[[0, 2], [3, 5]], [[1], [4, 6]]]  # global batches [0,1,2] and [3,4,5,6]
    assert len(DurationBucketBatchSampler(durations, batch_size=3, shuffle=False, num_replicas=2)) == 2


def test_sampler_refuses_shares_that_would_be_empty():
    with pytest.raises(ValueError, match="smaller than the 4 processes"):
        DurationBucketBatchSampler([1.0] * 10, batch_size=3, num_replicas=4, rank=0)
    with pytest.raises(ValueError, match="cannot be shared by 2 processes"):
        DurationBucketBatchSampler([1.0], batch_size=4, num_replicas=2, rank=1)
    with pytest.raises(ValueError, match="rank must be in"):
        DurationBucketBatchSampler([1.0] * 4, batch_size=2, num_replicas=2, rank=2)


def test_torchrun_command_runs_the_module_on_one_node():
    command = torchrun_command(4, "serkit.bin.train", ["conf/x.yaml", "--seed", "1"])
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "4",
                           "-m", "serkit.bin.train", "conf/x.yaml", "--seed", "1"]


# ----------------------------------------------------------------------------- one fold, 1 vs 2 processes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """16 utterances; train 8 (batches of 3: 3 + 3 + 2), valid 5, test 3; a dropout-free tiny encoder."""
    root = tmp_path_factory.mktemp("ddp")
    paths = write_tiny_corpus(root, 16, seconds=lambda i: 0.5 + 0.1 * (i % 5), waveform=noisy_tones(200, 150),
                              splits={"train": range(0, 8), "valid": range(8, 13), "test": range(13, 16)})
    encoder = build_tiny_w2v2(root / "tiny_w2v2")
    config_file = encoder / "config.json"
    config = json.loads(config_file.read_text())
    config.update({name: 0.0 for name in DROPOUTS})
    config_file.write_text(json.dumps(config))
    return {**paths, "root": root, "encoder": encoder}


def train_args(corpus: dict[str, Path], out: Path) -> list[str]:
    return [str(CONF), "--data_dir", str(corpus["data"]), "--fold_dir", str(corpus["fold"]),
            "--lang_dir", str(corpus["lang"]), "--encoder_source", str(corpus["encoder"]), "--output_folder", str(out),
            "--batch_size", "3", "--number_of_epochs", str(EPOCHS), "--lr_heads", "1e-3", "--lr_encoder", "1e-4",
            "--num_workers", "0", "--ckpt_interval_minutes", "0", "--device", "cpu", "--noprogressbar",
            # fp32: the comparison is at 1e-5, below bf16's rounding (3 significant digits)
            "--precision", "fp32"]


def run(command: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]), OMP_NUM_THREADS="1",
                       **(env or {}))
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory) -> dict:
    """The one-process run (in this process) and the two-process run, stopped after epoch 1 and rerun."""
    root = tmp_path_factory.mktemp("runs")
    one, two, record = root / "one", root / "two", root / "record"
    record.mkdir()

    batches: dict[int, list[list[str]]] = {}
    original = SERBrain.fit_batch

    def recording_fit_batch(self, batch):
        batches.setdefault(self.hparams.epoch_counter.current, []).append(list(batch.id))
        return original(self, batch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SERBrain, "fit_batch", recording_fit_batch)
        assert train_cli.main(train_args(corpus, one)) == 0

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node",
                "2", str(WORKER), *train_args(corpus, two)]
    stopped = run(torchrun, {"DDP_TEST_RECORD": str(record), "DDP_TEST_STOP_AT_EPOCH": "2"})
    assert stopped.returncode != 0 and "stopped at the start of epoch 2" in stopped.stderr, stopped.stderr[-3000:]
    after_stop = {"history": expdir.read_history(two / expdir.HISTORY_FILE), "done": expdir.is_done(two),
                  "checkpoint_epochs": [c.meta["epoch"] for c in expdir.list_checkpoints(two)],
                  "log": (two / expdir.LOG_FILE).read_text()}
    resumed = run([sys.executable, "-m", "serkit.bin.train", "--nproc", "2", *train_args(corpus, two)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(2)]
    return {"one": one, "two": two, "one_batches": batches, "ranks": ranks, "after_stop": after_stop}


@pytest.mark.e2e  # the ``runs`` fixture trains the fold in subprocesses, under torchrun too
@pytest.mark.timeout(1800)  # with its module fixture's runs, on a loaded 2-core machine
def test_processes_train_disjoint_shares_of_the_one_process_batches(runs):
    rank0, rank1 = (rank["batches"]["1"] for rank in runs["ranks"])
    assert all(rank["world_sizes"] == [2] for rank in runs["ranks"])
    single = runs["one_batches"][1]
    assert len(rank0) == len(rank1) == len(single) == 3
    for step, batch in enumerate(single):
        assert not set(rank0[step]) & set(rank1[step])
        assert sorted(rank0[step] + rank1[step]) == sorted(batch)
    assert [len(share) for share in rank0] != [len(share) for share in rank1]  # uneven shares (2 + 1 ...)


@pytest.mark.e2e  # the ``runs`` fixture trains the fold in subprocesses, under torchrun too
@pytest.mark.timeout(1800)  # with its module fixture's runs, on a loaded 2-core machine
def test_two_processes_match_one_process(runs, corpus):
    one = expdir.read_history(runs["one"] / expdir.HISTORY_FILE)
    two = expdir.read_history(runs["two"] / expdir.HISTORY_FILE)
    assert [r["epoch"] for r in one] == [r["epoch"] for r in two] == list(range(1, EPOCHS + 1))
    for first, second in zip(one, two):
        assert first.keys() == second.keys()
        for key, value in first.items():
            assert second[key] == pytest.approx(value, rel=RTOL), (first["epoch"], key)
    assert one[-1]["train_loss"] < one[0]["train_loss"]  # the runs being compared do learn

    def rows(out: Path) -> list[dict]:
        with open(out / expdir.PREDICTIONS_FILE, encoding="utf-8") as handle:
            return list(csv.DictReader(handle, delimiter="\t"))
    rows_one, rows_two = rows(runs["one"]), rows(runs["two"])
    assert [r["utt"] for r in rows_two] == [r["utt"] for r in rows_one] == (corpus["fold"] / "test").read_text().split()
    for first, second in zip(rows_one, rows_two):
        assert (second["utt"], second["hyp"], second["hyp_tokens"]) == (first["utt"], first["hyp"], first["hyp_tokens"])
        for label in CLASSES:
            assert float(second[f"p_{label}"]) == pytest.approx(float(first[f"p_{label}"]), abs=PROB_ATOL)
    scores_one = json.loads((runs["one"] / expdir.DONE_FILE).read_text())
    scores_two = json.loads((runs["two"] / expdir.DONE_FILE).read_text())
    assert scores_two == pytest.approx(scores_one, rel=RTOL)
    best_one, best_two = (expdir.select_checkpoint(expdir.list_checkpoints(out), "best") for out in (runs["one"], runs["two"]))
    assert best_two.meta["epoch"] == best_one.meta["epoch"]
    for name, tensor in torch.load(best_one.path / "model.ckpt", weights_only=True).items():
        torch.testing.assert_close(torch.load(best_two.path / "model.ckpt", weights_only=True)[name], tensor,
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.e2e  # the ``runs`` fixture trains the fold in subprocesses, under torchrun too
@pytest.mark.timeout(1800)  # with its module fixture's runs, on a loaded 2-core machine
def test_only_rank_0_writes_files(runs):
    rank0, rank1 = (rank["written"] for rank in runs["ranks"])
    assert rank1 == []
    assert {Path(path).name for path in rank0} == {expdir.MODEL_CONFIG_FILE, expdir.HISTORY_FILE, expdir.PROVENANCE_FILE}
    two = runs["two"]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in runs["one"].iterdir())
    assert len(list((two / expdir.SAVE_DIR).glob("CKPT+*"))) == len(list((runs["one"] / expdir.SAVE_DIR).glob("CKPT+*")))
    log = (two / expdir.LOG_FILE).read_text()
    for epoch in range(1, EPOCHS + 1):
        assert log.count(f"epoch {epoch} |") == 1  # once: no second process logs, no epoch trained twice
    assert log.count("test: 3 utterances, loss") == 1 and "[rank 1]" not in log
    assert "training with 2 processes (DDP, gloo backend)" in log


@pytest.mark.e2e  # the ``runs`` fixture trains the fold in subprocesses, under torchrun too
@pytest.mark.timeout(1800)  # with its module fixture's runs, on a loaded 2-core machine
def test_stopped_run_resumes_at_the_next_epoch(runs):
    before = runs["after_stop"]
    assert [r["epoch"] for r in before["history"]] == [1] and before["checkpoint_epochs"] == [1]
    assert not before["done"]
    history = expdir.read_history(runs["two"] / expdir.HISTORY_FILE)
    assert history[0] == before["history"][0]
    log = (runs["two"] / expdir.LOG_FILE).read_text()
    rerun = log[len(before["log"]):]
    assert "epoch 1 |" not in rerun and "epoch 2 |" in rerun  # continued at epoch 2, not from scratch
    assert expdir.is_done(runs["two"])


def test_batch_norm_keeps_its_own_forward_under_ddp(corpus, tmp_path, monkeypatch):
    """SpeechBrain's DDP wrapping turns every batch norm into SyncBatchNorm, which cannot take TIM-Net's
    padding mask (and runs on GPUs only); serkit's wrapping keeps the family's batch norm. Checked with
    one process in a gloo group of its own, so it runs in this test process."""
    from test_families import TINY
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    wrapped = []
    original = SERBrain._wrap_distributed

    def recording_wrap(self):
        original(self)
        wrapped.append(self.modules.model)

    monkeypatch.setattr(SERBrain, "_wrap_distributed", recording_wrap)
    out = tmp_path / "fold"
    hparams = load_hparams(str(REPO / "conf" / "tim_net.yaml"),
                           {**TINY["tim_net"], "number_of_epochs": 1, "data_dir": str(corpus["data"]),
                            "fold_dir": str(corpus["fold"]), "output_folder": str(out),
                            "feature_cache": str(tmp_path / "dump")})
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        train_fold(hparams, {"device": "cpu", "noprogressbar": True, "distributed_backend": "gloo"})
    finally:
        torch.distributed.destroy_process_group()
    [model] = wrapped
    assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
    kinds = {type(module) for module in model.modules()}
    assert MaskedBatchNorm1d in kinds and torch.nn.SyncBatchNorm not in kinds
    assert expdir.is_done(out)


# ----------------------------------------------------------------------------- the recipe's --ngpu


@pytest.mark.e2e  # run.sh through serkit-run to a training job
def test_recipe_ngpu_asks_the_launcher_for_gpus_and_training_for_processes(tmp_path):
    """--ngpu 2 reaches serkit-run as --gpu 2 (the job gets two of the visible GPUs) and training as
    --nproc 2, which checks its input before starting torchrun (a missing folder is reported once)."""
    from test_recipes import copy_recipes, run_recipe
    recipe = copy_recipes(tmp_path) / "mini_iemocap"
    result = run_recipe(recipe, "--ngpu", "two")
    assert result.returncode == 2 and "--ngpu takes a number of GPUs per fold, got 'two'" in result.stderr
    result = run_recipe(recipe, "--stage", "3", "--stop_stage", "3", "--folds", "1", "--ngpu", "2",
                        "--data", "data/missing", env={"CUDA_VISIBLE_DEVICES": "7,8,9"})
    assert result.returncode != 0
    [log] = recipe.glob("exp/*/loso/log/train.fold01.log")
    text = log.read_text()
    assert "gpu=2" in text and "CUDA_VISIBLE_DEVICES=7,8" in text
    assert "--nproc 2" in text and text.count("--data_dir data/missing: directory not found") == 1
    assert "torch.distributed.run" not in text
