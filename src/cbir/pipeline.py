"""Turning images into vectors and collections: the steps the CLI, web app and benchmarks share.

Indexing is a two-stage pipeline. A background thread prepares the next batch (reads and
checksums files and decodes the new ones; or, for an in-memory dataset, PNG-encodes the
images the collection will keep) while the calling thread describes the current batch and
commits it. Pillow, hashlib, numpy and SQLite's commit release the GIL for their heavy parts,
so the stages overlap on two cores. Each batch is one transaction: an interrupted run keeps
every batch it committed, and the same command run again resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from cbir.collection import Collection, ImageRecord
from cbir.datasets import Dataset, FolderEntry, scan_folder
from cbir.errors import CbirError, ImageDecodeError
from cbir.features import Extractor
from cbir.image_store import png_bytes, sha256_bytes
from cbir.images import DecodeLimits, decode_many, resize_batch
from cbir.progress import progress_bar

log = logging.getLogger(__name__)

DEFAULT_BATCH = 1024
PREFETCH = 2  # batches prepared ahead of the one being committed
# Decoded pixels a folder batch holds at most: 64 photos at 224x224, 196 at 128x128 (CIFAR's
# 32x32: the batch size). A batch is decoded while the one before it is described, so a batch
# as large as the folder leaves nothing to overlap: 1,000 photos with efficientnet indexed at
# 88 images/s in one batch of 1,024, 95-101 in batches of 256, 105-115 in batches of 64
# (benchmarks/index_photos.py, load 1-1.6).
BATCH_PIXELS = 64 * 224 * 224
DEFAULT_SIZE = (32, 32)  # for extractors that take any size (a batch shares one)

T = TypeVar("T")

# Turns a batch of images into vectors: `extractor.transform` by default, or another route to
# the same vectors (cbir.distributed.RayDescriber runs it on a Ray cluster).
Describer = Callable[[Extractor, np.ndarray], np.ndarray]


# --- input sizes ------------------------------------------------------------------------------
def settle_input_size(extractor: Extractor, source: Path | np.ndarray) -> Extractor:
    """`extractor` with an auto image_size settled for `source`: files (a folder; and so any
    query or upload) get the extractor's photo size, an in-memory dataset of images no larger
    than 32x32 (CIFAR-10) its own size (features.base.SMALL_SIDE). A folder is never peeked
    at: `cbir index` creates a collection for files the same way, so indexing a folder and
    benchmarking it describe its images alike. The size then belongs to the extractor's
    parameters, recorded with a collection: every later batch and query uses it."""
    if isinstance(source, np.ndarray) and source.size:
        return extractor.settle_image_size(max(source.shape[1:3]))
    return extractor.settle_image_size()


def transform(extractor: Extractor, images: np.ndarray) -> np.ndarray:
    """The default describer: in this process."""
    return extractor.transform(images)


def describe(
    extractor: Extractor,
    images: np.ndarray,
    batch_size: int = DEFAULT_BATCH,
    label: str = "",
    queries: bool = False,
) -> np.ndarray:
    """Vectors for a stack of images (queries through `transform_query`), computed batch by
    batch to bound memory; each batch is resized to the extractor's input size first."""
    out = np.empty((len(images), extractor.dim), dtype=np.float32)
    vectors = extractor.transform_query if queries else extractor.transform
    with progress_bar(len(images), f"describe {label}".strip()) as bar:
        for start in range(0, len(images), batch_size):
            stop = start + batch_size
            out[start:stop] = vectors(resize_batch(images[start:stop], extractor.input_size))
            bar.update(min(stop, len(images)) - start)
    return out


def describe_index(
    extractor: Extractor,
    images: np.ndarray,
    label_names: list[str | None],
    describer: Describer = transform,
) -> np.ndarray:
    """Vectors of images to index. An extractor that describes index images with their
    labels (class fusion) gets each label's class number, -1 (predicted instead) for an
    unlabelled image or a class it does not know; any other goes through `describer`."""
    if not extractor.uses_index_labels:
        return describer(extractor, images)
    number = {name: i for i, name in enumerate(extractor.class_names or [])}
    classes = np.array([number.get(name, -1) for name in label_names], dtype=np.int64)
    return extractor.transform_index(images, classes)


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0  # ids already indexed whose file now has other content
    skipped_known: int = 0  # unchanged, or the same content as an image already indexed
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    total_files: int = 0
    describe_seconds: float = 0.0  # of the run's time, spent describing images


