"""serkit.training.checkpoints: a broken newest checkpoint falls back to the newest intact one, a full disk is a
clear error that publishes nothing, nothing from a checkpoint runs code, random states round-trip."""
from __future__ import annotations

import logging
import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from speechbrain.utils.epoch_loop import EpochCounter

from serkit.training import expdir
from serkit.training.checkpoints import STAGING_PREFIX, CheckpointError, RandomStates, SafeCheckpointer

ROOT = Path(__file__).resolve().parents[1]


def network(value: float) -> torch.nn.Linear:
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(value)
        layer.bias.fill_(value)
    return layer


def checkpointer_for(save_dir: Path, value: float = 0.0):
    """A checkpointer over a model, its Adam optimizer and a random-state recoverable, as training has."""
    model = network(value)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    checkpointer = SafeCheckpointer(save_dir, recoverables={"model": model, "optimizer": optimizer})
    RandomStates().register(checkpointer)
    return checkpointer, model, optimizer


def save_two(save_dir: Path) -> tuple[Path, Path]:
    """Two checkpoints: weights 1.0 (older) and 2.0 (newest), each after an optimizer step."""
    checkpointer, model, optimizer = checkpointer_for(save_dir)
    paths = []
    for value in (1.0, 2.0):
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()  # gives the optimizer a state to save
        with torch.no_grad():
            model.weight.fill_(value)
            model.bias.fill_(value)
        paths.append(checkpointer.save_checkpoint(meta={"value": value}).path)
    return paths[0], paths[1]


def record_size(ckpt_dir: Path, name: str) -> None:
    """Make CKPT.yaml record ``name``'s present size (as if the file had been saved like this)."""
    meta = yaml.safe_load((ckpt_dir / "CKPT.yaml").read_text())
    meta["file_sizes"][name] = (ckpt_dir / name).stat().st_size
    (ckpt_dir / "CKPT.yaml").write_text(yaml.safe_dump(meta))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated model.ckpt": lambda d: truncate(d / "model.ckpt"),
    "empty model.ckpt": lambda d: (d / "model.ckpt").write_bytes(b""),
    "missing model.ckpt": lambda d: (d / "model.ckpt").unlink(),
    "empty CKPT.yaml": lambda d: (d / "CKPT.yaml").write_text(""),
    "garbled CKPT.yaml": lambda d: (d / "CKPT.yaml").write_text("unixtime: [1, 2\n"),
    "truncated optimizer.ckpt": lambda d: truncate(d / "optimizer.ckpt"),
    "missing optimizer.ckpt": lambda d: (d / "optimizer.ckpt").unlink(),
    "truncated rng.ckpt": lambda d: truncate(d / "rng.ckpt"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_broken_newest_checkpoint_resumes_from_the_previous_one(damage, tmp_path, caplog):
    older, newest = save_two(tmp_path / "save")
    DAMAGE[damage](newest)
    checkpointer, model, _ = checkpointer_for(tmp_path / "save", value=0.0)
    with caplog.at_level(logging.WARNING, logger="serkit.training.checkpoints"):
        loaded = checkpointer.recover_if_possible()
    assert loaded.path == older
    assert torch.all(model.weight == 1.0)
    assert any(newest.name in record.getMessage() and "broken" in record.getMessage() for record in caplog.records)


def test_no_loadable_checkpoint_is_a_clear_error(tmp_path):
    older, newest = save_two(tmp_path / "save")
    truncate(older / "model.ckpt")
    (newest / "optimizer.ckpt").unlink()
    with pytest.raises(CheckpointError, match=f"no checkpoint can be loaded.*{re.escape(newest.name)}: optimizer.ckpt is missing.*{re.escape(older.name)}: model.ckpt is \\d+ bytes, CKPT.yaml recorded \\d+"):
        checkpointer_for(tmp_path / "save")[0].recover_if_possible()


def test_a_save_interrupted_midway_is_never_published(tmp_path):
    """Anything that stops a save before the rename (here an exception in the last file, as a kill
    would) leaves only a staging directory, which no reader lists and the next resume removes."""
    older, newest = save_two(tmp_path / "save")
    checkpointer, model, _ = checkpointer_for(tmp_path / "save", value=3.0)

    def killed(obj, path):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt("killed while saving")

    checkpointer.add_recoverable("extra", object(), custom_save_hook=killed, custom_load_hook=lambda *a: None)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save_checkpoint(meta={"value": 3.0})
    assert [p.name.startswith(STAGING_PREFIX) for p in (tmp_path / "save").iterdir()].count(True) == 1
    fresh, model, _ = checkpointer_for(tmp_path / "save")
    assert fresh.recover_if_possible().path == newest and torch.all(model.weight == 2.0)
    assert sorted(p.name for p in (tmp_path / "save").iterdir()) == sorted([older.name, newest.name])


def test_a_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path):
    """A real ENOSPC from the kernel (/dev/full) while one file of the checkpoint is written."""
    older, newest = save_two(tmp_path / "save")
    checkpointer, _, _ = checkpointer_for(tmp_path / "save")

    def to_full_disk(obj, path):
        with open("/dev/full", "wb") as handle:  # what the write would hit on a full filesystem
            handle.write(b"x" * 65536)
            handle.flush()

    checkpointer.add_recoverable("big", object(), custom_save_hook=to_full_disk)
    with pytest.raises(CheckpointError, match=rf"disk is full.*No space left.*newest checkpoint is still {re.escape(newest.name)}"):
        checkpointer.save_checkpoint(meta={"value": 3.0})
    assert sorted(p.name for p in (tmp_path / "save").iterdir()) == sorted([older.name, newest.name])


