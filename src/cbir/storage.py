"""Durable, atomic file writes: write a temporary file beside the target, fsync, rename.

A reader sees either the old file or the new one, never half of one, and a crash (even kill -9)
leaves the old file intact.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_writer(path: Path, mode: str = "wb", buffering: int = -1) -> Iterator[IO]:
    """Stream into a temporary file beside `path`; on success fsync it and rename it over
    `path`, on any error remove it and leave `path` as it was. Text modes write UTF-8 with
    newline "\n"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    text = "b" not in mode
    try:
        with os.fdopen(
            fd, mode, buffering=buffering,
            encoding="utf-8" if text else None, newline="\n" if text else None,
        ) as handle:  # fmt: skip
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """Load an array saved by `atomic_save_npy`; pickled objects are refused."""
    return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
