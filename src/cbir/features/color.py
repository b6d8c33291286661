"""Colour histograms ("GCH", the reference design's colour feature, made for photos).

- space="hsv" (default): a joint hue x saturation x value histogram of the pixels' share,
  square-rooted, so that the cosine of two L2-normalised vectors is the Bhattacharyya
  coefficient of the two colour distributions (no single dominant colour, sky or wall,
  swamps the rest). Photos are decoded at photo_side (a histogram of shares needs real pixels,
  not a 32x32 thumbnail's blend of them); CIFAR's 32x32 images stay 32x32 (base.SMALL_SIDE).
- space="gray": the reference's gray-level histogram, with gray levels as ITU-R 601 luma
  rounded to uint8 exactly as Pillow's `convert("L")` rounds them (16-bit fixed point); raw
  pixel counts with sqrt=false, as the reference stored them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cbir.features import register
from cbir.features.base import Extractor, map_in_chunks
from cbir.features.params import Params

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


def hsv_bins(images: np.ndarray, hue: int, saturation: int, value: int) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, H, W) joint bin index (hue * S + saturation) * V + value.
    HSV as colorsys defines it: value = max, saturation = (max - min) / max, hue from the
    largest channel; gray pixels (max == min) get hue 0 (with saturation 0 it tells nothing)."""
    rgb = images.astype(np.float32)
    top, bottom = rgb.max(axis=-1), rgb.min(axis=-1)
    spread = top - bottom
    safe_spread = np.maximum(spread, 1e-6)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    sixths = np.where(
        top == r, ((g - b) / safe_spread) % 6,
        np.where(top == g, (b - r) / safe_spread + 2, (r - g) / safe_spread + 4),
    )  # fmt: skip
    sixths[spread == 0] = 0
    hue_bin = np.minimum((sixths * (hue / 6)).astype(np.intp), hue - 1)
    sat_bin = np.minimum((spread / np.maximum(top, 1e-6) * saturation).astype(np.intp),
                         saturation - 1)  # fmt: skip
    value_bin = np.minimum((top * (value / 256)).astype(np.intp), value - 1)
    return (hue_bin * saturation + sat_bin) * value + value_bin


SPACES = ("hsv", "gray")
MAX_IMAGE_SIZE = 2048


@dataclass(frozen=True, kw_only=True)
class GchParams(Params):
    space: str = "hsv"
    hue_bins: int = 16  # 16 x 4 x 4 = 256 bins; 12 or 24 hues, 3 saturations/values: +-0.01 P@10
    saturation_bins: int = 4
    value_bins: int = 4
    bins: int = 256  # gray levels (space=gray only)
    sqrt: bool = True  # square roots of the pixel shares; false: raw pixel counts
    image_size: int = 0  # 0: auto, settled once (32 for CIFAR-10-sized images, else photo_side)

    def validate(self) -> None:
        self.require_choice("space", SPACES)
        self.require_range("bins", 1, 256)
        for key in ("hue_bins", "saturation_bins", "value_bins"):
            self.require_range(key, 1, 64)
        self.require_range("image_size", 0, MAX_IMAGE_SIZE)


@register("gch")
class ColorHistogram(Extractor):
    """A colour histogram per image, float32: HSV (default) or gray levels (the reference)."""

    about = "overall colour (HSV colour histogram)"
    params_type = GchParams
    photo_side = 128
    config: GchParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._bin_of_level = gray_level_bins(self.config.bins)

    @classmethod
    def _saved_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """A collection saved before gch had `space` holds the reference's gray counts."""
        return params if "space" in params else {**params, "space": "gray", "sqrt": False}

    @property
    def gray(self) -> bool:
        return self.config.space == "gray"

    @property
    def dim(self) -> int:
        if self.gray:
            return self.config.bins
        p = self.config
        return p.hue_bins * p.saturation_bins * p.value_bins

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.image_side, self.image_side)

    def _extract_batch(self, images: np.ndarray) -> np.ndarray:
        counts = map_in_chunks(self._extract_chunk, images, self.dim)
        if not self.config.sqrt:
            return counts
        return np.sqrt(counts / np.float32(images.shape[1] * images.shape[2]))

    def _extract_chunk(self, images: np.ndarray) -> np.ndarray:
        """Pixel counts per bin."""
        if self.gray:
            levels = self._bin_of_level[luma_uint8(images)]
        else:
            p = self.config
            levels = hsv_bins(images, p.hue_bins, p.saturation_bins, p.value_bins)
        levels = levels.reshape(len(images), -1)
        # One bincount for the whole batch: image i counts into [i * dim, (i + 1) * dim).
        levels += (np.arange(len(images), dtype=np.intp) * self.dim)[:, None]
        counts = np.bincount(levels.ravel(), minlength=len(images) * self.dim)
        return counts.reshape(len(images), self.dim).astype(np.float32)
