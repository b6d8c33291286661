"""The search service: the one open collection that every request thread of a process shares.

The collection (extractor state and index) is loaded once, when the app is created, and is
thread-safe on its own. Before each read the service calls `Collection.refresh()` (one tiny
query), so images that another process indexed show up without a restart. Decoding and
describing an upload need no collection at all and run fully in parallel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from flask import current_app
from werkzeug.exceptions import Conflict, NotFound, UnsupportedMediaType

from cbir.collection import Collection, Hit, ImageRecord
from cbir.image_store import sha256_bytes
from cbir.images import ALLOWED_FORMATS, DecodeLimits, decode_image
from cbir.web.inputs import QueryRequest, Upload, safe_name
from cbir.web.media import sniff_mimetype

EXTENSION_KEY = "cbir"
_ACCEPTED = ", ".join(sorted(ALLOWED_FORMATS - {"MPO"}))


@dataclass(frozen=True)
class Query:
    kind: Literal["upload", "id"]
    # The indexed image this query is: the one searched by id, or the one whose bytes an
    # upload matches exactly (sha256). Its label is the query's class; an upload that matches
    # nothing has no class, and none is ever guessed for it.
    id: str | None
    label: str | None
    sha256: str | None = None
    filename: str | None = None


@dataclass(frozen=True)
class Result:
    rank: int
    id: str
    score: float
    label: str | None
    relevant: bool | None  # None when the query's class is unknown


@dataclass(frozen=True)
class Outcome:
    query: Query
    k: int
    results: list[Result]
    took_ms: float

    @property
    def relevant_count(self) -> int | None:
        if self.query.label is None:
            return None
        return sum(1 for result in self.results if result.relevant)

    @property
    def precision(self) -> float | None:
        """P@k as trec_eval computes P_k: relevant results in the top k, divided by k."""
        count = self.relevant_count
        return None if count is None else count / self.k


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    mimetype: str | None  # None: not an image format we recognise
    sha256: str


class SearchService:
    def __init__(self, collection: Collection, limits: DecodeLimits) -> None:
        self.collection = collection
        self.limits = limits

    @classmethod
    def open(
        cls, folder: Path, limits: DecodeLimits, backend_options: dict[str, Any] | None = None
    ) -> SearchService:
        collection = Collection.open(folder, backend_options=backend_options)
        # Build the index and its lazily derived state (tie-break ranks, duplicate map) now:
        # the first request would otherwise pay for it (0.35 s on 50,000 images).
        collection.search_vectors(np.ones((1, collection.extractor.dim), np.float32), 1)
        return cls(collection, limits)

    def close(self) -> None:
        self.collection.close()

    def _fresh(self) -> Collection:
        """The collection, caught up with what other processes committed."""
        self.collection.refresh()
        return self.collection

    # --- searching -------------------------------------------------------------------------
    def search(self, request: QueryRequest) -> Outcome:
        started = time.perf_counter()
        if request.upload is not None:
            query, vector = self._upload_query(request.upload)
        else:
            query, vector = self._indexed_query(request.image_id or "")
        # The query's own indexed copy would be its first result: ask for one more, drop it.
        extra = 1 if query.id is not None else 0
        hits = self._fresh().search_vectors(vector, request.k + extra)[0]
        results = _rank(hits, query, request.k)
        took_ms = (time.perf_counter() - started) * 1000.0
        return Outcome(query=query, k=request.k, results=results, took_ms=took_ms)

    def _upload_query(self, upload: Upload) -> tuple[Query, np.ndarray]:
        vector = self._describe(upload.data)
        digest = sha256_bytes(upload.data)
        known = self.collection.find_sha256(digest)
        image_id, label = known if known else (None, None)
        return Query("upload", image_id, label, digest, upload.filename), vector

    def _indexed_query(self, image_id: str) -> tuple[Query, np.ndarray]:
        record = self._fresh().get(image_id)
        data = self.collection.image_bytes(image_id) if record else None
        if record is None:
            raise NotFound(f"no indexed image has the id {image_id!r}")
        if data is None:
            raise NotFound(f"the image {image_id!r} is indexed but its file is gone")
        # Described again from its bytes, exactly as indexing described it: works with every
        # index backend, and costs well under a millisecond for small images.
        return Query("id", record.id, record.label, record.sha256), self._describe(data)

    def _describe(self, data: bytes) -> np.ndarray:
        """(1, dim) vector of image bytes; 415 when they are no image, 422 when they do not
        decode safely (the ImageDecodeError handler)."""
        if sniff_mimetype(data) is None:
            raise UnsupportedMediaType(
                f"the upload is not an image in a format we accept ({_ACCEPTED})"
            )
        extractor = self.collection.extractor
        image = decode_image(data, size=extractor.input_size, name="the upload", limits=self.limits)
        return extractor.transform_query(image[None])

    # --- reading -----------------------------------------------------------------------------
    def image(self, image_id: str) -> StoredImage:
        record = self._fresh().get(image_id)
        data = self.collection.image_bytes(image_id) if record else None
        if record is None or data is None:
            raise NotFound(f"no indexed image has the id {image_id!r}")
        return StoredImage(data, sniff_mimetype(data), record.sha256)

    def stats(self) -> dict[str, Any]:
        stats = self._fresh().stats()
        size = self.collection.extractor.input_size
        stats["input_size"] = list(size) if size else None
        return stats

    def count(self) -> int:
        return len(self._fresh())

    def examples(self, n: int) -> list[tuple[str, str | None]]:
        return self.collection.sample(n)

    # --- writing (the collection's own writer path: Collection.add / delete) -----------------
    def add(self, upload: Upload, label: str | None, name: str | None) -> ImageRecord:
        vector = self._describe(upload.data)
        digest = sha256_bytes(upload.data)
        record = ImageRecord(
            id=f"{digest[:16]}-{safe_name(name or upload.filename)}",
            path=None, label=label, sha256=digest,
        )  # fmt: skip
        known = self.collection.find_sha256(digest)
        if known is not None:
            raise Conflict(f"this image is already indexed as {known[0]!r}")
        # The bytes go in the same transaction as the record: never one without the other.
        self.collection.add([record], vector, blobs=[upload.data])
        return record

    def delete(self, image_id: str) -> None:
        if self._fresh().get(image_id) is None:
            raise NotFound(f"no indexed image has the id {image_id!r}")
        self.collection.delete([image_id])  # with its stored bytes, unless another image uses them


def _rank(hits: list[Hit], query: Query, k: int) -> list[Result]:
    kept = [hit for hit in hits if hit.id != query.id][:k]
    return [
        Result(
            rank=rank,
            id=hit.id,
            score=hit.score,
            label=hit.label,
            relevant=None if query.label is None else hit.label == query.label,
        )
        for rank, hit in enumerate(kept, start=1)
    ]


def current_service() -> SearchService:
    return current_app.extensions[EXTENSION_KEY]
