"""The Extractor protocol: images in, float32 vectors out, in the spirit of scikit-learn.

`__init__` only stores parameters; `fit` learns state (attributes ending in `_`) and returns self;
`transform` maps a batch of uint8 images (N, H, W, 3) to float32 vectors (N, dim).
State is saved as arrays + JSON, never pickle, because a collection may come from someone else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cbir.errors import CbirError

# Fitting may stream batches instead of one giant array.
ImageBatches = np.ndarray | Iterable[np.ndarray]

PARAMS_FILE = "params.json"


class Extractor:
    """Base class for every feature extractor; subclasses override `_extract_batch`.

    Class attributes:
        name: registry name ("gch", "hog", ...), set by `@register`.
        needs_fit: True when `fit` must run before `transform`.
        input_size: (height, width) every image is resized to before extraction, or None when
            the extractor accepts any size (the batch must still share one size).
    """

    name: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)

    # --- what subclasses provide -------------------------------------------------------------
    @property
    def dim(self) -> int:
        raise NotImplementedError

    @property
    def input_size(self) -> tuple[int, int] | None:
        return None

    def _extract_batch(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # --- the protocol ------------------------------------------------------------------------
    def fit(self, images: ImageBatches, labels: np.ndarray | None = None) -> Extractor:
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        images = check_image_batch(images)
        if self.input_size is not None and images.shape[1:3] != tuple(self.input_size):
            raise CbirError(
                f"extractor {self.name!r} expects {self.input_size[0]}x{self.input_size[1]} "
                f"images, got {images.shape[1]}x{images.shape[2]}; resize them first"
            )
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.asarray(self._extract_batch(images), dtype=np.float32)
        assert out.shape == (len(images), self.dim), (out.shape, self.dim)
        return out

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"name": self.name, "params": self.params}
        (folder / PARAMS_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True))
        self._save_state(folder)

    @classmethod
    def load(cls, folder: Path) -> Extractor:
        payload = json.loads((Path(folder) / PARAMS_FILE).read_text())
        extractor = cls(**payload["params"])
        extractor._load_state(Path(folder))
        return extractor

    def _save_state(self, folder: Path) -> None:
        """Write learnt state (arrays as .npy/.safetensors); stateless extractors write none."""

    def _load_state(self, folder: Path) -> None:
        """Read what `_save_state` wrote."""

    def describe(self) -> dict[str, Any]:
        """What goes into a manifest or metrics.json: enough to rebuild the same extractor."""
        return {"name": self.name, "params": dict(self.params)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items()))
        return f"{type(self).__name__}({args})"


def check_image_batch(images: np.ndarray) -> np.ndarray:
    """Validate an (N, H, W, 3) uint8 batch; a clear error for anything else."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise CbirError(f"expected a batch of RGB images shaped (N, H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise CbirError(f"expected uint8 pixels, got {images.dtype}")
    return images


def to_gray(images: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as float32 in [0, 255], the same weights as Pillow and OpenCV."""
    rgb = images.astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
