"""Keeping a server backend (Elasticsearch, Milvus) in step with a collection's database.

The collection's SQLite database stays the one source of truth; a server backend is a replica
that keeps its data between runs, so it is brought up to date, never rebuilt. The database
records, per backend location, the last vector row (seq) sent and the deletion counter seen:

- after each committed add, the rows above that seq are sent; after a delete, the deleted ids
  are removed (the writer knows them);
- anything else (a sync killed half-way, a delete by a process that died before removing it
  from the server, another cluster, someone editing the index by hand) shows up as a count
  that disagrees or an unexpected deletion counter, and is repaired by comparing the id lists.

Every step is idempotent (ids are deleted before they are sent again), so a sync interrupted
at any point is finished by the next one. Only a writer syncs, under the collection's lock.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cbir.database import Database, read_state, read_vectors, read_vectors_of
from cbir.index import VectorIndex

log = logging.getLogger(__name__)

SYNC_TABLE = """CREATE TABLE IF NOT EXISTS backend_sync (
    location TEXT PRIMARY KEY, seq INTEGER NOT NULL, deletions INTEGER NOT NULL,
    changed_at REAL
)"""
# `changed_at`: when a sync last sent or removed anything (unix time; NULL: unknown). A reader
# whose server gives eventually consistent reads (Milvus) reads without waiting for the
# server's clock when the last change is older than the server's staleness bound.
# Databases made before that column existed get it the first time a writer syncs.
ADD_CHANGED_AT = "ALTER TABLE backend_sync ADD COLUMN changed_at REAL"


@dataclass
class SyncReport:
    sent: int = 0
    removed: int = 0
    compared_ids: bool = False  # the id lists had to be compared


class BackendSync:
    """Brings `index`, which keeps its own data at `location`, in step with `db`."""

    def __init__(
        self, db: Database, index: VectorIndex, location: str, dim: int, keeps_lock: bool
    ) -> None:
        """`keeps_lock`: the caller holds the writer lock for its lifetime (an indexing run),
        so after one sync nothing but itself changes the database or the server."""
        self.db, self.index, self.location, self.dim = db, index, location, dim
        self.keeps_lock = keeps_lock
        self.trusted = False  # this object's last sync ran under a lock held ever since
        with db.transaction(bump=False) as conn:  # collections made before syncing existed
            conn.execute(SYNC_TABLE)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(backend_sync)")}
            if "changed_at" not in columns:
                conn.execute(ADD_CHANGED_AT)

    def run(self, deleted: Sequence[str] | None = None) -> SyncReport:
        """Send what the server is missing. `deleted`: the ids the caller's own last commit
        removed (they are removed from the server directly instead of comparing id lists).
        The caller holds the writer lock."""
        report = SyncReport()
        seq, seen_deletions, changed_at = recorded_sync(self.db, self.location)
        with self.db.snapshot() as conn:
            deletions = read_state(conn)[1]
            if seen_deletions is not None and deletions == seen_deletions + 1 and deleted:
                report.removed += self.index.delete(list(deleted))
                seen_deletions = deletions
            # Rows above the recorded seq may already be on the server (a sync killed before
            # it recorded), unless this process sent everything before them itself.
            unsure = not self.trusted and len(self.index) > 0
            for seqs, ids, vectors in read_vectors(conn, self.dim, seq):
                if unsure:
                    self.index.delete(ids)
                self.index.add(ids, vectors)
                report.sent += len(ids)
                seq = seqs[-1]
            count = conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            if deletions != seen_deletions or len(self.index) != count:
                self._compare_ids(conn, report)
        if report.sent or report.removed:
            changed_at = time.time()
        with self.db.transaction(bump=False) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO backend_sync (location, seq, deletions, changed_at) "
                "VALUES (?, ?, ?, ?)",
                (self.location, seq, deletions, changed_at),
            )
        self.trusted = self.keeps_lock
        if report.compared_ids or report.sent > 10_000:
            log.info("synced %s: %s", self.location, report)
        return report

    def _compare_ids(self, conn, report: SyncReport) -> None:
        """Make the server hold exactly the database's ids (vectors sent before are right:
        a replaced image's new row is always sent after its old id was removed)."""
        report.compared_ids = True
        live = {row[0] for row in conn.execute("SELECT id FROM vectors")}
        remote = set(self.index.ids())
        extra = sorted(remote - live)
        if extra:
            report.removed += self.index.delete(extra)
        missing = sorted(live - remote)
        for ids, vectors in read_vectors_of(conn, missing, self.dim):
            self.index.add(ids, vectors)
            report.sent += len(ids)


def recorded_sync(db: Database, location: str) -> tuple[int, int | None, float | None]:
    """(seq sent up to, deletion counter seen, when a sync last sent or removed anything, unix
    time) at `location`; (0, None, None) for a location never synced, and a None time where
    a cbir that did not record it synced last."""
    with db.snapshot() as conn:
        try:
            row = conn.execute(
                "SELECT seq, deletions, changed_at FROM backend_sync WHERE location = ?",
                (location,),
            ).fetchone()
        except sqlite3.OperationalError:  # a reader of a database made before that column
            return 0, None, None
    return (row[0], row[1], row[2]) if row else (0, None, None)


def last_server_change(db: Database, location: str) -> float | None:
    """When a sync last sent or removed anything at `location` (unix time), or None when
    unknown."""
    return recorded_sync(db, location)[2]
