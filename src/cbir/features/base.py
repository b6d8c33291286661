"""The Extractor protocol: images in, float32 vectors out, in the spirit of scikit-learn.

`__init__` only stores parameters; `fit` learns state (attributes ending in `_`) and returns self;
`transform` maps a batch of uint8 images (N, H, W, 3) to float32 vectors (N, dim).
State is saved as arrays + JSON, never pickle, because a collection may come from someone else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cbir.errors import CbirError
from cbir.features.fit_record import FitRecord
from cbir.features.params import Params, build_params, comparable, validated

# Fitting may stream batches instead of one giant array.
ImageBatches = np.ndarray | Iterable[np.ndarray]

PARAMS_FILE = "params.json"
CLASSES_FILE = "classes.json"  # the names of a fitted extractor's classes, in class order

# Input sizes. An extractor made for photos (gch, hog, bovw) has an `image_size` parameter whose
# default 0 means "auto", settled once by `settle_image_size`: images no larger than SMALL_SIDE a
# side (CIFAR-10's 32x32) keep their own size, so CIFAR figures stay what they were; anything
# larger, or files not yet decoded, get the extractor's `photo_side`. The settled value is
# written into the parameters, so a collection records it and every later batch, query and
# reopening uses the same size: the size is never chosen per batch.
SMALL_SIDE = 32


class Extractor:
    """Base class for every feature extractor; subclasses override `_extract_batch`.

    Class attributes:
        name: registry name ("gch", "hog", ...), set by `@register`.
        about: one line saying what the extractor matches ("overall colour", ...).
        needs_fit: True when `fit` must run before `transform`.
        photo_side: for an extractor whose `image_size` may be 0 ("auto"), the side photos are
            resized to (see SMALL_SIDE above); 0 for the others.
        params_type: the frozen dataclass of the parameters that make the vectors (types,
            defaults, a `validate` step; see `cbir.features.params`). `__init__` builds it
            from keyword arguments as `self.config`; `get_params()` is its plain dict, what
            params.json and a collection's manifest record and compare.
        knobs_type: the same for runtime knobs that never change the vectors (batch size,
            threads): `self.knobs`, set with the parameters or later by `set_knobs`.
    """

    name: ClassVar[str] = ""
    about: ClassVar[str] = ""  # one line on what the extractor matches, shown to people
    needs_fit: ClassVar[bool] = False
    photo_side: ClassVar[int] = 0
    params_type: ClassVar[type[Params]] = Params
    knobs_type: ClassVar[type[Params]] = Params

    def __init__(self, **params: Any) -> None:
        self.config, self.knobs = build_params(
            self.name or type(self).__name__, self.params_type, self.knobs_type, params
        )
        self.classes_: list[str] | None = None  # set when fitted on labelled images
        self.fit_record_: FitRecord | None = None  # how it was fitted (cbir.fitting)

    # --- parameters ----------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The parameters that make the vectors, as plain JSON-ready values."""
        return self.config.as_dict()

    @property
    def params(self) -> dict[str, Any]:
        return self.get_params()

    def get_knobs(self) -> dict[str, Any]:
        """The runtime knobs (batch size, threads), as plain values."""
        return self.knobs.as_dict()

    def set_knobs(self, **knobs: Any) -> Extractor:
        """Change runtime knobs (e.g. a collection's extractor for one run); returns self."""
        before = self.knobs
        _, self.knobs = build_params(
            self.name, Params, self.knobs_type, {**self.get_knobs(), **knobs}
        )
        self._knobs_changed(before)
        return self

    def _knobs_changed(self, before: Params) -> None:
        """Hook: apply new runtime knobs to what is already loaded (threads of a network)."""

    def clone(self, **changes: Any) -> Extractor:
        """A new, unfitted extractor with the same parameters and runtime knobs (`changes`
        over them)."""
        return type(self)(**{**self.get_params(), **self.get_knobs(), **changes})

    @classmethod
    def comparable_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """`params` as a manifest holds them, this version's or an earlier one's, in the form
        `get_params()` gives: what a collection compares (runtime knobs left out)."""
        return comparable(cls.params_type, cls.knobs_type, params)

    def _update(self, **settled: Any) -> None:
        """Record parameters settled later (an auto image size, the cells or stride it sets)."""
        self.config = replace(self.config, **settled)

    def _check_range(self, key: str, minimum: float, maximum: float | None = None) -> None:
        """Raise a CbirError unless minimum <= the parameter `key` (<= maximum)."""
        validated(self.name, self.config, lambda: self.config.require_range(key, minimum, maximum))

    # --- what subclasses provide -------------------------------------------------------------
    @property
    def dim(self) -> int:
        raise NotImplementedError

    @property
    def input_size(self) -> tuple[int, int] | None:
        return None

    # --- the input size of photo extractors ----------------------------------------------------
    def settle_image_size(self, side: int | None = None) -> Extractor:
        """Fix an "auto" (0) image_size for good, for images at most `side` pixels a side
        (None: not known yet, e.g. files about to be decoded): `side` itself when that is no
        more than SMALL_SIDE, else `photo_side`. A size given explicitly, or settled already,
        is kept. Asking an unsettled extractor its input size, or describing it for a
        manifest, settles it for photos; its first images (`fit`, `transform`) settle it by
        their size. Saved unsettled, it stays "auto". Returns self."""
        if self.photo_side and self.config.image_size == 0:
            small = side is not None and 0 < side <= SMALL_SIDE
            self._update(image_size=side if small else self.photo_side)
            self._image_size_settled()
        return self

    @property
    def image_side(self) -> int:
        """The settled `image_size` of a photo extractor (settling it for photos if need be)."""
        return self.settle_image_size().config.image_size

    def _image_size_settled(self) -> None:
        """Hook: rebuild what depends on image_size once it is settled."""

    def _extract_batch(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # --- the protocol ------------------------------------------------------------------------
    def fit(self, images: ImageBatches, labels: np.ndarray | None = None) -> Extractor:
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Vectors of images to index (and of queries, unless `transform_query` differs)."""
        return self._vectors(images, self._extract_batch)

    def transform_query(self, images: np.ndarray) -> np.ndarray:
        """Vectors of query images, comparable with `transform`'s. The same by default; an
        extractor may spend more on a query, of which there are few, than on each of the
        many images it indexes (the CNN's query-time augmentation)."""
        return self._vectors(images, self._extract_query_batch)

    @property
    def distinct_queries(self) -> bool:
        """True when `transform_query` gives other vectors than `transform`."""
        return False

    def _extract_query_batch(self, images: np.ndarray) -> np.ndarray:
        return self._extract_batch(images)

    # --- labels: what supervised extractors learn from, and what class fusion appends --------
    @property
    def fit_uses_labels(self) -> bool:
        """True when `fit` learns from labels (a classifier, LDA): a query must then never be
        among the images it was fitted on, or its own label leaks into its ranking."""
        return False

    @property
    def uses_index_labels(self) -> bool:
        """True when index images are described with their labels (`transform_index`), as
        class fusion appends the true class of an index image."""
        return False

    @property
    def class_names(self) -> list[str] | None:
        """The names of the classes a label-using extractor knows (class i is
        `class_names[i]`), so that a collection's label names map to class numbers."""
        return self.classes_

    def transform_index(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Vectors of images to index, given their class numbers (-1 unknown); the same as
        `transform` unless `uses_index_labels`."""
        return self.transform(images)

    @property
    def run_tag(self) -> str:
        """The TREC run tag of this extractor's runs."""
        return self.name

    def _vectors(
        self, images: np.ndarray, extract: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        images = check_image_batch(images)
        self.settle_image_size(max(images.shape[1:3]))  # the first images settle an auto size
        if self.input_size is not None and images.shape[1:3] != tuple(self.input_size):
            raise CbirError(
                f"extractor {self.name!r} expects {self.input_size[0]}x{self.input_size[1]} "
                f"images, got {images.shape[1]}x{images.shape[2]}; resize them first"
            )
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.asarray(extract(images), dtype=np.float32)
        assert out.shape == (len(images), self.dim), (out.shape, self.dim)
        return out

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"name": self.name, "params": self.get_params(), "knobs": self.get_knobs()}
        (folder / PARAMS_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True))
        if self.classes_ is not None:
            (folder / CLASSES_FILE).write_text(json.dumps(self.classes_))
        if self.fit_record_ is not None:
            self.fit_record_.save(folder)
        self._save_state(folder)

    @classmethod
    def load(cls, folder: Path) -> Extractor:
        payload = json.loads((Path(folder) / PARAMS_FILE).read_text())
        # earlier versions kept the runtime knobs among the parameters: both read
        extractor = cls(**cls._saved_params(payload["params"]), **payload.get("knobs", {}))
        if (Path(folder) / CLASSES_FILE).is_file():
            extractor.classes_ = json.loads((Path(folder) / CLASSES_FILE).read_text())
        extractor.fit_record_ = FitRecord.load(Path(folder))
        extractor._load_state(Path(folder))
        return extractor

    @classmethod
    def _saved_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Hook: the parameters of params.json, with what an earlier version left out filled
        in as that version behaved."""
        return params

    def _save_state(self, folder: Path) -> None:
        """Write learnt state (arrays as .npy/.safetensors); stateless extractors write none."""

    def _load_state(self, folder: Path) -> None:
        """Read what `_save_state` wrote."""

    def describe(self) -> dict[str, Any]:
        """What goes into a manifest or metrics.json: enough to rebuild the same extractor.
        An auto input size is settled first (for photos, unless images settled it), so a
        collection's manifest names the size its vectors are made at."""
        self.settle_image_size()
        return {"name": self.name, "params": self.get_params()}

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


def map_in_chunks(
    extract: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    dim: int,
    max_pixels: int = 1 << 19,
) -> np.ndarray:
    """`extract` over consecutive slices of ~max_pixels pixels, stacked into (N, dim) float32.
    Vectorised extractors run faster this way (intermediates stay in cache) and their memory
    stays bounded however large the batch."""
    step = max(1, max_pixels // (images.shape[1] * images.shape[2]))
    out = np.empty((len(images), dim), dtype=np.float32)
    for start in range(0, len(images), step):
        out[start : start + step] = extract(images[start : start + step])
    return out


def to_gray(images: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as float32 in [0, 255], the same weights as Pillow and OpenCV."""
    rgb = images.astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
