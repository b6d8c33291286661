"""A collection on disk: everything needed to search a set of images again later.

    <folder>/manifest.json     schema version, extractor {name, params}, dim, metric, backend,
                               counts and the generation they describe, created / updated
    <folder>/extractor/        the extractor's parameters and learnt state (arrays + JSON)
    <folder>/metadata.sqlite   image rows, their vectors and stored image bytes: the source of
                               truth, changed one transaction at a time (see cbir.database)
    <folder>/writer.lock       held (fcntl.flock) by the one process allowed to write

Durability: an add or delete is one SQLite transaction (rows, vectors, bytes and the generation
counter together), synced before it returns; the manifest is then rewritten atomically (temp
file, fsync, rename). A crash loses at most the transaction in flight; a manifest left behind
by one names an older generation, and the next writer rewrites it.

Writers: `open(writer=True)` and `create` take the lock for the collection's lifetime (an
indexing run); a plain `open` takes it only around each add or delete (the web server). Either
way a second writer waits up to `lock_timeout` seconds, then gets a CollectionBusyError naming
the holder. `open(read_only=True)` never takes the lock and cannot write.

Readers: the search index is built from the database on first use, in one read snapshot.
`refresh()` compares the database's generation with the one loaded (one tiny query) and, when
it moved, reads only the rows added since, plus the list of live ids when something was
deleted, so a long-running reader picks up new images without a restart.

Server backends (Elasticsearch, Milvus) keep their vectors between runs: the collection
connects to its own index there and a writer sends only what the server is missing, after each
commit and when it first uses the index (`cbir.backend_sync`); readers search the server as it
is, and leave out hits the database no longer holds. Connection settings that are not secrets
are kept in the manifest; see `cbir.index.settings` for credentials and precedence.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cbir import __version__
from cbir.backend_sync import BackendSync, SyncReport
from cbir.database import (
    Database,
    chunks,
    delete_rows,
    insert_rows,
    read_state,
    read_vectors,
    read_vectors_of,
)
from cbir.errors import CbirError, CollectionError, DimensionMismatchError
from cbir.features import Extractor, load_extractor
from cbir.features.base import SMALL_SIDE
from cbir.image_store import ImageStore, get_blob, put_blobs
from cbir.index import DEFAULT_BACKEND, VectorIndex, create_index, keeps_own_data
from cbir.index.base import check_vectors
from cbir.index.settings import settings_at_open, settings_for_new_collection
from cbir.locking import CollectionBusyError, WriterLock, default_timeout
from cbir.storage import atomic_write_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
METADATA = "metadata.sqlite"
EXTRACTOR_DIR = "extractor"
LOCK_FILE = "writer.lock"
# A writer that holds the lock for its lifetime rewrites the manifest at most this often (and
# when it closes): its counts are a summary, the database is the truth.
MANIFEST_EVERY_S = 5.0


@dataclass(frozen=True)
class ImageRecord:
    id: str
    path: str | None
    label: str | None
    sha256: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    label: str | None
    path: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Collection:
    """Open with `Collection.open(folder)` or make one with `Collection.create(...)`.

    Thread-safe: one re-entrant mutex guards the index and the connection."""

    def __init__(
        self,
        folder: Path,
        manifest: dict[str, Any],
        extractor: Extractor,
        db: Database,
        lock: WriterLock | None,
        lock_timeout: float | None = None,
        backend_options: dict[str, Any] | None = None,
    ) -> None:
        """Use `create` or `open`. `lock`: None for a read-only collection; held already by
        a writer that keeps it for its lifetime. `backend_options`: connection settings for
        this run only (never stored)."""
        self.folder = folder
        self.manifest = manifest
        self.extractor = extractor
        self.dim: int = manifest["dim"]
        self.images = ImageStore(self._reading, self._writing)
        self._db = db
        self._lock = lock  # None: read-only
        self._lock_timeout = default_timeout() if lock_timeout is None else lock_timeout
        self._lifetime_writer = lock is not None and lock.held
        self._manifest_written_at = time.monotonic()
        self._closed = False
        self._mutex = threading.RLock()
        # The in-memory index and what it holds: id -> seq of its vectors row, the highest
        # seq loaded, and the database state it reflects.
        self._index: VectorIndex | None = None
        self._backend_options = dict(backend_options or {})
        # The backend is a server (Elasticsearch, Milvus) holding the vectors between runs.
        self.keeps_vectors_on_server = keeps_own_data(manifest["backend"]["name"])
        self._sync: BackendSync | None = None  # for a backend that keeps its own data
        self._seqs: dict[str, int] = {}
        self._last_seq = 0
        self._generation, self._deletions = read_state(db.conn)

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
            fitted = extractor.fit_record_.describe() if extractor.fit_record_ else None
            db = Database(folder / METADATA)
            db.create_schema()
            manifest = {
                "schema_version": SCHEMA_VERSION,
                "cbir_version": __version__,
                "extractor": _as_json(extractor.describe()),
                # what the extractor learnt is part of the collection: pinned by checksum
                "extractor_files": extractor_checksums(folder / EXTRACTOR_DIR),
                "fitted": fitted,
                "dim": extractor.dim,
                "metric": metric,
                "backend": {"name": backend, "settings": _as_json(settings)},
                "counts": {"images": 0},
                "generation": 0,
                "created": _now(),
                "updated": _now(),
            }
            # Last: a folder is a collection once its manifest exists, so a crash before
            # this line leaves a folder that the next `create` simply fills again.
            atomic_write_json(folder / MANIFEST, manifest)
        except BaseException:
            lock.release()
            raise
        return cls(folder, manifest, extractor, db, lock, lock_timeout)

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
        collection = cls(folder, manifest, extractor, db, lock, lock_timeout, backend_options)
        if writer:
            collection._write_manifest()  # repairs counts that a crashed writer left behind
        return collection

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
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            if self._lifetime_writer:
                self._write_manifest()
            self._db.close()
            if self._index is not None:
                self._index.close()
            if self._lock is not None:
                while self._lock.held:
                    self._lock.release()

    def sync_server_index(self) -> SyncReport:
        """Bring a server backend up to date now (what a writer does after each commit and
        when it first uses the index); waits for the writer lock like any write."""
        if not self.keeps_vectors_on_server:
            raise CollectionError(f"{self.folder} keeps its vectors in its own folder")
        if self._lock is None:
            raise CollectionError(f"{self.folder} was opened read-only")
        with self._mutex, self._lock.hold(self._lock_timeout):
            return self._sync_backend()

    def drop_server_index(self) -> None:
        """Delete this collection's index on its server (Elasticsearch, Milvus), for a
        collection that is being thrown away; the folder itself is left to the caller."""
        if not self.keeps_vectors_on_server:
            raise CollectionError(f"{self.folder} keeps its vectors in its own folder")
        with self._mutex:
            index = self._index or self._new_index()[0]
            index.drop()
            index.close()
            self._index = self._sync = None

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- writing -----------------------------------------------------------------------------
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
        vectors = self._check_vectors(vectors, "vectors")
        if len(records) != len(vectors):
            raise DimensionMismatchError(f"{len(records)} records but {len(vectors)} vectors")
        ids = [r.id for r in records]
        if len(set(ids)) != len(ids):
            raise CollectionError("the same id appears twice in one add; nothing was added")
        added_at = _now()
        rows = [(r.id, r.path, r.label, r.sha256, r.width, r.height, added_at) for r in records]
        with self._writing(removed=ids if replace else None) as conn:
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
        with self._writing(removed=ids) as conn:
            return delete_rows(conn, ids)

    @contextmanager
    def _writing(self, removed: Sequence[str] | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction under the writer lock; afterwards the manifest and the index
        catch up with what was committed (`removed`: the ids the transaction may delete)."""
        if self._lock is None:
            raise CollectionError(f"{self.folder} was opened read-only")
        with self._mutex, self._lock.hold(self._lock_timeout):
            with self._db.transaction() as conn:
                yield conn
            due = time.monotonic() - self._manifest_written_at >= MANIFEST_EVERY_S
            if due or not self._lifetime_writer:
                self._write_manifest()
            if self.keeps_vectors_on_server:
                self._sync_backend(removed)
            else:
                self._catch_up()

    def _write_manifest(self) -> None:
        with self._db.snapshot() as conn:
            count = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            generation = read_state(conn)[0]
        if self.manifest.get("generation") == generation and self.manifest["counts"] == {
            "images": count
        }:
            return
        self.manifest["counts"] = {"images": count}
        self.manifest["generation"] = generation
        self.manifest["updated"] = _now()
        atomic_write_json(self.folder / MANIFEST, self.manifest)
        self._manifest_written_at = time.monotonic()

    # --- the in-memory index -----------------------------------------------------------------
    @property
    def index(self) -> VectorIndex:
        """The search index over every committed vector, built on first use."""
        with self._mutex:
            if self._index is None:
                self._load_index()
            return self._index

    @property
    def generation(self) -> int:
        """The database generation this object reflects (see `refresh`)."""
        return self._generation

    def refresh(self) -> bool:
        """Pick up changes another process (or connection) committed; True when something
        changed. Cheap when nothing did: readers such as the web server call it before every
        read."""
        with self._mutex:
            if self._index is not None and not self.keeps_vectors_on_server:
                return self._catch_up()
            generation = self._db.generation()
            changed, self._generation = generation != self._generation, generation
            return changed

    def _new_index(self) -> tuple[VectorIndex, str]:
        """The backend's index, and the location of its data."""
        backend = self.manifest["backend"]
        settings, location = settings_at_open(
            backend["name"], backend.get("settings", {}), self.folder, self._backend_options
        )
        index = create_index(backend["name"], self.dim, self.manifest["metric"], **settings)
        return index, location

    def _sync_backend(self, removed: Sequence[str] | None = None) -> SyncReport:
        """Send the server what it is missing (the caller holds the writer lock)."""
        if self._sync is None:
            index, location = self._new_index()
            self._sync = BackendSync(self._db, index, location, self.dim, self._lifetime_writer)
            self._index = index
        report = self._sync.run(removed)
        self._generation, self._deletions = read_state(self._db.conn)
        return report

    def _connect_server_index(self) -> None:
        """A server backend's index, brought up to date first when this process may write
        and no other writer is busy (that one keeps the server up to date itself)."""
        if self._lock is not None:
            try:
                with self._lock.hold(0):  # never wait: readers must not stall
                    self._sync_backend()
                    return
            except CollectionBusyError:
                pass
        self._index, _ = self._new_index()
        self._generation, self._deletions = read_state(self._db.conn)

    def _load_index(self) -> None:
        if self.keeps_vectors_on_server:
            self._connect_server_index()
            return
        index, _ = self._new_index()
        seqs: dict[str, int] = {}
        last = 0
        with self._db.snapshot() as conn:
            generation, deletions = read_state(conn)
            for part_seqs, ids, vectors in read_vectors(conn, self.dim):
                index.add(ids, vectors)
                seqs.update(zip(ids, part_seqs, strict=True))
                last = part_seqs[-1]
        self._index, self._seqs, self._last_seq = index, seqs, last
        self._generation, self._deletions = generation, deletions

    def _catch_up(self) -> bool:
        """Apply to the loaded index what was committed since it was loaded."""
        if self._index is None:
            self._generation, self._deletions = read_state(self._db.conn)
            return False
        if self._db.generation() == self._generation:
            return False
        try:
            with self._db.snapshot() as conn:
                generation, deletions = read_state(conn)
                if deletions != self._deletions:
                    live = dict(conn.execute("SELECT id, seq FROM vectors"))
                    gone = [i for i, seq in self._seqs.items() if live.get(i) != seq]
                    self._index.delete(gone)
                    for image_id in gone:
                        del self._seqs[image_id]
                for seqs, ids, vectors in read_vectors(conn, self.dim, self._last_seq):
                    self._index.add(ids, vectors)
                    self._seqs.update(zip(ids, seqs, strict=True))
                    self._last_seq = seqs[-1]
        except BaseException:
            self._index = None  # half caught up: rebuilt from scratch on next use
            raise
        self._generation, self._deletions = generation, deletions
        return True

    # --- reading -----------------------------------------------------------------------------
    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._mutex, self._db.snapshot() as conn:
            yield conn

    def __len__(self) -> int:
        with self._reading() as conn:
            return conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def checksums(self) -> dict[str, str]:
        """id -> sha256 of every image."""
        with self._reading() as conn:
            return dict(conn.execute("SELECT id, sha256 FROM images"))

    def known_checksums(self) -> set[str]:
        return set(self.checksums().values())

    def known_ids(self) -> set[str]:
        with self._reading() as conn:
            return {row[0] for row in conn.execute("SELECT id FROM images")}

    def find_sha256(self, digest: str) -> tuple[str, str | None] | None:
        """(id, label) of an indexed image with exactly these bytes, or None."""
        with self._reading() as conn:
            row = conn.execute(
                "SELECT id, label FROM images WHERE sha256 = ? ORDER BY id LIMIT 1", (digest,)
            ).fetchone()
        return (row[0], row[1]) if row else None

    def sample(self, n: int) -> list[tuple[str, str | None]]:
        """Up to n random (id, label) pairs. Random rowids hit the primary key; a few misses
        (deleted rows) only shorten the list."""
        with self._reading() as conn:
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
        with self._reading() as conn:
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
        with self._reading() as conn:
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
        with self._reading() as conn:
            for part_ids, vectors in read_vectors_of(conn, ids, self.dim):
                found.update(zip(part_ids, vectors, strict=True))
        missing = [i for i in ids if i not in found]
        if missing:
            raise CollectionError(f"no vector for {len(missing)} id(s), e.g. {missing[0]!r}")
        return np.stack([found[i] for i in ids]) if ids else np.zeros((0, self.dim), np.float32)

    def labels(self) -> dict[str, str | None]:
        """id -> label of every image (None when unlabelled)."""
        with self._reading() as conn:
            return dict(conn.execute("SELECT id, label FROM images"))

    def label_counts(self) -> dict[str | None, int]:
        with self._reading() as conn:
            return dict(conn.execute("SELECT label, COUNT(*) FROM images GROUP BY label"))

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
        with self._mutex:
            queries = self._check_vectors(vectors, "queries")
            ids, scores = self.index.search(queries, k)
            meta = self._metadata_for({i for row in ids for i in row})
        return ids, scores, meta

    def search_images(self, images: np.ndarray, k: int = 10) -> list[list[Hit]]:
        return self.search_vectors(self.extractor.transform_query(images), k)

    def _metadata_for(self, ids: set[str]) -> dict[str, tuple[str | None, str | None]]:
        out: dict[str, tuple[str | None, str | None]] = {}
        with self._reading() as conn:
            for part in chunks(list(ids)):
                marks = ",".join("?" * len(part))
                query = f"SELECT id, label, path FROM images WHERE id IN ({marks})"
                for image_id, label, path in conn.execute(query, part):
                    out[image_id] = (label, path)
        return out

    def _check_vectors(self, vectors: np.ndarray, what: str) -> np.ndarray:
        try:
            return check_vectors(vectors, self.dim, what=what)
        except DimensionMismatchError as error:
            raise DimensionMismatchError(
                f"{error}. {self.folder} was built with extractor "
                f"{self.manifest['extractor']['name']!r} ({self.dim}-d): describe images with "
                "the collection's own extractor"
            ) from None

    def stats(self) -> dict[str, Any]:
        with self._reading() as conn:
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


