"""Knowledge distillation: the loss, the cached teacher targets and a student that learns
from a teacher alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cbir.errors import CbirError
from cbir.training.distill import (
    TARGETS_FILE,
    TARGETS_RECORD,
    teacher_folders,
    teacher_logits,
)
from cbir.training.losses import combined_loss, distillation_loss
from cbir.training.train import train
from cbir.training.train_config import LossWeights, TrainConfig

from .conftest import TINY_AIRBENCH


def test_loss_is_zero_for_a_student_that_copies_the_teacher() -> None:
    teacher = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    assert distillation_loss(teacher.clone(), teacher, 2.0) == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(torch.zeros(8, 5), teacher, 2.0) > 0.01


def test_loss_is_t_squared_times_kl_of_the_softened_distributions() -> None:
    generator = torch.Generator().manual_seed(1)
    student, teacher = (torch.randn(4, 3, generator=generator) for _ in range(2))
    p = F.softmax(teacher / 3.0, dim=1)
    q = F.softmax(student / 3.0, dim=1)
    expected = 9.0 * (p * (p.log() - q.log())).sum(1).mean()
    assert distillation_loss(student, teacher, 3.0) == pytest.approx(float(expected), rel=1e-5)


def test_combined_loss_needs_teacher_logits_when_distilling() -> None:
    weights = LossWeights(cross_entropy=0.0, distill=1.0)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="teachers' logits"):
        combined_loss(logits, logits, labels, weights)
    assert combined_loss(logits, logits, labels, weights, logits.clone()) == pytest.approx(0.0)


def test_distill_weight_and_teachers_go_together(tmp_path: Path) -> None:
    with pytest.raises(CbirError, match="go together"):
        TrainConfig(distill=1.0)
    with pytest.raises(CbirError, match="go together"):
        TrainConfig(distill_from=str(tmp_path))
    with pytest.raises(CbirError, match="not a cbir CNN checkpoint"):
        teacher_logits(
            teacher_folders(f"{tmp_path},{tmp_path / 'missing'}"),
            np.zeros((1, 32, 32, 3), np.uint8),
            4,
        )
    with pytest.raises(CbirError, match="temperature"):
        TrainConfig(distill=1.0, distill_from=str(tmp_path), distill_temperature=0.0)


def test_teacher_targets_are_cached_and_refreshed_when_the_teachers_change(
    tiny_checkpoint: Path, tiny_data, tmp_path: Path
) -> None:
    images = tiny_data[0][:48]
    first = teacher_logits([tiny_checkpoint], images, 4, tta=1, cache_dir=tmp_path)
    assert first.shape == (48, 4) and (tmp_path / TARGETS_FILE).is_file()
    np.save(tmp_path / TARGETS_FILE, first + 1.0)  # a reused cache returns the file's values
    np.testing.assert_array_equal(
        teacher_logits([tiny_checkpoint], images, 4, tta=1, cache_dir=tmp_path), first + 1.0
    )
    # Other views, other targets: the cache is recomputed, not trusted.
    again = teacher_logits([tiny_checkpoint], images, 4, tta=0, cache_dir=tmp_path)
    assert np.abs(again - first).max() < 1.0
    assert json.loads((tmp_path / TARGETS_RECORD).read_text())["tta"] == 0
    with pytest.raises(CbirError, match="predicts 4 classes"):
        teacher_logits([tiny_checkpoint], images, 7, tta=0)


def test_a_student_learns_from_the_teacher_alone(
    tiny_checkpoint: Path, tiny_data, tmp_path: Path
) -> None:
    """No label enters the loss (cross-entropy weight 0), yet the student comes to say what
    the teacher says. The tiny checkpoint's logits are nearly flat after two epochs, so the
    teacher is that network made confident: its head scaled up, its ranking unchanged."""
    from cbir.features.cnn.checkpoint import load_checkpoint, save_checkpoint
    from cbir.features.cnn.inference import infer

    net, config = load_checkpoint(tiny_checkpoint)
    with torch.no_grad():
        net.head.weight.mul_(50.0)
    save_checkpoint(tmp_path / "teacher", net, config)
    images = tiny_data[0]
    says = teacher_logits([tmp_path / "teacher"], images, 4, tta=0).argmax(1)
    config = TrainConfig(
        arch_options=TINY_AIRBENCH, epochs=2, batch_size=64, whiten_bias_epochs=1, tta=0,
        cross_entropy=0.0, distill=1.0, distill_from=str(tmp_path / "teacher"), seed=1,
    )  # fmt: skip
    result = train(images, tiny_data[1], config, out_dir=tmp_path / "student")
    assert (tmp_path / "student" / TARGETS_FILE).is_file()
    _, logits = infer(result.net.forward_both, images)
    assert (logits.argmax(1) == says).mean() > 0.6