FULL_TMPFS_SCRIPT = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    from serkit.training.checkpoints import CheckpointError, SafeCheckpointer
    save = {save!r}
    small = torch.nn.Linear(4, 4)
    checkpointer = SafeCheckpointer(save, recoverables={{"model": small}})
    first = checkpointer.save_checkpoint(meta={{"n": 1}}).path.name
    checkpointer.recoverables["model"] = torch.nn.Linear(1000, 1000)  # 4 MB: more than the disk holds
    try:
        checkpointer.save_checkpoint(meta={{"n": 2}})
    except CheckpointError as error:
        print("ERROR", error)
    fresh = SafeCheckpointer(save, recoverables={{"model": torch.nn.Linear(4, 4)}})
    print("LOADED", fresh.recover_if_possible().path.name == first)
""")


def test_a_full_filesystem_during_torch_save_is_a_clear_error(tmp_path):
    """A real 1 MB tmpfs filling up inside torch.save, in a private mount namespace (root only)."""
    if os.geteuid() != 0 or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs root and unshare to mount a small tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    script = FULL_TMPFS_SCRIPT.format(root=str(ROOT), save=str(mount / "save"))
    shell = f"mount -t tmpfs -o size=1m tmpfs {mount} && {sys.executable} -c \"$SCRIPT\""
    result = subprocess.run(["unshare", "-m", "sh", "-c", shell], env={**os.environ, "SCRIPT": script},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ERROR" in result.stdout and "disk is full" in result.stdout and "MB free" in result.stdout, result.stdout
    assert "LOADED True" in result.stdout


class Exploit:
    """Unpickling this runs code (writes a marker file): what a tampered checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_loading_never_runs_code_even_when_the_environment_allows_pickles(tmp_path, monkeypatch, caplog):
    older, newest = save_two(tmp_path / "save")
    marker = tmp_path / "pwned"
    torch.save({"weight": Exploit(marker)}, newest / "model.ckpt")
    record_size(newest, "model.ckpt")  # a forger who also edits CKPT.yaml: the load itself must refuse
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    checkpointer, model, _ = checkpointer_for(tmp_path / "save")
    with caplog.at_level(logging.WARNING, logger="serkit.training.checkpoints"):
        assert checkpointer.recover_if_possible().path == older
    assert not marker.exists() and torch.all(model.weight == 1.0)
    warnings = " ".join(record.getMessage() for record in caplog.records)
    assert "holds a pickled reference to the Python object" in warnings and "so it was refused" in warnings
    assert "weights_only" not in warnings  # never torch's advice to turn the protection off


def test_random_states_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(7)
    states = RandomStates({"loader": generator})
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal()  # leave a cached gaussian in numpy's state
    states.save(tmp_path / "rng.ckpt")

    def draws():
        return (torch.rand(3).tolist(), np.random.standard_normal(3).tolist(), [random.random() for _ in range(3)],
                torch.rand(2, generator=generator).tolist(), random.gauss(0, 1))

    first = draws()
    torch.manual_seed(9), np.random.seed(9), random.seed(9), generator.manual_seed(9)
    states.load(tmp_path / "rng.ckpt")
    assert draws() == first


def test_keep_only_keeps_the_newest_and_leaves_speechbrains_default_list_alone(tmp_path):
    from speechbrain.utils.checkpoints import Checkpointer

    checkpointer, _, _ = checkpointer_for(tmp_path / "save")
    for value in range(3):
        checkpointer.save_and_keep_only(meta={"value": value})
    (kept,) = checkpointer.list_checkpoints()
    assert kept.meta["value"] == 2
    assert [] in Checkpointer.save_and_keep_only.__defaults__  # SpeechBrain's mutable default, not grown


