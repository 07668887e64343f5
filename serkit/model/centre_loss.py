"""The centre loss of Wen et al. (ECCV 2016): pull each embedding towards a centre of its class.

``L_c = 1/2 mean_i ||x_i - c_{y_i}||^2`` moves the embeddings ``x_i``. The centres do not learn from
that loss (nor from its weight): Wen et al. move them with their own rate ``alpha``,

    delta_c_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j),    c_j <- c_j - alpha * delta_c_j,

``n_j`` being the number of class-``j`` embeddings in the batch (a class absent from it stays put).
Here that update is a gradient step: :func:`centre_loss` also returns ``step``, a term whose value is 0
and whose gradient with respect to the centres is exactly ``delta_c``, so an SGD optimizer with
learning rate ``alpha`` (no momentum, no weight decay) over the :class:`Centres` parameter makes Wen's
update, while the centres are checkpointed, resumed and exported like any other parameter. Add
``weight * loss + step`` to the objective: the weight scales the pull on the embeddings only.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from serkit.model.common import ModelInputError


class Centres(nn.Module):
    """One learned centre per class, ``centres`` [n_classes, dim], starting at the origin."""

    def __init__(self, n_classes: int, dim: int):
        super().__init__()
        self.centres = nn.Parameter(torch.zeros(int(n_classes), int(dim)))

    def forward(self, features: Tensor) -> Tensor:
        """The centres as each of the ``features`` [B, dim] rows sees them, [B, n_classes, dim]: a
        per-utterance view (no copy), so the model's per-utterance outputs can carry them to the loss."""
        return self.centres.unsqueeze(0).expand(features.shape[0], -1, -1)


def centre_loss(features: Tensor, centres: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(loss, step)`` of embeddings ``features`` [B, D] with class ``labels`` [B] and the ``centres``
    [B, K, D] of :meth:`Centres.forward`; see the module docstring for what each moves."""
    if features.dim() != 2 or centres.dim() != 3 or centres.shape[0] != features.shape[0] \
            or centres.shape[2] != features.shape[1]:
        raise ModelInputError(f"centre loss: features [B, D] and centres [B, K, D] expected, got "
                              f"{tuple(features.shape)} and {tuple(centres.shape)}")
    labels = labels.long()
    rows = torch.arange(features.shape[0], device=features.device)
    own = centres[rows, labels].float()  # c_{y_i}, [B, D]
    features = features.float()
    loss = 0.5 * (features - own.detach()).square().sum(dim=-1).mean()
    class_counts = torch.bincount(labels, minlength=centres.shape[1])[labels]  # n_{y_i}
    pull = 0.5 * ((own - features.detach()).square().sum(dim=-1) / (1 + class_counts)).sum()
    return loss, pull - pull.detach()
