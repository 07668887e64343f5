"""Averaging the best checkpoints (ESPnet's ``average_nbest``): ``average_nbest: N`` in a config.

At the end of training the parameters of the N checkpoints with the best validation UA are averaged
(arithmetic mean, tensor by tensor) and the test fold is scored with the averaged model; on a small
validation set the single best epoch is partly luck, and the mean of a few good epochs is a flatter,
better generalising point (ESPnet averages the 10 best of a run by default). As in ESPnet, floating
buffers are averaged too (BatchNorm's running mean and variance, the input normaliser's statistics,
which are the same in every checkpoint); integer buffers (BatchNorm's ``num_batches_tracked``) are taken
from the best checkpoint.

The averaged model is kept as one more checkpoint whose ``CKPT.yaml`` lists the epochs it averages
(``averaged_epochs``) and holds its own validation scores; export's ``best`` then means this model, the
one the test fold was scored with. It is derived, never trained from: a run that resumes removes it
first and averages again at the end.
"""
from __future__ import annotations

import shutil
from typing import Mapping, Sequence

import torch

from serkit.errors import SerkitError
from serkit.training.expdir import is_averaged


class AveragingError(SerkitError):
    """``average_nbest`` cannot be applied as configured."""


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The tensor-wise mean of ``states`` (best first); integer tensors are taken from the first.

    The mean is summed in float64 and cast back, so the order of the checkpoints does not matter.
    """
    if not states:
        raise AveragingError("no checkpoint to average")
    keys = list(states[0])
    if any(list(state) != keys for state in states[1:]):
        raise AveragingError("the checkpoints to average hold different tensors; they come from different models")
    averaged = {}
    for key in keys:
        first = states[0][key]
        if torch.is_floating_point(first):
            total = sum(state[key].to(torch.float64) for state in states)
            averaged[key] = (total / len(states)).to(first.dtype)
        else:
            averaged[key] = first.clone()
    return averaged


def remove_averaged(checkpointer) -> None:
    """Delete averaged checkpoints (call on the main process only): a resumed run must not start from one."""
    for checkpoint in checkpointer.list_checkpoints():
        if is_averaged(checkpoint.meta):
            shutil.rmtree(checkpoint.path, ignore_errors=True)