def _as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value))


def extractor_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file of a saved extractor (parameters, learnt state, fit record)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


def load_collection_extractor(folder: Path, manifest: dict[str, Any]) -> Extractor:
    """The collection's extractor, checked against what its manifest promises."""
    pinned = manifest.get("extractor_files")  # absent in collections made before it was kept
    if pinned is not None:
        try:
            found = extractor_checksums(folder / EXTRACTOR_DIR)
        except OSError as error:
            raise CollectionError(f"{folder}: {EXTRACTOR_DIR}/ is unreadable ({error})") from None
        changed = sorted(name for name in pinned.keys() | found.keys()
                         if pinned.get(name) != found.get(name))  # fmt: skip
        if changed:
            raise CollectionError(
                f"{folder}: {EXTRACTOR_DIR}/ does not match its checksums in the manifest "
                f"({', '.join(changed)} missing, added or changed); the collection is damaged"
            )
    try:
        extractor = load_extractor(folder / EXTRACTOR_DIR)
    except CbirError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CollectionError(
            f"{folder}: the extractor state in {EXTRACTOR_DIR}/ is unreadable ({error})"
        ) from None
    promised = manifest["extractor"]
    if extractor.photo_side and not promised.get("params", {}).get("image_size"):
        # Written before an image size could be "auto" (0), the manifest names none, or 0:
        # its vectors were made at the 32x32 the pipeline then decoded every image to.
        extractor.settle_image_size(SMALL_SIDE)
        promised = {**promised, "params": {**promised.get("params", {}), "image_size": SMALL_SIDE}}
    # an earlier manifest's form (sentinels, "a,b" lists, runtime knobs) read as today's
    promised = {**promised, "params": extractor.comparable_params(promised.get("params", {}))}
    if not _same_extractor(_as_json(extractor.describe()), promised):
        raise CollectionError(
            f"{folder}: {EXTRACTOR_DIR}/ holds {extractor.describe()} but the manifest says "
            f"{manifest['extractor']}; the collection is damaged"
        )
    if extractor.dim != manifest["dim"]:
        raise CollectionError(
            f"{folder}: extractor gives {extractor.dim}-d vectors but the manifest says "
            f"{manifest['dim']}; the collection is damaged"
        )
    return extractor


def _same_extractor(loaded: dict[str, Any], promised: dict[str, Any]) -> bool:
    """The loaded extractor is the one the manifest names. A manifest written before a
    parameter existed lacks it; the extractor then filled it in with the value that keeps the
    old behaviour (e.g. gch without `space` is the gray histogram), so only the manifest's own
    parameters are compared."""
    params = promised.get("params", {})
    return loaded["name"] == promised.get("name") and all(
        loaded["params"].get(key) == value for key, value in params.items()
    )


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise CollectionError(
            f"{folder} is not a collection (no {MANIFEST}); create one with `cbir index`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CollectionError(f"{path} is unreadable ({error})") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise CollectionError(
            f"{path} has schema version {version!r}; this cbir reads up to {SCHEMA_VERSION}. "
            "Upgrade cbir to open it"
        )
    if version < SCHEMA_VERSION:
        raise CollectionError(
            f"{path} has schema version {version}, from an older cbir that kept vectors in "
            "files; index its images again into a new collection folder"
        )
    return manifest
