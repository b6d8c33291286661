"""Content-addressed copies of images a collection must be able to show again.

Images indexed from a folder are read back from their original path; images that have no file
of their own (uploads through the web API, CIFAR-10 arrays) are kept here, named by their
sha256, so the same content is stored once. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from cbir.storage import atomic_write_bytes

STORE_DIR = "images"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png_bytes(image: np.ndarray) -> bytes:
    """Lossless encoding for images that only exist as arrays (CIFAR-10)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


class ImageStore:
    def __init__(self, collection_folder: Path) -> None:
        self.root = Path(collection_folder) / STORE_DIR

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store `data` (idempotent) and return its sha256."""
        digest = sha256_bytes(data)
        target = self.path_for(digest)
        if not target.exists():
            atomic_write_bytes(target, data)
        return digest

    def get(self, sha256: str) -> bytes | None:
        target = self.path_for(sha256)
        return target.read_bytes() if target.exists() else None

    def discard(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)
