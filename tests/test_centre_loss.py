"""The centre loss (serkit.model.centre_loss): its value, what its gradient moves, and that an SGD step
with rate alpha on the centres is Wen et al.'s update, computed here by hand."""
from __future__ import annotations

import pytest
import torch

from serkit.model.centre_loss import Centres, centre_loss
from serkit.model.common import ModelInputError


def setup(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = Centres(3, 4)
    with torch.no_grad():
        centres.centres.copy_(torch.randn(3, 4, generator=generator))
    features = torch.randn(5, 4, generator=generator, requires_grad=True)
    labels = torch.tensor([0, 2, 0, 0, 2])  # class 1 is absent from the batch
    return centres, features, labels


def test_value_is_half_the_mean_squared_distance_to_the_own_centre():
    centres, features, labels = setup()
    loss, step = centre_loss(features, centres(features), labels)
    own = centres.centres.detach()[labels]
    assert float(loss.detach()) == pytest.approx(float(0.5 * ((features.detach() - own) ** 2).sum(dim=1).mean()), rel=1e-6)
    assert float(step.detach()) == 0.0


def test_the_loss_moves_the_embeddings_and_the_step_moves_the_centres_as_wen_et_al():
    centres, features, labels = setup()
    before = centres.centres.detach().clone()
    loss, step = centre_loss(features, centres(features), labels)
    (7.0 * loss + step).backward()  # the loss weight must not reach the centres

    own = before[labels]
    torch.testing.assert_close(features.grad, 7.0 * (features.detach() - own) / len(labels))
    alpha = 0.5
    torch.optim.SGD([centres.centres], lr=alpha).step()
    expected = before.clone()
    for j in range(3):
        members = features.detach()[labels == j]
        delta = (before[j] - members).sum(dim=0) / (1 + len(members))
        expected[j] -= alpha * delta
    torch.testing.assert_close(centres.centres.detach(), expected)
    torch.testing.assert_close(centres.centres.detach()[1], before[1])  # absent class: unchanged


def test_repeated_updates_bring_the_centres_to_the_class_means():
    centres, features, labels = setup()
    features = features.detach()
    optimizer = torch.optim.SGD(centres.parameters(), lr=0.5)
    for _ in range(200):
        optimizer.zero_grad()
        centre_loss(features, centres(features), labels)[1].backward()
        optimizer.step()
    torch.testing.assert_close(centres.centres.detach()[0], features[labels == 0].mean(dim=0), atol=1e-4, rtol=0)
    torch.testing.assert_close(centres.centres.detach()[2], features[labels == 2].mean(dim=0), atol=1e-4, rtol=0)


def test_mismatched_shapes_are_refused():
    centres, features, labels = setup()
    with pytest.raises(ModelInputError, match="centre loss"):
        centre_loss(features[:, :3], centres(features), labels)