@dataclass
class _Batch:
    """One transaction's worth of work, prepared by the background thread."""

    size: int  # source items it covers
    records: list[ImageRecord] = field(default_factory=list)
    images: np.ndarray | None = None
    blobs: list[bytes] = field(default_factory=list)
    updates: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


# --- folders ----------------------------------------------------------------------------------
class ContentPlan:
    """Which files to index, by id (relative path) and content (sha256):

    - same id, same content: unchanged, skipped;
    - same id, other content: the file changed, its entry is replaced (an update);
    - new id, content already indexed (or met earlier in this run): the same image under
      another name, skipped, so the same file twice is one entry;
    - new id, new content: added.
    """

    def __init__(self, checksums: dict[str, str]) -> None:
        self._by_id = dict(checksums)
        self._known = set(checksums.values())

    def decide(self, image_id: str, sha256: str) -> str | None:
        """What to do with a file: "add", "update" or None (skip). A file that is not skipped
        counts as indexed for the files after it."""
        old = self._by_id.get(image_id)
        if old == sha256 or (old is None and sha256 in self._known):
            return None
        self._by_id[image_id] = sha256
        self._known.add(sha256)
        return "add" if old is None else "update"


def index_folder(
    folder: Path,
    collection: Collection,
    batch_size: int = DEFAULT_BATCH,
    strict: bool = False,
    on_batch: Callable[[IndexReport], None] | None = None,
    describer: Describer | None = None,
) -> IndexReport:
    """Add the images of `folder` that the collection does not hold yet (see ContentPlan).

    Commits batch by batch (at most `batch_size` images, and at most BATCH_PIXELS decoded
    pixels), so an interrupted run keeps what it committed and a re-run resumes.
    Unreadable images are skipped with a warning, or stop the run with `strict` (after every
    batch before the one holding the bad file has committed). `describer` computes the
    vectors (default: `transform`, in this process).
    """
    entries = scan_folder(folder)
    report = IndexReport(total_files=len(entries))
    plan = ContentPlan(collection.checksums())
    size = collection.extractor.input_size or DEFAULT_SIZE
    limits = DecodeLimits.from_env()
    batch_size = max(1, min(batch_size, BATCH_PIXELS // (size[0] * size[1])))
    batches = (
        _folder_batch(entries[start : start + batch_size], plan, size, limits, strict)
        for start in range(0, len(entries), batch_size)
    )
    return _commit_all(batches, collection, report, on_batch, describer)


def _folder_batch(
    part: list[FolderEntry],
    plan: ContentPlan,
    size: tuple[int, int],
    limits: DecodeLimits,
    strict: bool,
) -> _Batch:
    batch = _Batch(size=len(part))
    chosen: list[tuple[FolderEntry, str, bytes, str]] = []  # entry, sha256, bytes, action
    for entry in part:
        try:
            data = _read_file(entry.path, limits)
        except (OSError, ImageDecodeError) as error:
            _unreadable(batch, entry.path, _why(entry.path, error), strict)
            continue
        digest = sha256_bytes(data)
        action = plan.decide(entry.id, digest)
        if action is None:
            batch.skipped += 1
        else:
            chosen.append((entry, digest, data, action))
    # One decoding thread: this one. The committing thread is the other; more threads only
    # fight over the GIL (measured: 2 workers cost 28% more CPU for 32x32 PNGs).
    decoded = decode_many(
        [c[2] for c in chosen], size=size, workers=1, names=[str(c[0].path) for c in chosen],
        limits=limits,
    )  # fmt: skip
    for position, why in decoded.failures:
        _unreadable(batch, chosen[position][0].path, why, strict)
    kept = [chosen[p] for p in decoded.ok]
    batch.records = [
        ImageRecord(entry.id, str(entry.path.resolve()), entry.label, digest)
        for entry, digest, _, _ in kept
    ]
    batch.updates = sum(action == "update" for *_, action in kept)
    batch.images = decoded.images
    return batch


def _read_file(path: Path, limits: DecodeLimits) -> bytes:
    """The file's bytes; an oversized file is refused before it is read."""
    size = os.stat(path).st_size
    if size > limits.max_bytes:
        raise ImageDecodeError(
            f"{path}: {size:,} bytes is over the {limits.max_bytes:,}-byte limit"
        )
    return path.read_bytes()


def _why(path: Path, error: Exception) -> str:
    if isinstance(error, ImageDecodeError):
        return str(error)
    return f"{path}: cannot read file ({getattr(error, 'strerror', None) or error})"


def _unreadable(batch: _Batch, path: Path, why: str, strict: bool) -> None:
    if strict:
        raise CbirError(f"{why} (--strict stops at the first unreadable image)")
    log.warning("skipping %s", why)
    batch.failed.append((str(path), why))


# --- in-memory datasets -----------------------------------------------------------------------
def index_dataset(
    dataset: Dataset,
    collection: Collection,
    batch_size: int = DEFAULT_BATCH,
    describer: Describer | None = None,
    store_images: bool = True,
) -> IndexReport:
    """Add an in-memory dataset (CIFAR-10, or a folder a benchmark decoded) to a collection.
    Each image keeps its file's path when it has one, else (with `store_images`) a PNG copy
    stored in the collection so the web app can show it. Idempotent by id: a dataset's ids
    name fixed images."""
    # Images of another size are resized batch by batch, as decoding would resize them (CIFAR-10
    # at an ImageNet network's 224x224 would not fit in memory whole).
    size = collection.extractor.input_size
    report = IndexReport(total_files=len(dataset))
    known = collection.known_ids()
    label_names = dataset.label_names()

    def prepare(start: int) -> _Batch:
        stop = min(start + batch_size, len(dataset))
        fresh = [i for i in range(start, stop) if dataset.ids[i] not in known]
        batch = _Batch(size=stop - start, skipped=(stop - start) - len(fresh))
        original = dataset.images[fresh]
        batch.images = resize_batch(original, size)
        height, width = dataset.images.shape[1:3]
        if dataset.paths:
            paths = [dataset.paths[i] for i in fresh]
            digests = [sha256_bytes(Path(path).read_bytes()) for path in paths]
            height = width = None  # the file's own size is not the decoded one
        else:
            paths = [None] * len(fresh)
            if store_images:  # the image as it is, not as the extractor sees it
                batch.blobs = [png_bytes(image) for image in original]
            # without a stored copy, the pixels themselves are the content
            contents = batch.blobs or [image.tobytes() for image in original]
            digests = [sha256_bytes(content) for content in contents]
        batch.records = [
            ImageRecord(dataset.ids[i], path, label_names[i], digest, width, height)
            for i, path, digest in zip(fresh, paths, digests, strict=True)
        ]
        return batch

    batches = (prepare(start) for start in range(0, len(dataset), batch_size))
    return _commit_all(batches, collection, report, None, describer)


# --- the shared second stage ------------------------------------------------------------------
def _commit_all(
    batches: Iterable[_Batch],
    collection: Collection,
    report: IndexReport,
    on_batch: Callable[[IndexReport], None] | None,
    describer: Describer | None,
) -> IndexReport:
    """Describe and commit each prepared batch, while the next ones are prepared."""
    describer = describer or transform
    with progress_bar(report.total_files, "index") as bar:
        for batch in prefetched(batches, PREFETCH):
            if batch.records:
                labels = [record.label for record in batch.records]
                started = time.perf_counter()
                vectors = describe_index(collection.extractor, batch.images, labels, describer)
                report.describe_seconds += time.perf_counter() - started
                collection.add(batch.records, vectors, blobs=batch.blobs, replace=batch.updates > 0)
            report.added += len(batch.records) - batch.updates
            report.updated += batch.updates
            report.skipped_known += batch.skipped
            report.failed += batch.failed
            bar.update(batch.size)
            if on_batch:
                on_batch(report)
    return report


def prefetched(items: Iterable[T], depth: int = PREFETCH) -> Iterator[T]:
    """Yield `items`, produced up to `depth` ahead by a background thread. An exception in
    the producer is raised here, at the item it replaced; leaving the loop early stops the
    producer before this generator returns."""
    slots: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(kind: str, value: object) -> bool:
        while not stop.is_set():
            try:
                slots.put((kind, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer("item", item):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            offer("error", error)
            return
        offer("end", None)

    worker = threading.Thread(target=produce, name="cbir-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value  # type: ignore[misc]
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