def epoch_checkpoints(save_dir: Path, epochs: int):
    """End-of-epoch checkpoints of a model and its epoch counter for epochs 1..``epochs``, as training saves them."""
    model, counter = network(0.0), EpochCounter(100)
    checkpointer = SafeCheckpointer(save_dir, recoverables={"model": model, "counter": counter})
    for epoch in range(1, epochs + 1):
        counter.current = epoch
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        checkpointer.save_checkpoint(meta={"epoch": epoch, "UA": 0.1 * epoch})
    return sorted(save_dir.glob("CKPT+*"), key=lambda d: yaml.safe_load((d / "CKPT.yaml").read_text())["unixtime"])


@pytest.mark.parametrize("sizes_recorded", [True, False], ids=["sizes recorded", "older checkpoint without sizes"])
def test_a_damaged_epoch_counter_is_set_aside_not_resumed_at_the_wrong_epoch(sizes_recorded, tmp_path, caplog):
    """counter.ckpt cut from 12 to 1 (issue 16): resuming would train 'epoch 2' on epoch-12 weights."""
    *_, epoch11, epoch12 = epoch_checkpoints(tmp_path / "save", 12)
    (epoch12 / "counter.ckpt").write_text("1")
    if not sizes_recorded:
        meta = yaml.safe_load((epoch12 / "CKPT.yaml").read_text())
        del meta["file_sizes"]
        (epoch12 / "CKPT.yaml").write_text(yaml.safe_dump(meta))
    model, counter = network(0.0), EpochCounter(100)
    checkpointer = SafeCheckpointer(tmp_path / "save", recoverables={"model": model, "counter": counter})
    with caplog.at_level(logging.WARNING, logger="serkit.training.checkpoints"):
        assert checkpointer.recover_if_possible().path == epoch11
    assert counter.current == 11 and torch.all(model.weight == 11.0)
    problem = "counter.ckpt is 1 bytes, CKPT.yaml recorded 2" if sizes_recorded else \
        "counter.ckpt says epoch 1, CKPT.yaml epoch 12"
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and epoch12.name in r.getMessage()]
    assert len(warned) == 1 and problem in warned[0] and "moved aside" in warned[0]
    assert not epoch12.exists() and (tmp_path / "save" / f"broken-{epoch12.name}" / "counter.ckpt").read_text() == "1"
    # later stages (export's listing) no longer see it; a rerun resumes from epoch 11 again without a word
    assert [c.path for c in expdir.list_checkpoints(tmp_path)][-1] == epoch11
    caplog.clear()
    fresh = SafeCheckpointer(tmp_path / "save", recoverables={"model": network(0.0), "counter": EpochCounter(100)})
    with caplog.at_level(logging.WARNING, logger="serkit.training.checkpoints"):
        assert fresh.recover_if_possible().path == epoch11
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_a_checkpoint_with_garbled_meta_is_warned_about_once_not_at_every_save(tmp_path, caplog):
    """The broken folder's warning used to repeat at every later save (99 times in one train_log.txt)."""
    first, second = epoch_checkpoints(tmp_path / "save", 2)
    (first / "CKPT.yaml").write_text("unixtime: [1, 2\n")
    model, counter = network(0.0), EpochCounter(100)
    checkpointer = SafeCheckpointer(tmp_path / "save", recoverables={"model": model, "counter": counter})
    with caplog.at_level(logging.WARNING, logger="serkit.training.checkpoints"):
        assert checkpointer.recover_if_possible().path == second
        for epoch in range(3, 8):
            counter.current = epoch
            checkpointer.save_and_keep_only(meta={"epoch": epoch, "UA": 0.0}, num_to_keep=2)
    assert sum(first.name in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING) == 1
    assert (tmp_path / "save" / f"broken-{first.name}").is_dir()
    assert len(expdir.list_checkpoints(tmp_path)) == 2  # export's listing does not stop on it


def test_an_inconsistent_checkpoint_left_by_hand_does_not_stop_export(tmp_path, caplog):
    first, second = epoch_checkpoints(tmp_path / "save", 2)
    truncate(second / "model.ckpt")
    with caplog.at_level(logging.WARNING, logger="serkit.training.expdir"):
        assert [c.path for c in expdir.list_checkpoints(tmp_path)] == [first]
    assert any("model.ckpt is" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)


def test_the_progress_line_names_the_epoch_the_test_fold_is_scored_with():
    """Epochs 3 and 5 tie on validation UA: the best-checkpoint rule scores the test fold with the newer,
    and the progress line must name that epoch, not the first of the tie."""
    uas = [0.40, 0.55, 0.61, 0.58, 0.61, 0.50]
    records = [{"epoch": e, "valid_UA": ua} for e, ua in enumerate(uas, start=1)]
    metas = [{"UA": ua, "unixtime": 1000.0 + e} for e, ua in enumerate(uas, start=1)]
    scored_epoch = 1 + max(range(len(metas)), key=lambda i: expdir.best_key(metas[i]))
    assert scored_epoch == 5
    assert expdir.fold_summary(records) == f"6 epoch(s), best valid UA 61.0% (epoch {scored_epoch})"
