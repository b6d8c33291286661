"""Fitting an extractor: the first step of creating a collection, and of a benchmark.

An extractor that learns (a BoVW vocabulary and classifier, LDA, PCA) is fitted once, when its
collection is created: on the labelled images being indexed, or on other images (`--fit-on`).
What it learnt and a record of what it learnt from (cbir.features.fit_record) are saved with
the collection, so later `cbir index` runs, `cbir search` and `cbir serve` reuse them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cbir.datasets import Dataset, load_folder
from cbir.errors import CbirError, DataNotFoundError
from cbir.features import Extractor
from cbir.features.fit_record import FitRecord, pixel_digests
from cbir.pipeline import DEFAULT_SIZE, settle_input_size
from cbir.progress import progress_bar

log = logging.getLogger(__name__)


def fit_extractor(extractor: Extractor, data: Dataset, source: str) -> Extractor:
    """`extractor` fitted on `data` (with its labels when it learns from them), carrying the
    record of that fit; returned as is when it learns nothing. An extractor with a `classes`
    parameter is rebuilt with as many classes as the labelled images have: the labels decide
    how many one-hot slots class fusion needs."""
    if not extractor.needs_fit:
        return extractor
    settle_input_size(extractor, data.images)  # an auto size: the one these images came at
    if extractor.fit_uses_labels:
        data = _labelled_part(data)  # images outside any class folder teach it nothing
        if len(data) == 0:
            raise CbirError(
                f"extractor {extractor.name!r} learns from labels, but {source} has no image "
                "in a class subfolder: index a labelled folder (one subfolder per class) or "
                "fit on one with --fit-on DIR"
            )
        if extractor.params.get("classes", len(data.class_names)) != len(data.class_names):
            extractor = extractor.clone(classes=len(data.class_names))
    elif len(data) == 0:
        raise DataNotFoundError(f"no images to fit extractor {extractor.name!r} on in {source}")
    labels = data.labels if data.labelled else None
    log.info("fitting %s on %d images of %s", extractor.name, len(data), source)
    extractor.fit(data.images, labels)
    if extractor.fit_uses_labels:
        extractor.classes_ = list(data.class_names)
    extractor.fit_record_ = FitRecord(
        source, len(data), extractor.fit_uses_labels, pixel_digests(data.images)
    )
    return extractor


def load_fit_images(spec: str | Path, extractor: Extractor, data_dir: Path | None = None):
    """The images to fit on, decoded at the extractor's input size (an auto one is settled
    for them first): a folder (class subfolders are labels), or `cifar10[:train|:test]`.
    Returns (dataset, source in words)."""
    spec = str(spec)
    if spec.split(":")[0] == "cifar10":
        from cbir.datasets import load_cifar10

        split = spec.partition(":")[2] or "train"
        if split not in ("train", "test"):
            raise CbirError(f"unknown CIFAR-10 split {split!r}; use cifar10:train or cifar10:test")
        data = getattr(load_cifar10(data_dir), split)
        settle_input_size(extractor, data.images)
        return data, f"cifar10:{split}"
    folder = Path(spec)
    if not folder.is_dir():
        raise DataNotFoundError(f"{spec} is not a folder of images to fit on")
    settle_input_size(extractor, folder)
    with progress_bar(None, f"load {folder.name} to fit on") as bar:
        data = load_folder(folder, extractor.input_size or DEFAULT_SIZE, bar.update)
    return data, str(folder.resolve())


def _labelled_part(data: Dataset) -> Dataset:
    return data if data.labelled else data.take(np.flatnonzero(data.labels >= 0))


__all__ = ["fit_extractor", "load_fit_images"]
