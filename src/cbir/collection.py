"""A collection: everything needed to search a set of images again later, in one folder.

Two rooms, put together here behind one object:
- cbir.collection_store: the durable side: manifest, extractor state, the database of image
  rows, vectors and stored bytes, the writer lock; every add and delete (see cbir.manifest for
  the folder's layout);
- cbir.live_index: the search index built from that database and kept in step with it, in
  this process or on a server backend (Elasticsearch, Milvus).
A search asks the live index for ids and scores and the store for what it holds about them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cbir.backend_sync import SyncReport
from cbir.collection_store import CollectionStore, ImageRecord
from cbir.errors import CollectionError
from cbir.features import Extractor
from cbir.index import DEFAULT_BACKEND, VectorIndex
from cbir.live_index import LiveIndex
from cbir.manifest import LOCK_FILE, MANIFEST, METADATA

# the folder's file names are part of what callers see of a collection
__all__ = [
    "LOCK_FILE",
    "MANIFEST",
    "METADATA",
    "Collection",
    "Hit",
    "ImageRecord",
]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    label: str | None
    path: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Collection:
    """Open with `Collection.open(folder)` or make one with `Collection.create(...)`.

    Thread-safe: one re-entrant mutex (the store's) guards the index and the shared database
    connection; a read-only collection reads rows through each thread's own connection."""

    def __init__(self, store: CollectionStore, backend_options: dict[str, Any] | None = None):
        """Use `create` or `open`. `backend_options`: connection settings for this run only
        (never stored)."""
        self._store = store
        self._live = LiveIndex(store, backend_options)
        store.follow_commit = self._live.follow_commit  # a commit reaches the index at once
        self.folder = store.folder
        self.manifest = store.manifest
        self.extractor = store.extractor
        self.dim = store.dim
        self.images = store.images
        self.keeps_vectors_on_server = self._live.keeps_vectors_on_server
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        folder: str | Path,
        extractor: Extractor,
        backend: str = DEFAULT_BACKEND,
        metric: str = "cosine",
        lock_timeout: float | None = None,
        backend_settings: dict[str, Any] | None = None,
    ) -> Collection:
        """A new, empty collection, returned as its writer (see CollectionStore.create)."""
        return cls(
            CollectionStore.create(folder, extractor, backend, metric, lock_timeout,
                                   backend_settings)
        )  # fmt: skip

    @classmethod
    def open(
        cls,
        folder: str | Path,
        read_only: bool = False,
        writer: bool = False,
        lock_timeout: float | None = None,
        backend_options: dict[str, Any] | None = None,
    ) -> Collection:
        """Open an existing collection. `writer=True` takes the writer lock until `close`;
        `read_only=True` never locks and refuses to write. `backend_options` override the
        stored connection settings for this run (e.g. another Elasticsearch URL)."""
        store = CollectionStore.open(folder, read_only, writer, lock_timeout)
        return cls(store, backend_options)

    @classmethod
    def open_or_create(
        cls,
        folder: str | Path,
        extractor_factory: Callable[[], Extractor],
        backend: str = DEFAULT_BACKEND,
        lock_timeout: float | None = None,
        backend_settings: dict[str, Any] | None = None,
    ) -> Collection:
        """The collection in `folder` as its writer, created first if there is none (with
        `backend` and `backend_settings`; an existing one keeps its own)."""
        folder = Path(folder)
        if not (folder / MANIFEST).exists():
            try:
                return cls.create(
                    folder, extractor_factory(), backend, lock_timeout=lock_timeout,
                    backend_settings=backend_settings,
                )  # fmt: skip
            except CollectionError:
                if not (folder / MANIFEST).exists():
                    raise  # else another writer created it first: open theirs
        return cls.open(folder, writer=True, lock_timeout=lock_timeout)

    def close(self) -> None:
        with self._store.mutex:
            if self._closed:
                return
            self._closed = True
            self._store.close()
            self._live.close()
            # the lock last: the next writer finds the database and the index closed
            self._store.release_lock()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- searching: ids and scores from the live index, the rest from the store ---------------
    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """The k nearest images to each query vector, from the loaded snapshot (call `refresh`
        first to include the latest changes). An image deleted since the snapshot is left
        out, so a row may hold fewer than k hits until the next refresh."""
        ids, scores, meta = self._search(vectors, k)
        return [
            [Hit(i, float(s), *meta[i]) for i, s in zip(row, srow, strict=False) if i in meta]
            for row, srow in zip(ids, scores, strict=True)
        ]

    def rank_vectors(
        self, vectors: np.ndarray, k: int = 10
    ) -> tuple[list[list[str]], list[np.ndarray]]:
        """`search_vectors` as ids and float32 scores only, for many queries at once (a
        TREC run): the same search, without a Hit object per result."""
        ids, scores, meta = self._search(vectors, k)
        if all(i in meta for row in ids for i in row):
            return ids, list(scores)
        kept = [[c for c, i in enumerate(row) if i in meta] for row in ids]
        return [[row[c] for c in keep] for row, keep in zip(ids, kept, strict=True)], [
            srow[keep] for srow, keep in zip(scores, kept, strict=True)
        ]

    def _search(self, vectors: np.ndarray, k: int):
        """Top-k ids and scores from the index, and the metadata of the ids still present."""
        with self._store.mutex:
            queries = self._store.check_vectors(vectors, "queries")
            ids, scores = self.index.search(queries, k)
            meta = self._store.metadata_for({i for row in ids for i in row})
        return ids, scores, meta

    def search_images(self, images: np.ndarray, k: int = 10) -> list[list[Hit]]:
        return self.search_vectors(self.extractor.transform_query(images), k)

    # --- the live index (see LiveIndex) --------------------------------------------------------
    @property
    def index(self) -> VectorIndex:
        return self._live.index

    @property
    def generation(self) -> int:
        return self._live.generation

    def refresh(self) -> bool:
        return self._live.refresh()

    def start_from(self, other: Collection) -> None:
        """Search a copy of `other`'s loaded index (same folder), see LiveIndex.start_from."""
        self._live.start_from(other._live)

    def sync_server_index(self) -> SyncReport:
        return self._live.sync_server_index()

    def compact_server_index(self) -> None:
        self._live.compact_server_index()

    def drop_server_index(self) -> None:
        self._live.drop_server_index()

    # --- the store (see CollectionStore) -------------------------------------------------------
    def add(self, records: Sequence[ImageRecord], vectors: np.ndarray, **options: Any) -> int:
        """See CollectionStore.add (options: `blobs`, `replace`)."""
        return self._store.add(records, vectors, **options)

    def delete(self, ids: Iterable[str]) -> int:
        return self._store.delete(ids)

    def check_not_busy(self) -> None:
        self._store.check_not_busy()

    def __len__(self) -> int:
        return len(self._store)

    def checksums(self) -> dict[str, str]:
        return self._store.checksums()

    def known_checksums(self) -> set[str]:
        return self._store.known_checksums()

    def known_ids(self) -> set[str]:
        return self._store.known_ids()

    def find_sha256(self, digest: str) -> tuple[str, str | None] | None:
        return self._store.find_sha256(digest)

    def sample(self, n: int) -> list[tuple[str, str | None]]:
        return self._store.sample(n)

    def get(self, image_id: str) -> ImageRecord | None:
        return self._store.get(image_id)

    def image_bytes(self, image_id: str) -> bytes | None:
        return self._store.image_bytes(image_id)

    def vectors_of(self, ids: Sequence[str]) -> np.ndarray:
        return self._store.vectors_of(ids)

    def labels(self) -> dict[str, str | None]:
        return self._store.labels()

    def label_counts(self) -> dict[str | None, int]:
        return self._store.label_counts()

    def stats(self) -> dict[str, Any]:
        return self._store.stats()
