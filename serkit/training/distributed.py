"""Several processes training one fold: PyTorch DDP under ``torchrun``, SpeechBrain's way.

``python -m serkit.bin.train --nproc N ...`` (the recipe's ``--ngpu N``) starts itself again as
``python -m torch.distributed.run --standalone --nproc_per_node N -m serkit.bin.train ...``: N
processes, one per GPU, that SpeechBrain's Brain recognises by torchrun's ``RANK``/``LOCAL_RANK``
variables. This module holds what serkit adds around that:

- the torchrun command (``--standalone`` picks a free port on this machine, so two folds that run
  at once on one node do not collide on torchrun's default port);
- process-group start-up with a backend that fits the device (NCCL on GPUs, gloo on CPUs), each
  process on its own GPU, and the job's CPU threads divided among the processes;
- the few collectives the trainer needs (sum, gather, buffer broadcast), which are no-ops in a
  single process, so the same code path serves both.

Which process writes what, and how batches and metrics are shared, is in :mod:`serkit.training.train` and
:class:`serkit.data.dataio.DurationBucketBatchSampler`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys

import torch
import torch.distributed as dist
from speechbrain.utils.distributed import ddp_init_group
from speechbrain.utils.run_opts import RunOptions

from serkit.errors import SerkitError

logger = logging.getLogger(__name__)

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


class DistributedError(SerkitError):
    """Multi-process training cannot start as asked."""


def torchrun_command(nproc: int, module: str, args: list[str]) -> list[str]:
    """The argument list that runs ``python -m MODULE ARGS`` as ``nproc`` torchrun processes on this node."""
    if nproc < 2:
        raise DistributedError(f"torchrun is for 2 or more processes, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc_per_node", str(nproc), "-m", module, *args]


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (SpeechBrain's test for a DDP launch)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes training together (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process is the one that writes files (rank 0, or the only process)."""
    return rank() == 0


def start(run_opts: RunOptions) -> RunOptions:
    """Join the process group torchrun set up; returns the run options this process trains with.

    The backend is NCCL when the processes train on GPUs and gloo otherwise (CPU runs, tests), unless
    ``--distributed_backend`` says otherwise. Each process takes GPU ``LOCAL_RANK`` (a ``--device
    cuda:K`` would put every process on one GPU) and ``OMP_NUM_THREADS / LOCAL_WORLD_SIZE`` CPU
    threads, because torchrun hands the job's thread budget to every process unchanged.
    """
    local_rank = int(os.environ["LOCAL_RANK"])
    device = run_opts.device
    on_gpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    changes: dict = {}
    if on_gpu:
        if torch.cuda.device_count() <= local_rank:
            raise DistributedError(f"process {local_rank} of this node has no GPU: {torch.cuda.device_count()} "
                                   f"visible; ask for as many GPUs as processes (--ngpu / --gpu)")
        changes["device"] = f"cuda:{local_rank}"
    elif device is None:
        changes["device"] = "cpu"
    if "distributed_backend" not in run_opts.overridden_args:
        changes["distributed_backend"] = "nccl" if on_gpu else "gloo"
    run_opts = dataclasses.replace(run_opts, **changes,
                                   overridden_args=set(run_opts.overridden_args) | set(changes))
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if threads:
        torch.set_num_threads(max(1, threads // local_world))
    ddp_init_group(run_opts)
    return run_opts


def finish() -> None:
    """Leave the process group (PyTorch warns about a group left open at exit)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], device: str | torch.device = "cpu") -> list[float]:
    """``values`` summed element-wise over all processes (returned as is in a single process)."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_gather(obj) -> list:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if world_size() == 1:
        return [obj]
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's buffers (e.g. batch-norm running statistics).

    DDP copies buffers from rank 0 only at the start of each training forward pass; the last
    training step then updates each process's running statistics from its own share of the batch.
    Evaluating after that would use slightly different models on different processes.
    """
    if world_size() == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)
