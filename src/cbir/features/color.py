"""Gray colour histogram ("GCH"), the reference design's colour feature.

Gray levels are ITU-R 601 luma rounded to uint8 exactly as Pillow's `convert("L")` rounds them
(16-bit fixed point); the histogram holds raw pixel counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cbir.features import register
from cbir.features.base import Extractor, map_in_chunks

# Pillow's fixed-point ITU-R 601 weights (0.299, 0.587, 0.114) * 2**16; they sum to 2**16, so
# white stays 255. OpenCV's cvtColor uses 14-bit weights (4899, 9617, 1868) and rounds a few
# colours (39,135 of the 2**24, 0.23%) to the neighbouring gray level; we follow Pillow, which
# the tests check on every colour.
_LUMA_WEIGHTS = (np.uint32(19595), np.uint32(38470), np.uint32(7471))
_LUMA_SHIFT = 16


def luma_uint8(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, H, W) uint8 gray, bit-identical to Pillow's convert("L")."""
    r_weight, g_weight, b_weight = _LUMA_WEIGHTS
    acc = images[..., 0] * r_weight  # uint8 * uint32 scalar -> uint32, no overflow
    acc += images[..., 1] * g_weight
    acc += images[..., 2] * b_weight
    acc += np.uint32(1 << (_LUMA_SHIFT - 1))  # round half up
    acc >>= _LUMA_SHIFT
    return acc.astype(np.uint8)


def gray_level_bins(bins: int) -> np.ndarray:
    """Bin of each gray level 0..255, as np.histogram(range=(0, 256), bins=bins) assigns it."""
    edges = np.linspace(0, 256, bins + 1)
    return (np.searchsorted(edges, np.arange(256), side="right") - 1).astype(np.intp)


@register("gch")
class GrayColorHistogram(Extractor):
    """Histogram of gray levels over [0, 256) with `bins` bins, raw counts as float32."""

    defaults = {"bins": 256, "image_size": 32}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._check_range("bins", 1, 256)
        self._check_range("image_size", 1)
        self._bin_of_level = gray_level_bins(self.params["bins"])

    @property
    def dim(self) -> int:
        return self.params["bins"]

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.params["image_size"], self.params["image_size"])

    def _extract_batch(self, images: np.ndarray) -> np.ndarray:
        return map_in_chunks(self._extract_chunk, images, self.dim)

    def _extract_chunk(self, images: np.ndarray) -> np.ndarray:
        bins = self.params["bins"]
        levels = self._bin_of_level[luma_uint8(images).reshape(len(images), -1)]
        # One bincount for the whole batch: image i counts into [i * bins, (i + 1) * bins).
        levels += (np.arange(len(images), dtype=np.intp) * bins)[:, None]
        counts = np.bincount(levels.ravel(), minlength=len(images) * bins)
        return counts.reshape(len(images), bins).astype(np.float32)
