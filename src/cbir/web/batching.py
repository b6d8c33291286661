"""Concurrent searches share one pass over the index: `SearchBatcher`.

An exact search of one query reads every stored vector (50,000 x 324 float32: 65 MB, about
6 ms of memory traffic on one core here), and the collection runs one search at a time. With
16 request threads searching, requests queued behind each other's passes over the same
memory. Here the searches that arrive while one runs wait for it and then go together, as one
matrix product (`Collection.search_vectors` with a batch): the vectors are read once for all
of them (16 queries: about 1 ms each instead of 6). A search that arrives alone runs at once.
BLAS releases the GIL, so the product runs on one core while the other serves the Python of
other requests.

No thread of its own: the first search to arrive leads; the searches that arrive meanwhile
queue, and when a batch is done its leader hands the lead to the oldest waiting search, which
runs the next batch with every search queued by then. A batch's depth (results asked for) is
its deepest query's, so deep pages (`offset`) go in batches of their own, never making a batch
of first pages costly. Each query gets its own rows: the first `depth` hits of the batch's
ranking, which are its ranking to that depth (ties go by id, whatever the depth).

A matrix product rounds differently from a matrix-vector product: a query's scores may differ
in the last bit or so (float32) from the same query searched alone; results whose scores agree
to about 1e-7 may swap places. A batch that fails (an error in one query) is searched again
one query at a time, so each query gets its own answer or its own error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cbir.collection import Collection, Hit

MAX_BATCH = 32  # queries in one product: past this the product costs about as much per query
SHALLOW_DEPTH = 128  # batches of first pages never carry a deeper page


@dataclass(eq=False)
class _Ask:
    vector: np.ndarray  # (1, dim)
    depth: int
    # set when the answer is in, or when this search is to run the next batch (no answer yet)
    ready: threading.Event = field(default_factory=threading.Event)
    hits: list[Hit] | None = None
    timing: Any = None  # a server backend's account of the batch's requests, when it has one
    error: BaseException | None = None


class SearchBatcher:
    def __init__(self, collection: Callable[[], Collection], max_batch: int = MAX_BATCH):
        self._collection = collection  # the snapshot to search now
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queued: list[_Ask] = []
        self._running = False  # a leader is running a batch
        self.batches = 0  # batches run and queries in them, for tests and benchmarks
        self.queries = 0

    @property
    def waiting(self) -> int:
        """Searches queued for the next batch."""
        with self._lock:
            return len(self._queued)

    def search(self, vector: np.ndarray, depth: int) -> tuple[list[Hit], Any]:
        """The first `depth` hits for one (1, dim) query vector, and the index's timing
        record of the search it went in (None when the index keeps none)."""
        ask = _Ask(vector, depth)
        with self._lock:
            self._queued.append(ask)
            leads, self._running = not self._running, True
        if not leads:
            ask.ready.wait()  # the answer is in, or this search leads the next batch
        if ask.hits is None and ask.error is None:
            self._lead()
        if ask.error is not None:
            raise ask.error
        assert ask.hits is not None
        return ask.hits, ask.timing

    def _lead(self) -> None:
        with self._lock:
            batch = self._take()
        try:
            self._run(batch)
        finally:
            with self._lock:
                if self._queued:
                    self._queued[0].ready.set()  # the oldest waiting search leads next
                else:
                    self._running = False

    def _take(self) -> list[_Ask]:
        """The oldest queued search and the others of its kind (first pages or deep), up to
        `max_batch` (the caller holds the lock)."""
        deep = self._queued[0].depth > SHALLOW_DEPTH
        batch = [ask for ask in self._queued if (ask.depth > SHALLOW_DEPTH) == deep]
        batch = batch[: self.max_batch]
        taken = set(map(id, batch))
        self._queued = [ask for ask in self._queued if id(ask) not in taken]
        return batch

    def _run(self, batch: list[_Ask]) -> None:
        collection = self._collection()
        try:
            try:
                self._search(collection, batch)
            except Exception:
                if len(batch) == 1:
                    raise
                for ask in batch:  # each query alone: its own answer, or its own error
                    try:
                        self._search(collection, [ask])
                    except Exception as error:
                        ask.error = error
        except BaseException as error:
            for ask in batch:
                if ask.hits is None and ask.error is None:
                    ask.error = error
        finally:
            for ask in batch:
                ask.ready.set()

    def _search(self, collection: Collection, batch: list[_Ask]) -> None:
        vectors = np.concatenate([ask.vector for ask in batch])
        rows = collection.search_vectors(vectors, max(ask.depth for ask in batch))
        timing = getattr(collection.index, "last_search", None)  # this thread's search
        with self._lock:
            self.batches += 1
            self.queries += len(batch)
        for ask, hits in zip(batch, rows, strict=True):
            ask.hits, ask.timing = hits[: ask.depth], timing
