"""A collection's SQLite database, `metadata.sqlite`: the one source of truth for its contents.

    images   id (primary key), path, label, sha256, width, height, added_at: one row per image
    vectors  seq (autoincrement: insertion order, never reused), id (unique), vector (float32,
             little-endian bytes, as the extractor gave it)
    blobs    sha256 (primary key), data: bytes of images that have no file of their own
    state    generation (+1 at every commit), deletions (+1 at every commit that removes rows)

Every change is one transaction over all four tables, so a crash (kill -9, power loss) loses at
most the transaction in flight and can never leave metadata without vectors or the reverse.
WAL journal: readers never block the writer nor wait for it, and a read transaction sees one
committed snapshot. synchronous=FULL: a commit is on disk when it returns. 16 KiB pages hold
several vectors or PNG thumbnails each (at 4 KiB a 2.3 KB thumbnail wastes half a page).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cbir.errors import CollectionError

PAGE_SIZE = 16384
BUSY_TIMEOUT_S = 30.0  # only checkpoints and WAL recovery make a connection wait
READ_CHUNK = 8192  # vectors fetched per round trip when loading
_PARAMS = 900  # stays under SQLite's bound-parameter limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    path TEXT,
    label TEXT,
    sha256 TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    added_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS images_sha256 ON images (sha256);
CREATE TABLE IF NOT EXISTS vectors (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO state VALUES ('generation', 0), ('deletions', 0);
"""


class Database:
    """One connection, in autocommit mode: every read or write goes through `snapshot` or
    `transaction`, which open and close the transaction explicitly. A read-only database
    also gives each thread a connection of its own (`thread_snapshot`)."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._thread = threading.local()
        self._thread_conns: list[sqlite3.Connection] = []
        self._thread_conns_lock = threading.Lock()
        try:
            if read_only:  # a reader can never write, and needs no write access to the file
                self.conn = self._connect_reader()
            else:
                self.conn = _connect(str(self.path))
                self.conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # new databases only
                self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as error:
            raise CollectionError(f"cannot open {self.path}: {error}") from None

    def create_schema(self) -> None:
        with self.transaction(bump=False) as conn:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    def _connect_reader(self) -> sqlite3.Connection:
        return _connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)

    def close(self) -> None:
        self.conn.close()
        with self._thread_conns_lock:
            for conn in self._thread_conns:
                conn.close()
            self._thread_conns.clear()

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state (inside a
        transaction already, that transaction's own view)."""
        if self.conn.in_transaction:
            yield self.conn
            return
        with _read_transaction(self.conn) as conn:
            yield conn

    @contextmanager
    def thread_snapshot(self) -> Iterator[sqlite3.Connection]:
        """`snapshot`, through the calling thread's own connection (read-only databases): a
        server's request threads read side by side, none queueing for a shared connection."""
        if not self.read_only:
            raise CollectionError(f"{self.path}: per-thread connections are for readers only")
        conn = getattr(self._thread, "conn", None)
        if conn is None:
            try:
                conn = self._connect_reader()
            except sqlite3.Error as error:
                raise CollectionError(f"cannot open {self.path}: {error}") from None
            with self._thread_conns_lock:
                self._thread_conns.append(conn)
            self._thread.conn = conn
        with _read_transaction(conn):
            yield conn

    @contextmanager
    def transaction(self, bump: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction that bumps the generation when it changed anything: all of it
        commits, or none."""
        if self.read_only:
            raise CollectionError(f"{self.path.parent} was opened read-only")
        self.conn.execute("BEGIN IMMEDIATE")
        before = self.conn.total_changes
        try:
            yield self.conn
            if bump and self.conn.total_changes != before:
                self.conn.execute("UPDATE state SET value = value + 1 WHERE key = 'generation'")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def generation(self) -> int:
        return read_state(self.conn)[0]


@contextmanager
def _read_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def _connect(target: str, uri: bool = False) -> sqlite3.Connection:
    return sqlite3.connect(
        target, uri=uri, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
    )


def read_state(conn: sqlite3.Connection) -> tuple[int, int]:
    """(generation, deletions)."""
    values = dict(conn.execute("SELECT key, value FROM state"))
    return values.get("generation", 0), values.get("deletions", 0)


# --- writing (inside `transaction`) -----------------------------------------------------------
def insert_rows(
    conn: sqlite3.Connection, rows: Sequence[tuple], ids: Sequence[str], vectors: np.ndarray
) -> None:
    """Image rows (id, path, label, sha256, width, height, added_at) and their vectors."""
    conn.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    little = np.ascontiguousarray(vectors, dtype="<f4")
    conn.executemany(
        "INSERT INTO vectors (id, vector) VALUES (?, ?)",
        zip(ids, (row.tobytes() for row in little), strict=True),
    )


def delete_rows(conn: sqlite3.Connection, ids: Iterable[str]) -> int:
    """Remove images and their vectors, and the stored bytes no remaining image uses;
    returns how many images were removed."""
    removed, shas = 0, set()
    for part in chunks(list(dict.fromkeys(ids))):
        marks = ",".join("?" * len(part))
        query = f"SELECT sha256 FROM images WHERE id IN ({marks})"
        shas.update(row[0] for row in conn.execute(query, part))
        removed += conn.execute(f"DELETE FROM images WHERE id IN ({marks})", part).rowcount
        conn.execute(f"DELETE FROM vectors WHERE id IN ({marks})", part)
    for part in chunks(sorted(shas)):
        marks = ",".join("?" * len(part))
        conn.execute(
            f"DELETE FROM blobs WHERE sha256 IN ({marks}) "
            "AND sha256 NOT IN (SELECT sha256 FROM images)",
            part,
        )
    if removed:
        conn.execute("UPDATE state SET value = value + 1 WHERE key = 'deletions'")
    return removed


# --- reading ----------------------------------------------------------------------------------
def read_vectors(
    conn: sqlite3.Connection, dim: int, after_seq: int = 0
) -> Iterator[tuple[list[int], list[str], np.ndarray]]:
    """(seqs, ids, vectors (n, dim) float32) in insertion order, READ_CHUNK rows at a time,
    for the rows added after `after_seq`."""
    cursor = conn.execute(
        "SELECT seq, id, vector FROM vectors WHERE seq > ? ORDER BY seq", (after_seq,)
    )
    while rows := cursor.fetchmany(READ_CHUNK):
        seqs, ids, blobs = zip(*rows, strict=True)
        yield list(seqs), list(ids), _as_matrix(blobs, dim)


def read_vectors_of(
    conn: sqlite3.Connection, ids: Sequence[str], dim: int
) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, vectors (n, dim) float32) of the given ids that have vectors, a chunk at a time."""
    for part in chunks(list(ids)):
        marks = ",".join("?" * len(part))
        rows = conn.execute(f"SELECT id, vector FROM vectors WHERE id IN ({marks})", part)
        found = rows.fetchall()
        if found:
            yield [row[0] for row in found], _as_matrix([row[1] for row in found], dim)


def _as_matrix(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    data = np.frombuffer(b"".join(blobs), dtype="<f4")
    if data.size != len(blobs) * dim:
        raise CollectionError(
            f"vectors in the database are not all {dim}-d; run `cbir verify` for details"
        )
    return data.reshape(len(blobs), dim).astype(np.float32)


def chunks(items: Sequence, size: int = _PARAMS) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
