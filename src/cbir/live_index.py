"""The search index of an open collection, built from its store and kept in step with it.

Readers: the index is built from the database on first use, in one read snapshot. `refresh()`
compares the database's generation with the one loaded (one tiny query) and, when it moved,
reads only the rows added since, plus the list of live ids when something was deleted, so a
long-running reader picks up new images without a restart. A writer's own commits reach the
index at once (`follow_commit`, called by the store under the writer lock).

Server backends (Elasticsearch, Milvus) keep their vectors between runs: the collection
connects to its own index there and a writer sends only what the server is missing, after each
commit and when it first uses the index (`cbir.backend_sync`); readers search the server as it
is, and leave out hits the database no longer holds. Connection settings that are not secrets
are kept in the manifest; see `cbir.index.settings` for credentials and precedence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cbir.backend_sync import BackendSync, SyncReport, last_server_change
from cbir.collection_store import CollectionStore
from cbir.database import read_state, read_vectors
from cbir.errors import CollectionError
from cbir.index import VectorIndex, create_index, keeps_own_data
from cbir.index.settings import settings_at_open
from cbir.locking import CollectionBusyError


class LiveIndex:
    """The index over every vector `store` has committed; guarded by the store's mutex."""

    def __init__(self, store: CollectionStore, backend_options: dict[str, Any] | None = None):
        """`backend_options`: connection settings for this run only (never stored)."""
        self.folder = store.folder
        self.manifest = store.manifest
        self.dim = store.dim
        self._db = store.db
        self._mutex = store.mutex
        self._lock = store.lock  # None: read-only
        self._lock_timeout = store.lock_timeout
        self._lifetime_writer = store.lifetime_writer
        # The in-memory index and what it holds: id -> seq of its vectors row, the highest
        # seq loaded, and the database state it reflects.
        self._index: VectorIndex | None = None
        self._backend_options = dict(backend_options or {})
        # The backend is a server (Elasticsearch, Milvus) holding the vectors between runs.
        self.keeps_vectors_on_server = keeps_own_data(self.manifest["backend"]["name"])
        self._sync: BackendSync | None = None  # for a backend that keeps its own data
        self._seqs: dict[str, int] = {}
        self._last_seq = 0
        self._generation, self._deletions = read_state(self._db.conn)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()

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

    def start_from(self, other: LiveIndex) -> None:
        """Hold a copy of `other`'s loaded index (another reader of the same folder) rather
        than read every vector from the database on first use; `refresh` catches up from
        the state that copy reflects. A server index (or none loaded yet): nothing to copy."""
        with other._mutex:
            if other._index is None or other.keeps_vectors_on_server:
                return
            twin = other._index.copy()
            seqs, last, state = dict(other._seqs), other._last_seq, other._generation
            deletions = other._deletions
        with self._mutex:
            self._index, self._seqs, self._last_seq = twin, seqs, last
            self._generation, self._deletions = state, deletions

    def follow_commit(self, removed: Sequence[str] | None) -> None:
        """Catch up with the store's own commit (the caller holds the mutex and the writer
        lock; `removed`: the ids the commit may have deleted)."""
        if self.keeps_vectors_on_server:
            self._sync_backend(removed)
        else:
            self._catch_up()

    # --- server backends ---------------------------------------------------------------------
    def sync_server_index(self) -> SyncReport:
        """Bring a server backend up to date now (what a writer does after each commit and
        when it first uses the index); waits for the writer lock like any write."""
        if not self.keeps_vectors_on_server:
            raise CollectionError(f"{self.folder} keeps its vectors in its own folder")
        if self._lock is None:
            raise CollectionError(f"{self.folder} was opened read-only")
        with self._mutex, self._lock.hold(self._lock_timeout):
            return self._sync_backend()

    def compact_server_index(self) -> None:
        """After a bulk load: the server seals, indexes and merges what was sent (Milvus waits
        until the new rows are served from indexed segments, Elasticsearch force-merges), so
        that searches run at the index's speed and recall."""
        if not self.keeps_vectors_on_server:
            raise CollectionError(f"{self.folder} keeps its vectors in its own folder")
        with self._mutex:
            self.index.compact()

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
        writer_busy = False
        if self._lock is not None:
            try:
                with self._lock.hold(0):  # never wait: readers must not stall
                    self._sync_backend()
                    return
            except CollectionBusyError:
                writer_busy = True
        self._index, location = self._new_index()
        if not writer_busy:
            # how long ago the server last changed tells the index whether its first read
            # must wait for the server to apply everything (Milvus); a busy writer may be
            # sending rows right now
            self._index.note_last_change(last_server_change(self._db, location))
        self._generation, self._deletions = read_state(self._db.conn)

    # --- an index held in this process -------------------------------------------------------
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
