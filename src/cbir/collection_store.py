"""A collection's durable side: its folder (see cbir.manifest for the layout), its database of
image rows, vectors and stored image bytes, and the writer lock. What is searched is built from
it by cbir.live_index; cbir.collection puts the two together.

Durability: an add or delete is one SQLite transaction (rows, vectors, bytes and the generation
counter together), synced before it returns; the manifest is then rewritten atomically (temp
file, fsync, rename). A crash loses at most the transaction in flight; a manifest left behind
by one names an older generation, and the next writer rewrites it.

Writers: `open(writer=True)` and `create` take the lock for the store's lifetime (an indexing
run); a plain `open` takes it only around each add or delete (the web server). Either way a
second writer waits up to `lock_timeout` seconds, then gets a CollectionBusyError naming the
holder. `open(read_only=True)` never takes the lock and cannot write.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cbir.database import (
    Database,
    chunks,
    delete_rows,
    insert_rows,
    read_state,
    read_vectors_of,
)
from cbir.errors import CbirError, CollectionError, DimensionMismatchError
from cbir.features import Extractor
from cbir.image_store import ImageStore, get_blob, put_blobs
from cbir.index import create_index, keeps_own_data
from cbir.index.base import check_vectors
from cbir.index.settings import settings_at_open, settings_for_new_collection
from cbir.locking import WriterLock, default_timeout
from cbir.manifest import (
    EXTRACTOR_DIR,
    LOCK_FILE,
    MANIFEST,
    METADATA,
    load_collection_extractor,
    new_manifest,
    read_manifest,
    timestamp,
)
from cbir.storage import atomic_write_json

# A writer that holds the lock for its lifetime rewrites the manifest at most this often (and
# when it closes): its counts are a summary, the database is the truth.
MANIFEST_EVERY_S = 5.0

# Told, after each commit and under the same lock, which ids the commit may have removed.
CommitFollower = Callable[[Sequence[str] | None], None]


@dataclass(frozen=True)
class ImageRecord:
    id: str
    path: str | None
    label: str | None
    sha256: str
    width: int | None = None
    height: int | None = None


class CollectionStore:
    """Opened by `CollectionStore.open` or made by `CollectionStore.create`, through
    `Collection.open` and `Collection.create` (which hold the defaults).

    Thread-safe: one re-entrant `mutex` guards the connection (and, shared with the live
    index, the index built from it)."""

    def __init__(
        self,
        folder: Path,
        manifest: dict[str, Any],
        extractor: Extractor,
        db: Database,
        lock: WriterLock | None,
        lock_timeout: float | None = None,
    ) -> None:
        """Use `create` or `open`. `lock`: None for a read-only store; held already by a
        writer that keeps it for its lifetime."""
        self.folder = folder
        self.manifest = manifest
        self.extractor = extractor
        self.dim: int = manifest["dim"]
        self.images = ImageStore(self.reading, self.writing)
        self.db = db
        self.lock = lock  # None: read-only
        self.lock_timeout = default_timeout() if lock_timeout is None else lock_timeout
        self.lifetime_writer = lock is not None and lock.held
        self.mutex = threading.RLock()
        self.follow_commit: CommitFollower = lambda removed: None  # the live index's catch-up
        self._manifest_written_at = time.monotonic()

    # --- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        folder: str | Path,
        extractor: Extractor,
        backend: str,
        metric: str,
        lock_timeout: float | None,
        backend_settings: dict[str, Any] | None,
    ) -> CollectionStore:
        """A new, empty collection, returned as its writer (holding the lock until closed).
        `backend_settings` are passed to the backend's constructor whenever the index is
        built (never secrets: they are stored in the manifest). A server backend is reached
        now, so an unreachable one fails before the collection exists."""
        folder = Path(folder)
        settings = settings_for_new_collection(backend, backend_settings or {})
        if not keeps_own_data(backend):
            create_index(backend, dim=extractor.dim, metric=metric, **settings).close()
            # (an unknown backend or bad settings fail before anything is written)
        _refuse_existing(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lock = _take_lock(folder, lock_timeout)
        try:
            _refuse_existing(folder)  # again: another writer may have made one meanwhile
            if keeps_own_data(backend):  # creates its index on the server
                given = backend_settings or {}  # given now: they beat the environment
                constructor_settings, _ = settings_at_open(backend, settings, folder, given)
                create_index(backend, extractor.dim, metric, **constructor_settings).close()
            extractor.save(folder / EXTRACTOR_DIR)
            db = Database(folder / METADATA)
            db.create_schema()
            manifest = new_manifest(folder, extractor, metric, backend, settings)
            # Last: a folder is a collection once its manifest exists, so a crash before
            # this line leaves a folder that the next `create` simply fills again.
            atomic_write_json(folder / MANIFEST, manifest)
        except BaseException:
            lock.release()
            raise
        return cls(folder, manifest, extractor, db, lock, lock_timeout)

    @classmethod
    def open(
        cls, folder: str | Path, read_only: bool, writer: bool, lock_timeout: float | None
    ) -> CollectionStore:
        """Open an existing collection. `writer=True` takes the writer lock until `close`;
        `read_only=True` never locks and refuses to write."""
        if read_only and writer:
            raise CbirError("a collection cannot be opened both read-only and as the writer")
        folder = Path(folder)
        read_manifest(folder)  # a clear error for a folder that is no collection
        lock = _take_lock(folder, lock_timeout) if writer else None
        try:
            manifest = read_manifest(folder)  # again: the writer that held the lock updated it
            extractor = load_collection_extractor(folder, manifest)
            db = _open_database(folder, read_only)
        except BaseException:
            if lock:
                lock.release()
            raise
        if not read_only and lock is None:
            lock = WriterLock(folder / LOCK_FILE, str(folder))  # taken around each write
        store = cls(folder, manifest, extractor, db, lock, lock_timeout)
        if writer:
            store.write_manifest()  # repairs counts that a crashed writer left behind
        return store

    def close(self) -> None:
        """Closes the database; the lock stays held until `release_lock`."""
        if self.lifetime_writer:
            self.write_manifest()
        self.db.close()

    def release_lock(self) -> None:
        if self.lock is not None:
            while self.lock.held:
                self.lock.release()

    # --- writing -----------------------------------------------------------------------------
    def check_not_busy(self) -> None:
        """CollectionBusyError now, without waiting, when another process holds the writer
        lock: a caller with costly work to do before a write (describing an upload) asks
        first. The write itself takes the lock again."""
        if self.lock is None:
            raise CollectionError(f"{self.folder} was opened read-only")
        with self.lock.hold(0):
            pass

    def add(
        self,
        records: Sequence[ImageRecord],
        vectors: np.ndarray,
        *,
        blobs: Iterable[bytes] = (),
        replace: bool = False,
    ) -> int:
        """Add images with their vectors, and the bytes of those that have no file of their
        own (`blobs`), in one transaction; returns how many images were added. An id already
        in the collection is an error (nothing is added), unless `replace` is set: then its
        old entry gives way to the new one."""
        records, blobs = list(records), list(blobs)
        if not records and not blobs:
            return 0
        vectors = self.check_vectors(vectors, "vectors")
        if len(records) != len(vectors):
            raise DimensionMismatchError(f"{len(records)} records but {len(vectors)} vectors")
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            raise CollectionError("the same id appears twice in one add; nothing was added")
        added_at = timestamp()
        rows = [(r.id, r.path, r.label, r.sha256, r.width, r.height, added_at) for r in records]
        with self.writing(removed=ids if replace else None) as conn:
            if replace:
                delete_rows(conn, ids)
            put_blobs(conn, blobs)
            try:
                insert_rows(conn, rows, ids, vectors)
            except sqlite3.IntegrityError:
                present = _existing_ids(conn, ids)
                raise CollectionError(
                    f"{len(present)} image id(s) already in the collection, nothing was added: "
                    f"{', '.join(map(repr, present[:5]))}"
                ) from None
        return len(records)

    def delete(self, ids: Iterable[str]) -> int:
        """Remove images (unknown ids are ignored) with their vectors and the stored bytes no
        other image uses; returns how many were removed."""
        if isinstance(ids, str | bytes):
            raise CbirError("delete takes a list of ids, not a single string")
        ids = list(ids)
        with self.writing(removed=ids) as conn:
            return delete_rows(conn, ids)

    @contextmanager
    def writing(self, removed: Sequence[str] | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction under the writer lock; afterwards the manifest and the live
        index (`follow_commit`) catch up with what was committed (`removed`: the ids the
        transaction may delete)."""
        if self.lock is None:
            raise CollectionError(f"{self.folder} was opened read-only")
        with self.mutex, self.lock.hold(self.lock_timeout):
            with self.db.transaction() as conn:
                yield conn
            due = time.monotonic() - self._manifest_written_at >= MANIFEST_EVERY_S
            if due or not self.lifetime_writer:
                self.write_manifest()
            self.follow_commit(removed)

    def write_manifest(self) -> None:
        with self.db.snapshot() as conn:
            count = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            generation = read_state(conn)[0]
        if self.manifest.get("generation") == generation and self.manifest["counts"] == {
            "images": count
        }:
            return
        self.manifest["counts"] = {"images": count}
        self.manifest["generation"] = generation
        self.manifest["updated"] = timestamp()
        atomic_write_json(self.folder / MANIFEST, self.manifest)
        self._manifest_written_at = time.monotonic()

    # --- reading -----------------------------------------------------------------------------
    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A read transaction. A read-only store reads through the calling thread's own
        connection, so a read never waits for the mutex (which a search holds for its whole
        pass over the index); a writer's reads see its own transaction."""
        if self.db.read_only:
            with self.db.thread_snapshot() as conn:
                yield conn
            return
        with self.mutex, self.db.snapshot() as conn:
            yield conn

    def __len__(self) -> int:
        with self.reading() as conn:
            return conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def checksums(self) -> dict[str, str]:
        """id -> sha256 of every image."""
        with self.reading() as conn:
            return dict(conn.execute("SELECT id, sha256 FROM images"))

    def known_checksums(self) -> set[str]:
        return set(self.checksums().values())

    def known_ids(self) -> set[str]:
        with self.reading() as conn:
            return {row[0] for row in conn.execute("SELECT id FROM images")}

    def find_sha256(self, digest: str) -> tuple[str, str | None] | None:
        """(id, label) of an indexed image with exactly these bytes, or None."""
        with self.reading() as conn:
            row = conn.execute(
                "SELECT id, label FROM images WHERE sha256 = ? ORDER BY id LIMIT 1", (digest,)
            ).fetchone()
        return (row[0], row[1]) if row else None

    def sample(self, n: int) -> list[tuple[str, str | None]]:
        """Up to n random (id, label) pairs. Random rowids hit the primary key; a few misses
        (deleted rows) only shorten the list."""
        with self.reading() as conn:
            top = conn.execute("SELECT MAX(rowid) FROM images").fetchone()[0]
            if top is None:
                return []
            rows = conn.execute(
                "SELECT id, label FROM images WHERE rowid IN "
                "(SELECT abs(random()) % ? + 1 FROM images LIMIT ?) ORDER BY random() LIMIT ?",
                (top, 3 * n, n),
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def get(self, image_id: str) -> ImageRecord | None:
        with self.reading() as conn:
            row = conn.execute(
                "SELECT id, path, label, sha256, width, height FROM images WHERE id = ?",
                (image_id,),
            ).fetchone()
        return ImageRecord(*row) if row else None

    def image_bytes(self, image_id: str) -> bytes | None:
        """The bytes of an indexed image: the stored copy, else its original file; None when
        the id is unknown or the original file has gone."""
        record = self.get(image_id)
        if record is None:
            return None
        with self.reading() as conn:
            stored = get_blob(conn, record.sha256)
        if stored is not None:
            return stored
        if record.path and Path(record.path).is_file():
            return Path(record.path).read_bytes()
        return None

    def vectors_of(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of `ids`, in that order, exactly as they were indexed; a
        CollectionError names an id that has none."""
        found: dict[str, np.ndarray] = {}
        with self.reading() as conn:
            for part_ids, vectors in read_vectors_of(conn, ids, self.dim):
                found.update(zip(part_ids, vectors, strict=True))
        missing = [i for i in ids if i not in found]
        if missing:
            raise CollectionError(f"no vector for {len(missing)} id(s), e.g. {missing[0]!r}")
        return np.stack([found[i] for i in ids]) if ids else np.zeros((0, self.dim), np.float32)

    def labels(self) -> dict[str, str | None]:
        """id -> label of every image (None when unlabelled)."""
        with self.reading() as conn:
            return dict(conn.execute("SELECT id, label FROM images"))

    def label_counts(self) -> dict[str | None, int]:
        with self.reading() as conn:
            return dict(conn.execute("SELECT label, COUNT(*) FROM images GROUP BY label"))

    def metadata_for(self, ids: set[str]) -> dict[str, tuple[str | None, str | None]]:
        """id -> (label, path) of those of `ids` the database holds."""
        out: dict[str, tuple[str | None, str | None]] = {}
        with self.reading() as conn:
            for part in chunks(list(ids)):
                marks = ",".join("?" * len(part))
                query = f"SELECT id, label, path FROM images WHERE id IN ({marks})"
                for image_id, label, path in conn.execute(query, part):
                    out[image_id] = (label, path)
        return out

    def check_vectors(self, vectors: np.ndarray, what: str) -> np.ndarray:
        try:
            return check_vectors(vectors, self.dim, what=what)
        except DimensionMismatchError as error:
            raise DimensionMismatchError(
                f"{error}. {self.folder} was built with extractor "
                f"{self.manifest['extractor']['name']!r} ({self.dim}-d): describe images with "
                "the collection's own extractor"
            ) from None

    def stats(self) -> dict[str, Any]:
        with self.reading() as conn:
            count = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            stored = conn.execute("SELECT COUNT(*) FROM blobs").fetchone()[0]
            labels = dict(conn.execute("SELECT label, COUNT(*) FROM images GROUP BY label"))
            generation = read_state(conn)[0]
        return {
            "count": count,
            "stored_images": stored,
            "generation": generation,
            "extractor": self.manifest["extractor"],
            "dim": self.dim,
            "metric": self.manifest["metric"],
            "backend": self.manifest["backend"]["name"],
            "labels": {str(k): v for k, v in sorted(labels.items(), key=str)},
            "created": self.manifest["created"],
            "updated": self.manifest["updated"],
        }


def _open_database(folder: Path, read_only: bool) -> Database:
    if not (folder / METADATA).is_file():
        raise CollectionError(f"{folder}: {METADATA} is missing; the collection is damaged")
    db = Database(folder / METADATA, read_only=read_only)
    try:
        read_state(db.conn)
    except sqlite3.Error as error:
        db.close()
        raise CollectionError(
            f"{folder}: {METADATA} is unreadable ({error}); run `cbir verify` for details"
        ) from None
    return db


def _take_lock(folder: Path, timeout: float | None) -> WriterLock:
    lock = WriterLock(folder / LOCK_FILE, str(folder))
    lock.acquire(default_timeout() if timeout is None else timeout)
    return lock


def _refuse_existing(folder: Path) -> None:
    if (folder / MANIFEST).exists():
        raise CollectionError(f"{folder} already holds a collection; open it instead")


def _existing_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> list[str]:
    found: list[str] = []
    for part in chunks(list(ids)):
        marks = ",".join("?" * len(part))
        found += [r[0] for r in conn.execute(f"SELECT id FROM images WHERE id IN ({marks})", part)]
    return sorted(found)
