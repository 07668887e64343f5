"""``python -m serkit.bin.train`` as one torchrun process of tests/test_ddp.py, with two test probes.

torchrun starts this file once per process. It records, into ``$DDP_TEST_RECORD/rank<R>.json``,
the utterance ids of every training batch the process trained (by epoch) and every file it wrote
as text through :mod:`serkit.atomic` (history, predictions, model config, train.done ...).
With ``DDP_TEST_STOP_AT_EPOCH=N`` every process stops with an exception when epoch N's training
starts, as a killed job would (after epoch N-1's checkpoint). Everything else is the real command.
"""
from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import speechbrain as sb

from serkit import atomic
from serkit.training import distributed
from serkit.bin import train
from serkit.training.train import SERBrain


class Stopped(Exception):
    """Stands in for a job killed at the start of an epoch."""


def main() -> int:
    record_dir = Path(os.environ["DDP_TEST_RECORD"])
    stop_at = int(os.environ.get("DDP_TEST_STOP_AT_EPOCH", "0"))
    batches: dict[int, list[list[str]]] = defaultdict(list)
    written: list[str] = []
    world_sizes: set[int] = set()
    fit_batch, on_stage_start, atomic_write = SERBrain.fit_batch, SERBrain.on_stage_start, atomic.atomic_write

    def recording_fit_batch(self, batch):
        batches[self.hparams.epoch_counter.current].append(list(batch.id))
        world_sizes.add(distributed.world_size())
        return fit_batch(self, batch)

    def stopping_on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN and epoch == stop_at:
            raise Stopped(f"stopped at the start of epoch {epoch}")
        on_stage_start(self, stage, epoch)

    def recording_atomic_write(path, write):
        written.append(str(path))
        atomic_write(path, write)

    SERBrain.fit_batch = recording_fit_batch
    SERBrain.on_stage_start = stopping_on_stage_start
    atomic.atomic_write = recording_atomic_write
    rank = os.environ["RANK"]
    try:
        return train.main(sys.argv[1:])
    finally:
        record = {"batches": batches, "written": written, "world_sizes": sorted(world_sizes)}
        (record_dir / f"rank{rank}.json").write_text(json.dumps(record), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
