"""Turning images into vectors and collections: the steps the CLI, web app and benchmarks share."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cbir.collection import Collection, ImageRecord
from cbir.datasets import Dataset, scan_folder
from cbir.errors import CbirError
from cbir.features import Extractor
from cbir.image_store import png_bytes
from cbir.images import decode_many
from cbir.progress import progress_bar

log = logging.getLogger(__name__)

DEFAULT_BATCH = 1024


def describe(
    extractor: Extractor, images: np.ndarray, batch_size: int = DEFAULT_BATCH, label: str = ""
) -> np.ndarray:
    """Vectors for a stack of images, computed batch by batch to bound memory."""
    out = np.empty((len(images), extractor.dim), dtype=np.float32)
    with progress_bar(len(images), f"describe {label}".strip()) as bar:
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            out[start:stop] = extractor.transform(images[start:stop])
            bar.update(min(stop, len(images)) - start)
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class IndexReport:
    added: int = 0
    skipped_known: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    total_files: int = 0


def index_folder(
    folder: Path,
    collection: Collection,
    batch_size: int = DEFAULT_BATCH,
    strict: bool = False,
    on_batch: Callable[[IndexReport], None] | None = None,
) -> IndexReport:
    """Add every image of `folder` not yet in the collection (same content = same image).

    Commits batch by batch, so an interrupted run keeps what it committed and a re-run resumes.
    Unreadable images are skipped with a warning, or stop the run with `strict`.
    """
    entries = scan_folder(folder)
    report = IndexReport(total_files=len(entries))
    known = collection.known_checksums()
    size = collection.extractor.input_size or (32, 32)
    with progress_bar(len(entries), "index") as bar:
        for start in range(0, len(entries), batch_size):
            part = entries[start : start + batch_size]
            checksums = [file_sha256(e.path) for e in part]
            fresh = []
            for entry, checksum in zip(part, checksums, strict=True):
                if checksum in known:
                    report.skipped_known += 1
                else:
                    known.add(checksum)  # a second copy in this run is the same image
                    fresh.append((entry, checksum))
            batch = decode_many([e.path for e, _ in fresh], size=size)
            for position, why in batch.failures:
                if strict:
                    raise CbirError(f"{why} (--strict stops at the first unreadable image)")
                log.warning("skipping %s", why)
                report.failed.append((str(fresh[position][0].path), why))
            records = [
                ImageRecord(
                    id=fresh[p][0].id,
                    path=str(fresh[p][0].path.resolve()),
                    label=fresh[p][0].label,
                    sha256=fresh[p][1],
                )  # fmt: skip
                for p in batch.ok
            ]
            if records:
                vectors = collection.extractor.transform(batch.images)
                report.added += collection.add(records, vectors)
            bar.update(len(part))
            if on_batch:
                on_batch(report)
    return report


def index_dataset(
    dataset: Dataset, collection: Collection, batch_size: int = DEFAULT_BATCH
) -> IndexReport:
    """Add an in-memory dataset (CIFAR-10) to a collection, keeping a PNG copy of every image in
    the collection's image store so the web app can show it. Idempotent like `index_folder`."""
    report = IndexReport(total_files=len(dataset))
    known = collection.known_ids()
    label_names = dataset.label_names()
    size = collection.extractor.input_size
    with progress_bar(len(dataset), "index") as bar:
        for start in range(0, len(dataset), batch_size):
            stop = min(start + batch_size, len(dataset))
            fresh = [i for i in range(start, stop) if dataset.ids[i] not in known]
            report.skipped_known += (stop - start) - len(fresh)
            images = dataset.images[fresh]
            if size is not None and images.shape[1:3] != tuple(size):
                raise CbirError(
                    f"dataset images are {images.shape[1]}x{images.shape[2]} but the extractor "
                    f"expects {size[0]}x{size[1]}"
                )
            records = []
            for i, image in zip(fresh, images, strict=True):
                digest = collection.images.put(png_bytes(image))
                height, width = image.shape[:2]
                records.append(
                    ImageRecord(dataset.ids[i], None, label_names[i], digest, width, height)
                )
            if records:
                report.added += collection.add(records, collection.extractor.transform(images))
            bar.update(stop - start)
    return report
