"""Tiny seeded datasets and a tiny trained checkpoint shared by the CNN tests (seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the CNN extractor needs torch (a core dependency)")

TINY_AIRBENCH = {"widths": [8, 16, 16]}


def colour_dataset(n: int, seed: int = 0, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is a colour plus noise: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    palette = rng.integers(30, 226, (classes, 3))
    noise = rng.integers(-30, 31, (n, 32, 32, 3))
    images = np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


@pytest.fixture(scope="session")
def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    return colour_dataset(320)


def train_tiny(folder: Path, images: np.ndarray, labels: np.ndarray, seed: int = 0) -> Path:
    """A tiny airbench trained for 2 epochs; one class name per label value."""
    from cbir.training.train import train
    from cbir.training.train_config import TrainConfig

    config = TrainConfig(
        arch_options=TINY_AIRBENCH, epochs=2, batch_size=64, whiten_bias_epochs=1, tta=1,
        seed=seed,
    )  # fmt: skip
    names = [chr(ord("a") + n) for n in range(int(labels.max()) + 1)]
    train(images, labels, config, out_dir=folder, class_names=names)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_data) -> Path:
    """A tiny airbench trained for 2 epochs on 320 images of 4 classes."""
    return train_tiny(tmp_path_factory.mktemp("tiny-cnn"), *tiny_data)


@pytest.fixture(scope="session")
def second_tiny_checkpoint(tmp_path_factory, tiny_data) -> Path:
    """Another seed of the same: a second voice for a classifier committee."""
    return train_tiny(tmp_path_factory.mktemp("tiny-cnn-2"), *tiny_data, seed=1)
