"""Bytes of the images a collection must be able to show again but that have no file of their
own (uploads through the web API, CIFAR-10 arrays), keyed by sha256 so the same content is
kept once.

They live in the `blobs` table of the collection's database, not in a file each: 50,000
thumbnails as 50,000 fsync'd files took most of a CIFAR-10 index run, and in the database they
commit in the same transaction as the rows that use them.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

import numpy as np
from PIL import Image

Connect = Callable[[], AbstractContextManager[sqlite3.Connection]]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless encoding for images that only exist as arrays (CIFAR-10). Level 1: as small
    as level 6 on 32x32 thumbnails (2,241 vs 2,262 bytes on average) and faster."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def put_blobs(conn: sqlite3.Connection, blobs: Iterable[bytes]) -> list[str]:
    """Store each blob (idempotent) inside the caller's transaction; their sha256 in order."""
    pairs = [(sha256_bytes(data), data) for data in blobs]
    conn.executemany("INSERT OR IGNORE INTO blobs (sha256, data) VALUES (?, ?)", pairs)
    return [digest for digest, _ in pairs]


def get_blob(conn: sqlite3.Connection, sha256: str) -> bytes | None:
    row = conn.execute("SELECT data FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
    return bytes(row[0]) if row else None


class ImageStore:
    """`put`, `get`, `discard` on one collection's blobs; `reading` and `writing` give its
    connection inside a snapshot or a locked write transaction."""

    def __init__(self, reading: Connect, writing: Connect) -> None:
        self._reading = reading
        self._writing = writing

    def put(self, data: bytes) -> str:
        """Store `data` (idempotent, durable when this returns) and return its sha256."""
        with self._writing() as conn:
            return put_blobs(conn, [data])[0]

    def get(self, sha256: str) -> bytes | None:
        with self._reading() as conn:
            return get_blob(conn, sha256)

    def discard(self, sha256: str) -> None:
        """Forget the bytes, unless an indexed image still uses them."""
        with self._writing() as conn:
            conn.execute(
                "DELETE FROM blobs WHERE sha256 = ? AND sha256 NOT IN (SELECT sha256 FROM images)",
                (sha256,),
            )
