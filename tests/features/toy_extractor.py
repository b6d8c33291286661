"""A toy extractor in one file, to show what adding one takes: its parameters, its vectors and
one registration line. Importing this module registers `toy`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbir.features import register
from cbir.features.base import Extractor
from cbir.features.params import Params

SIDE = 32


@dataclass(frozen=True, kw_only=True)
class ThumbnailParams(Params):
    grid: int = 4  # cells a side

    def validate(self) -> None:
        self.require_range("grid", 1, SIDE)
        self.require(SIDE % self.grid == 0, "grid", f"must divide {SIDE}")


@register("toy")
class Thumbnail(Extractor):
    """The mean colour of each cell of a grid laid over the image, unit length."""

    about = "a thumbnail: the mean colour of each cell of a grid"
    params_type = ThumbnailParams
    config: ThumbnailParams

    @property
    def dim(self) -> int:
        return self.config.grid**2 * 3

    @property
    def input_size(self) -> tuple[int, int]:
        return (SIDE, SIDE)

    def _extract_batch(self, images: np.ndarray) -> np.ndarray:
        grid, cell = self.config.grid, SIDE // self.config.grid
        cells = images.reshape(len(images), grid, cell, grid, cell, 3).mean(axis=(2, 4))
        vectors = cells.reshape(len(images), -1).astype(np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
