"""The collection as readers see it: a warm, read-only snapshot that requests never refresh.

Catching an index up with what another process committed invalidates state derived from the
whole index (the embedded index's tie-break ranks and duplicate map: 0.35 s to rebuild on
50,000 images), and a request that refreshed would pay for it while every other reader waited
on the collection's mutex. So two read-only Collections take turns: one serves every request,
untouched; a background thread (at a lower scheduling priority) watches the database's
generation and, when it moved, catches the other up, warms it with one search, and swaps it
in, at most once every `every_s` seconds. The second Collection is opened only when something
first changes, with a copy of the first one's index (made in memory: reading every vector from
the database again, at low priority while requests run, slowed them for a second or two).
Readers see another process's images within about that long; a write made through this server
swaps at once (`refresh`), so its client reads what it wrote.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from cbir.collection import METADATA, Collection
from cbir.database import Database
from cbir.web.admission import lower_priority

log = logging.getLogger(__name__)

REFRESH_EVERY_S = 1.0


def warm(collection: Collection) -> Collection:
    """Build the index and its lazily derived state now, not in the next request."""
    collection.search_vectors(np.ones((1, collection.extractor.dim), np.float32), 1)
    return collection


class Snapshots:
    def __init__(self, open_reader: Callable[[], Collection], every_s: float = REFRESH_EVERY_S):
        self._open = open_reader
        self.current = warm(open_reader())  # what requests read; replaced, never refreshed
        self._standby: Collection | None = None  # opened at the first change
        # One tiny query tells whether anything was committed since `current` was caught up.
        self._watch = Database(self.current.folder / METADATA, read_only=True)
        self._refreshing = threading.Lock()
        self._stop = threading.Event()
        self._every_s = every_s
        self._thread = threading.Thread(target=self._loop, name="cbir-refresh", daemon=True)
        self._thread.start()

    def refresh(self) -> None:
        """Swap in a snapshot caught up with every commit, when there is any."""
        with self._refreshing:
            if self._watch.generation() == self.current.generation:
                return
            if self._standby is None:
                self._standby = self._open()
                # a copy of the index in memory, not a second read of every vector
                self._standby.start_from(self.current)
            standby = self._standby
            standby.refresh()
            if standby.generation == self.current.generation:
                return
            warm(standby)
            self._standby, self.current = self.current, standby

    def _loop(self) -> None:
        lower_priority()
        while not self._stop.wait(self._every_s):
            try:
                self.refresh()
            except Exception:  # the next round tries again; requests keep the last snapshot
                log.exception("refreshing the collection failed")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._refreshing:
            self._watch.close()
            for collection in (self.current, self._standby):
                if collection is not None:
                    collection.close()
