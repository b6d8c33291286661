"""Losses: each term rewards embeddings that cluster by class."""

from __future__ import annotations

import pytest
import torch

from cbir.training.losses import batch_hard_triplet, combined_loss, supervised_contrastive
from cbir.training.train_config import LossWeights

LABELS = torch.tensor([0, 0, 1, 1, 2, 2])


def clustered() -> torch.Tensor:
    return torch.eye(3)[LABELS] + 0.01 * torch.randn(
        6, 3, generator=torch.Generator().manual_seed(0)
    )


def scrambled() -> torch.Tensor:
    return torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]


def test_supcon_prefers_class_clusters() -> None:
    good = supervised_contrastive(clustered(), LABELS, 0.1)
    bad = supervised_contrastive(scrambled(), LABELS, 0.1)
    assert good < bad


def test_triplet_is_zero_when_classes_are_separated_by_the_margin() -> None:
    assert batch_hard_triplet(clustered(), LABELS, 0.2) == pytest.approx(0.0)
    assert batch_hard_triplet(scrambled(), LABELS, 0.2) > 0.5


def test_anchors_without_positives_are_ignored() -> None:
    labels = torch.tensor([0, 1, 2])
    assert supervised_contrastive(torch.randn(3, 4), labels, 0.1) == 0
    assert batch_hard_triplet(torch.randn(3, 4), labels, 0.2) == 0


def test_combined_loss_adds_weighted_terms() -> None:
    embedding, logits = clustered(), torch.randn(6, 3)
    ce_only = combined_loss(embedding, logits, LABELS, LossWeights())
    both = combined_loss(embedding, logits, LABELS, LossWeights(supcon=0.5, triplet=2.0))
    extra = 0.5 * supervised_contrastive(embedding, LABELS, 0.1) + 2.0 * batch_hard_triplet(
        embedding, LABELS, 0.2
    )
    torch.testing.assert_close(both, ce_only + extra)


def test_weights_are_validated() -> None:
    with pytest.raises(ValueError):
        LossWeights(cross_entropy=0.0)
    with pytest.raises(ValueError):
        LossWeights(supcon=-1.0)
