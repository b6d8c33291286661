"""Queries that are near-copies of an indexed image, which flatter any retrieval score.

CIFAR-10 has test images whose near-copies sit in the training set (Barz & Denzler, "Do we
train on test data? Purging CIFAR of near-duplicates", 2020); a query that finds its own copy
at rank 1 says little about the extractor. We flag them with a deliberately simple, cheap
descriptor that no extractor under test shares: each image box-averaged to 8x8 pixels in
colour (192 values), minus its mean (brightness), scaled to unit length (contrast), so the
cosine of two descriptors is the correlation of the two tiny images. A query is a near
duplicate when its nearest index image (exact search) has cosine >= the threshold.

The default threshold, 0.97, was set by looking at CIFAR-10 (JPEG mirror) test/train pairs in
bands of similarity: at >= 0.98 every pair inspected was the same photograph (re-encoded,
slightly shifted or recoloured); in 0.97-0.98 nearly all; below 0.96 different photographs of
similar scenes (sky and a plane, sea and a ship) become common. It misses copies that are
mirrored or strongly cropped: the count is a lower bound, reported with the method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cbir.evaluation import leave_one_out
from cbir.index.embedded import ExactIndex

DEFAULT_THRESHOLD = 0.97
SIDE = 8  # pixels per side of the descriptor
METHOD = (
    f"{SIDE}x{SIDE} RGB box-averaged pixels, mean removed, unit length; cosine with the "
    "nearest index image (exact search) >= threshold"
)
_CHUNK = 4096  # images per step: bounds the uint32 intermediate to ~50 MB for 32x32 images


@dataclass
class NearDuplicates:
    """Per query: whether it is flagged, its nearest index image and their cosine."""

    flagged: np.ndarray  # (Q,) bool
    nearest: list[str]  # (Q,) id of the nearest index image ("" when the index is empty)
    similarity: np.ndarray  # (Q,) float32
    threshold: float

    @property
    def count(self) -> int:
        return int(self.flagged.sum())

    def describe(self) -> dict[str, Any]:
        """What metrics.json records about the check."""
        return {"count": self.count, "threshold": self.threshold, "method": METHOD}


def tiny_pixels(images: np.ndarray, side: int = SIDE) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, side * side * 3) float32 box averages (side capped at H, W).

    Box edges fall at floor(i * H / side), so any size works, with unequal boxes where H is
    not a multiple of side.
    """
    n, height, width, channels = images.shape
    side = min(side, height, width)
    row_starts = np.arange(side) * height // side
    col_starts = np.arange(side) * width // side
    areas = np.outer(np.diff(row_starts, append=height), np.diff(col_starts, append=width))
    areas = areas.astype(np.float32)[None, :, :, None]
    out = np.empty((n, side * side * channels), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        chunk = images[start : start + _CHUNK]
        sums = np.add.reduceat(chunk, row_starts, axis=1, dtype=np.uint32)
        sums = np.add.reduceat(sums, col_starts, axis=2)
        out[start : start + len(chunk)] = (sums / areas).reshape(len(chunk), -1)
    return out


def descriptors(images: np.ndarray) -> np.ndarray:
    """The near-duplicate descriptor: tiny pixels with the mean removed (the cosine index
    scales them to unit length). A flat image has none (all zeros) and is never flagged."""
    pixels = tiny_pixels(images)
    pixels -= pixels.mean(axis=1, keepdims=True)
    return pixels


def find_near_duplicates(
    query_images: np.ndarray,
    index_images: np.ndarray,
    index_ids: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    query_ids: Sequence[str] | None = None,
) -> NearDuplicates:
    """Flag each query whose nearest index image is a near-copy. With `query_ids` (a
    leave-one-out run, where the queries are the index) a query's own image is skipped."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"a cosine threshold lies in [-1, 1], got {threshold}")
    index_vectors = descriptors(index_images)
    index = ExactIndex(dim=index_vectors.shape[1], metric="cosine")
    index.add(list(index_ids), index_vectors)
    ranked, scores = leave_one_out.search(index, descriptors(query_images), 1, query_ids)
    if scores.shape[1] == 0:  # nothing to compare with
        return NearDuplicates(
            np.zeros(len(query_images), dtype=bool), [""] * len(query_images),
            np.zeros(len(query_images), dtype=np.float32), threshold,
        )  # fmt: skip
    similarity = scores[:, 0]
    nearest = [row[0] for row in ranked]
    return NearDuplicates(similarity >= threshold, nearest, similarity, threshold)
