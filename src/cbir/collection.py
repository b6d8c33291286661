"""A collection on disk: everything needed to search a set of images again later.

    <folder>/manifest.json     schema version, extractor {name, params}, dim, metric,
                               backend, counts
    <folder>/extractor/        the extractor's parameters and learnt state (arrays + JSON)
    <folder>/index/            the embedded backend's vectors and ids
    <folder>/metadata.sqlite   one row per image: id, path, label, sha256, width, height, added_at

Writes are atomic (temporary file, fsync, rename) and metadata goes through SQLite
transactions. An add writes the vectors first and commits the metadata last, so after a crash
the index can only hold extra, uncommitted vectors: `open` drops them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cbir import __version__
from cbir.errors import CollectionError, DimensionMismatchError
from cbir.features import Extractor, load_extractor
from cbir.image_store import ImageStore
from cbir.index import DEFAULT_BACKEND, backend_class
from cbir.storage import atomic_write_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
METADATA = "metadata.sqlite"
EXTRACTOR_DIR = "extractor"
INDEX_DIR = "index"

_SCHEMA = """
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
"""


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
    """Open with `Collection.open(folder)` or make one with `Collection.create(...)`."""

    def __init__(self, folder: Path, manifest: dict[str, Any], extractor: Extractor, index):
        self.folder = folder
        self.manifest = manifest
        self.extractor = extractor
        self.index = index
        self.images = ImageStore(folder)
        self._db = sqlite3.connect(folder / METADATA, check_same_thread=False)
        self._db.executescript(_SCHEMA)

    # --- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        folder: str | Path,
        extractor: Extractor,
        backend: str = DEFAULT_BACKEND,
        metric: str = "cosine",
    ) -> Collection:
        folder = Path(folder)
        if (folder / MANIFEST).exists():
            raise CollectionError(f"{folder} already holds a collection; open it instead")
        folder.mkdir(parents=True, exist_ok=True)
        extractor.save(folder / EXTRACTOR_DIR)
        index = backend_class(backend)(dim=extractor.dim, metric=metric)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "cbir_version": __version__,
            "extractor": extractor.describe(),
            "dim": extractor.dim,
            "metric": metric,
            "backend": {"name": backend, "settings": {}},
            "counts": {"images": 0},
            "created": _now(),
            "updated": _now(),
        }
        collection = cls(folder, manifest, extractor, index)
        collection._save_index()
        atomic_write_json(folder / MANIFEST, manifest)
        return collection

    @classmethod
    def open(cls, folder: str | Path) -> Collection:
        folder = Path(folder)
        manifest = read_manifest(folder)
        extractor = load_extractor(folder / EXTRACTOR_DIR)
        if extractor.dim != manifest["dim"]:
            raise CollectionError(
                f"{folder}: extractor gives {extractor.dim}-d vectors but the manifest says "
                f"{manifest['dim']}; the collection is damaged"
            )
        backend = backend_class(manifest["backend"]["name"])
        index = backend.load(folder / INDEX_DIR)
        collection = cls(folder, manifest, extractor, index)
        collection._drop_uncommitted_vectors()
        return collection

    @classmethod
    def open_or_create(
        cls, folder: str | Path, extractor_factory, backend: str = DEFAULT_BACKEND
    ) -> Collection:
        folder = Path(folder)
        if (folder / MANIFEST).exists():
            return cls.open(folder)
        return cls.create(folder, extractor_factory(), backend=backend)

    def close(self) -> None:
        self._db.close()
        self.index.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- writing -----------------------------------------------------------------------------
    def add(self, records: Sequence[ImageRecord], vectors: np.ndarray) -> int:
        """Add images with their vectors; returns how many were added."""
        if len(records) != len(vectors):
            raise DimensionMismatchError(f"{len(records)} records but {len(vectors)} vectors")
        if not records:
            return 0
        added_at = _now()
        rows = [(r.id, r.path, r.label, r.sha256, r.width, r.height, added_at) for r in records]
        try:
            with self._db:  # one transaction: all rows or none
                self._db.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self.index.add([r.id for r in records], vectors)
                self._save_index()
        except sqlite3.IntegrityError as error:
            raise CollectionError(f"an image id is already in the collection ({error})") from None
        self._write_manifest()
        return len(records)

    def delete(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        with self._db:
            self._db.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in ids])
            removed = self.index.delete(ids)
            self._save_index()
        self._write_manifest()
        return removed

    def _save_index(self) -> None:
        if hasattr(self.index, "save"):
            self.index.save(self.folder / INDEX_DIR)

    def _write_manifest(self) -> None:
        self.manifest["counts"] = {"images": len(self)}
        self.manifest["updated"] = _now()
        atomic_write_json(self.folder / MANIFEST, self.manifest)

    def _drop_uncommitted_vectors(self) -> None:
        known = {row[0] for row in self._db.execute("SELECT id FROM images")}
        stray = [i for i in self.index.ids if i not in known]
        if stray:
            log.warning(
                "%s: dropping %d vectors whose add never committed", self.folder, len(stray)
            )
            self.index.delete(stray)
            self._save_index()

    # --- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def known_checksums(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT sha256 FROM images")}

    def known_ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT id FROM images")}

    def get(self, image_id: str) -> ImageRecord | None:
        row = self._db.execute(
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
        stored = self.images.get(record.sha256)
        if stored is not None:
            return stored
        if record.path and Path(record.path).is_file():
            return Path(record.path).read_bytes()
        return None

    def refresh(self) -> bool:
        """Pick up changes another process committed; True when something changed.
        (Readers such as the web server call this before searching.)"""
        return False

    def label_counts(self) -> dict[str | None, int]:
        rows = self._db.execute("SELECT label, COUNT(*) FROM images GROUP BY label")
        return dict(Counter({label: count for label, count in rows}))

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        ids, scores = self.index.search(vectors, k)
        wanted = {i for row in ids for i in row}
        meta = self._metadata_for(wanted)
        return [
            [Hit(i, float(s), *meta.get(i, (None, None))) for i, s in zip(row, srow, strict=False)]
            for row, srow in zip(ids, scores, strict=True)
        ]

    def search_images(self, images: np.ndarray, k: int = 10) -> list[list[Hit]]:
        return self.search_vectors(self.extractor.transform(images), k)

    def _metadata_for(self, ids: set[str]) -> dict[str, tuple[str | None, str | None]]:
        out: dict[str, tuple[str | None, str | None]] = {}
        ids_list = list(ids)
        for start in range(0, len(ids_list), 900):  # SQLite's bound-parameter limit
            part = ids_list[start : start + 900]
            marks = ",".join("?" * len(part))
            query = f"SELECT id, label, path FROM images WHERE id IN ({marks})"
            for image_id, label, path in self._db.execute(query, part):
                out[image_id] = (label, path)
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "count": len(self),
            "extractor": self.manifest["extractor"],
            "dim": self.manifest["dim"],
            "metric": self.manifest["metric"],
            "backend": self.manifest["backend"]["name"],
            "labels": {str(k): v for k, v in sorted(self.label_counts().items(), key=str)},
            "created": self.manifest["created"],
            "updated": self.manifest["updated"],
        }


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
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise CollectionError(
            f"{path} has schema version {version!r}; this cbir reads up to {SCHEMA_VERSION}. "
            "Upgrade cbir to open it"
        )
    return manifest
