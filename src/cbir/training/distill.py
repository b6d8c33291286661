"""Teacher targets for knowledge distillation (Hinton et al. 2015; the loss is in losses.py):
a student learns from the softened class probabilities of trained teachers as well as from
the labels.

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

from cbir.errors import CbirError
from cbir.features.cnn.checkpoint import WEIGHTS_FILE, load_checkpoint
from cbir.features.cnn.networks import EmbeddingNet

log = logging.getLogger(__name__)

TARGETS_FILE = "teacher_logits.npy"
TARGETS_RECORD = "teacher_logits.json"
DISTILL_TTA = 2  # the teachers' views: mirror + 1-pixel shifts, their most accurate setting


def teacher_folders(spec: str) -> list[Path]:
    """Comma-separated checkpoint folders (`teacher_logits` checks each one)."""
    folders = [Path(part.strip()) for part in spec.split(",") if part.strip()]
    if not folders:
        raise CbirError("--distill-from needs at least one checkpoint folder")
    return folders


def _fingerprint(folders: list[Path], images: np.ndarray, tta: int) -> str:
    """What the cached targets depend on: every teacher's weights, the images and the TTA."""
    digest = hashlib.sha256(f"tta={tta};n={len(images)}".encode())
    for folder in folders:
        digest.update((folder / WEIGHTS_FILE).read_bytes())
    digest.update(np.ascontiguousarray(images[:: max(1, len(images) // 64)]).tobytes())
    return digest.hexdigest()


def teacher_logits(
    folders: list[Path], images: np.ndarray, classes: int, tta: int = 2,
    cache_dir: Path | None = None, bf16: bool = True,
) -> np.ndarray:  # fmt: skip
    """Mean logits (N, classes) of the teacher ensemble on uint8 `images`, read from
    `cache_dir` when a file there was made from the same teachers, images and TTA."""
    from cbir.features.cnn.inference import infer

    teachers = [_load_teacher(folder, classes) for folder in folders]  # clear errors first
    fingerprint = _fingerprint(folders, images, tta)
    cached, record = (
        (cache_dir / TARGETS_FILE, cache_dir / TARGETS_RECORD) if cache_dir else (None, None)
    )
    if cached and cached.is_file() and _recorded_fingerprint(record) == fingerprint:
        return np.load(cached)
    total = np.zeros((len(images), classes), dtype=np.float64)
    for folder, net in zip(folders, teachers, strict=True):
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


def _load_teacher(folder: Path, classes: int) -> EmbeddingNet:
    net, _ = load_checkpoint(folder)
    if net.head.out_features != classes:
        raise CbirError(
            f"teacher {folder} predicts {net.head.out_features} classes, the data has {classes}"
        )
    return net


def _recorded_fingerprint(record: Path) -> str | None:
    try:
        return json.loads(record.read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None
