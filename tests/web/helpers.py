"""Images and collections for the web tests, made on the fly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from cbir.collection import Collection
from cbir.datasets import Dataset
from cbir.features import get_extractor
from cbir.pipeline import index_dataset

# Three classes a gray-level histogram tells apart: dark, mid and light images.
GRAY_LEVELS = {"dark": 40, "mid": 128, "light": 215}
PER_CLASS = 6


def gray_image(rng: np.random.Generator, level: int, size: int = 32) -> np.ndarray:
    noise = rng.integers(-18, 19, size=(size, size, 3))
    return np.clip(level + noise, 0, 255).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


def query_png(level: int = 40, seed: int = 99) -> bytes:
    """A fresh image (not indexed) of the given gray level."""
    return png(gray_image(np.random.default_rng(seed), level))


def build_collection(folder: Path) -> Path:
    """18 images in the collection's image store, like a CIFAR-10 collection: ids
    `img-<class>-<i>`, labels dark / mid / light."""
    rng = np.random.default_rng(0)
    names = list(GRAY_LEVELS)
    ids, images, labels = [], [], []
    for label_index, (label, level) in enumerate(GRAY_LEVELS.items()):
        for i in range(PER_CLASS):
            ids.append(f"img-{label}-{i}")
            images.append(gray_image(rng, level))
            labels.append(label_index)
    dataset = Dataset(ids, np.stack(images), np.array(labels, dtype=np.int64), names)
    with Collection.create(folder, get_extractor("gch")) as collection:
        index_dataset(dataset, collection)
    return folder
