"""Knowledge distillation (Hinton et al. 2015): a student learns from the softened class
probabilities of trained teachers as well as from the labels.

The teachers are an ensemble of `cbir train` checkpoints. Their logits are computed once per
training image, averaged over the test-time-augmentation views and over the teachers, and kept
as fixed targets: a teacher forward pass per training step would cost a third of the step per
teacher on a CPU, while the student's mild augmentation (a 2-pixel shift, a mirror, a cutout
square) barely moves what a good teacher says about an image.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cbir.errors import CbirError

log = logging.getLogger(__name__)

TARGETS_FILE = "teacher_logits.npy"
TARGETS_RECORD = "teacher_logits.json"
DISTILL_TTA = 2  # the teachers' views: mirror + 1-pixel shifts, their most accurate setting


def teacher_folders(spec: str) -> list[Path]:
    """Comma-separated checkpoint folders, each checked to exist."""
    folders = [Path(part.strip()) for part in spec.split(",") if part.strip()]
    if not folders:
        raise CbirError("--distill-from needs at least one checkpoint folder")
    for folder in folders:
        if not (folder / "model.safetensors").is_file():
            raise CbirError(f"teacher {folder} is not a cbir CNN checkpoint (no model.safetensors)")
    return folders


def _fingerprint(folders: list[Path], images: np.ndarray, tta: int) -> str:
    """What the cached targets depend on: every teacher's weights, the images and the TTA."""
    digest = hashlib.sha256(f"tta={tta};n={len(images)}".encode())
    for folder in folders:
        digest.update((folder / "model.safetensors").read_bytes())
    digest.update(np.ascontiguousarray(images[:: max(1, len(images) // 64)]).tobytes())
    return digest.hexdigest()


def teacher_logits(
    folders: list[Path], images: np.ndarray, classes: int, tta: int = 2,
    cache_dir: Path | None = None, bf16: bool = True,
) -> np.ndarray:  # fmt: skip
    """Mean logits (N, classes) of the teacher ensemble on uint8 `images`, read from
    `cache_dir` when a file there was made from the same teachers, images and TTA."""
    from cbir.features.cnn.checkpoint import load_checkpoint
    from cbir.features.cnn.inference import infer

    fingerprint = _fingerprint(folders, images, tta)
    cached, record = (
        (cache_dir / TARGETS_FILE, cache_dir / TARGETS_RECORD) if cache_dir else (None, None)
    )
    if cached and cached.is_file() and _recorded_fingerprint(record) == fingerprint:
        return np.load(cached)
    total = np.zeros((len(images), classes), dtype=np.float64)
    for folder in folders:
        net, _ = load_checkpoint(folder)
        if net.head.out_features != classes:
            raise CbirError(
                f"teacher {folder} predicts {net.head.out_features} classes, the data has {classes}"
            )
        log.info("teacher %s: logits of %d images (tta %d)", folder, len(images), tta)
        _, logits = infer(net.forward_both, images, tta=tta, bf16=bf16)
        total += logits
    mean = (total / len(folders)).astype(np.float32)
    if cached:
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(cached, mean)
        teachers = [str(folder) for folder in folders]
        record.write_text(json.dumps({"fingerprint": fingerprint, "teachers": teachers,
                                      "tta": tta}))  # fmt: skip
    return mean


def _recorded_fingerprint(record: Path) -> str | None:
    try:
        return json.loads(record.read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 KL(teacher || student) of the temperature-softened distributions, a batch mean
    (the T^2 keeps its gradient on the scale of the cross-entropy's)."""
    log_student = F.log_softmax(student.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2
