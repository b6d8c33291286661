"""Read-only metadata queries the web app needs and `Collection` does not offer (yet): find an
image by content, and pick a few at random. They go through their own read-only connection to
the collection's database (`cbir.database.Database(read_only=True)`), so they can never write.
"""

from __future__ import annotations

import threading
from pathlib import Path

from cbir.collection import METADATA
from cbir.database import Database


class Catalog:
    def __init__(self, collection_folder: Path) -> None:
        self._db = Database(Path(collection_folder) / METADATA, read_only=True)
        self._lock = threading.Lock()  # one connection, many request threads

    def find_sha256(self, digest: str) -> tuple[str, str | None] | None:
        """(id, label) of an indexed image with exactly these bytes, or None."""
        with self._lock, self._db.snapshot() as conn:
            row = conn.execute(
                "SELECT id, label FROM images WHERE sha256 = ? ORDER BY id LIMIT 1", (digest,)
            ).fetchone()
        return (row[0], row[1]) if row else None

    def sample(self, n: int) -> list[tuple[str, str | None]]:
        """Up to n random (id, label) pairs: starting points for people with no image at hand.
        Random rowids hit the primary key; a few misses (deleted rows) only shorten the list."""
        with self._lock, self._db.snapshot() as conn:
            top = conn.execute("SELECT MAX(rowid) FROM images").fetchone()[0]
            if top is None:
                return []
            rows = conn.execute(
                "SELECT id, label FROM images WHERE rowid IN "
                "(SELECT abs(random()) % ? + 1 FROM images LIMIT ?) ORDER BY random() LIMIT ?",
                (top, 3 * n, n),
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
