"""The search service: the open collection that every request thread of a process shares.

The collection (extractor state and index) is loaded once, when the app is created, and is
thread-safe on its own. Requests read a warm snapshot that a background thread keeps caught up
with what other processes commit (`cbir.web.snapshots`): images that another process indexes
show up within a second or so, without a restart, and no request pays for catching up.
Decoding and describing an upload need no collection at all and run in parallel, within the
admission budgets (costly images take turns, see `cbir.web.admission`); query vectors are
remembered by the image's sha256, so "more like this" on a large image decodes it once.
Searches that arrive together share one pass over the index (`cbir.web.batching`); the
one-row lookups (a record by id or sha256, an image's bytes) read the database through their
thread's own connection (a read-only collection's reads take no mutex), never queueing behind
a search or each other.

Writes never hold up reads: readers share read-only snapshots, writes go through a Collection
of their own (its own mutex and database connection, opened at the first write), so a write's
transaction and fsync never hold what readers need (SQLite's WAL lets them read meanwhile).
Its lock timeout is 0: while another process (`cbir index`) holds the writer lock, a write
fails at once (503) instead of waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from flask import current_app
from werkzeug.exceptions import Conflict, NotFound, UnsupportedMediaType

from cbir.collection import Collection, Hit, ImageRecord
from cbir.image_store import sha256_bytes
from cbir.images import ALLOWED_FORMATS, DecodeLimits, decode_image
from cbir.web.admission import Admission, AdmissionPolicy, decode_cost
from cbir.web.batching import SearchBatcher
from cbir.web.inputs import QueryRequest, Upload, safe_name
from cbir.web.media import PREVIEW_SIDE, preview_data_uri, sniff_mimetype
from cbir.web.snapshots import Snapshots

log = logging.getLogger(__name__)

EXTENSION_KEY = "cbir"
REMEMBERED_VECTORS = 1024  # query vectors kept, by sha256 (a few KB each)
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
    offset: int  # results before the first one shown (paging)
    results: list[Result]
    took_ms: float
    preview: str | None = None  # a data: URI of an uploaded query, when asked for
    more: bool = False  # the collection holds results past these
    # a server backend's requests for this query (round trips, their time, the server's own)
    index_timing: dict | None = None

    @property
    def relevant_count(self) -> int | None:
        if self.query.label is None:
            return None
        return sum(1 for result in self.results if result.relevant)

    @property
    def precision(self) -> float | None:
        """P@k as trec_eval computes P_k: relevant results in the top k, divided by k (first
        page only: a later page is no top k)."""
        count = self.relevant_count
        return None if count is None or self.offset else count / self.k


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    mimetype: str | None  # None: not an image format we recognise
    sha256: str


class RememberedVectors:
    """The last query vectors described, by the sha256 of their image's bytes."""

    def __init__(self, size: int = REMEMBERED_VECTORS) -> None:
        self.size = size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> np.ndarray | None:
        with self._lock:
            vector = self._vectors.get(digest)
            if vector is not None:
                self._vectors.move_to_end(digest)
            return vector

    def put(self, digest: str, vector: np.ndarray) -> None:
        with self._lock:
            self._vectors[digest] = vector
            self._vectors.move_to_end(digest)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)


class SearchService:
    def __init__(
        self,
        snapshots: Snapshots,
        limits: DecodeLimits,
        policy: AdmissionPolicy | None = None,
        backend_options: dict[str, Any] | None = None,
    ) -> None:
        self.snapshots = snapshots
        self.limits = limits
        self.admission = Admission(policy or AdmissionPolicy(), limits.max_pixels, limits.max_bytes)
        self.vectors = RememberedVectors()
        self.batcher = SearchBatcher(lambda: self.snapshots.current)
        self._writer: Collection | None = None  # opened at the first write
        self._writer_lock = threading.Lock()  # one web write at a time
        self._backend_options = dict(backend_options or {})
        self._count: tuple[int, int] | None = None  # (generation, images)

    @classmethod
    def open(
        cls,
        folder: Path,
        limits: DecodeLimits,
        backend_options: dict[str, Any] | None = None,
        policy: AdmissionPolicy | None = None,
    ) -> SearchService:
        def reader() -> Collection:
            return Collection.open(folder, read_only=True, backend_options=backend_options)

        return cls(Snapshots(reader), limits, policy, backend_options)

    @property
    def collection(self) -> Collection:
        """The snapshot requests read now (read-only; see `cbir.web.snapshots`)."""
        return self.snapshots.current

    def close(self) -> None:
        self.admission.close()
        self.snapshots.close()
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()

    # --- searching -------------------------------------------------------------------------
    def search(self, request: QueryRequest, preview: bool = False) -> Outcome:
        """The results of one query; `preview`: an uploaded query's thumbnail as well."""
        started = time.perf_counter()
        shown = None
        if request.upload is not None:
            query, vector, shown = self._upload_query(request.upload, preview)
        else:
            query, vector = self._indexed_query(request.image_id or "")
        # The query's own indexed copy would be its first result: ask for one more, drop it;
        # and one past the page, to know whether there are more.
        extra = 1 if query.id is not None else 0
        depth = request.offset + request.k + extra + 1
        hits, timing = self.batcher.search(vector, depth)  # with the searches running meanwhile
        kept = [hit for hit in hits if hit.id != query.id]
        results = _rank(kept[request.offset : request.offset + request.k], query, request.offset)
        more = len(kept) > request.offset + request.k
        took_ms = (time.perf_counter() - started) * 1000.0
        timing = timing.as_dict() if timing is not None else None
        return Outcome(query, request.k, request.offset, results, took_ms, shown, more, timing)

    def _upload_query(self, upload: Upload, preview: bool) -> tuple[Query, np.ndarray, str | None]:
        digest = sha256_bytes(upload.data)
        vector, shown = self._describe(upload.data, digest, preview)
        known = self.collection.find_sha256(digest)
        image_id, label = known if known else (None, None)
        return Query("upload", image_id, label, digest, upload.filename), vector, shown

    def _indexed_query(self, image_id: str) -> tuple[Query, np.ndarray]:
        record = self.collection.get(image_id)
        if record is None:
            raise NotFound(f"no indexed image has the id {image_id!r}")
        query = Query("id", record.id, record.label, record.sha256)
        # Described again from its bytes, exactly as indexing described it (a query may be
        # described differently from an indexed image: class fusion, query-time views), once:
        # the vector is remembered by its sha256.
        vector = self.vectors.get(record.sha256)
        if vector is not None:
            return query, vector
        data = self.collection.image_bytes(image_id)
        if data is None:
            raise NotFound(f"the image {image_id!r} is indexed but its file is gone")
        return query, self._describe(data, record.sha256)[0]

    def _describe(
        self, data: bytes, digest: str, preview: bool = False
    ) -> tuple[np.ndarray, str | None]:
        """(1, dim) vector of image bytes (and its preview when asked); 415 when they are no
        image, 422 when they do not decode safely (the ImageDecodeError handler), 503 when
        costly images have spent their budget."""
        if sniff_mimetype(data) is None:
            raise UnsupportedMediaType(
                f"the upload is not an image in a format we accept ({_ACCEPTED})"
            )
        extractor = self.collection.extractor
        vector = self.vectors.get(digest)
        cost = (0 if vector is not None else decode_cost(data, extractor.input_size)) + (
            decode_cost(data, (PREVIEW_SIDE, PREVIEW_SIDE)) if preview else 0
        )

        def work() -> tuple[np.ndarray, str | None]:
            described = vector
            if described is None:
                image = decode_image(
                    data, size=extractor.input_size, name="the upload", limits=self.limits
                )
                described = extractor.transform_query(image[None])
                self.vectors.put(digest, described)
            return described, preview_data_uri(data) if preview else None

        return self.admission.run(cost, work)

    # --- reading -----------------------------------------------------------------------------
    def image(self, image_id: str) -> StoredImage:
        record = self.collection.get(image_id)
        data = self.collection.image_bytes(image_id) if record else None
        if record is None or data is None:
            raise NotFound(f"no indexed image has the id {image_id!r}")
        return StoredImage(data, sniff_mimetype(data), record.sha256)

    def stats(self) -> dict[str, Any]:
        stats = self.collection.stats()
        size = self.collection.extractor.input_size
        stats["input_size"] = list(size) if size else None
        # Images without a label are counted apart: a label may well be the text "None".
        counts = self.collection.label_counts()
        stats["labels"] = {
            label: n for label, n in sorted(counts.items(), key=str) if label is not None
        }
        stats["unlabelled"] = counts.get(None, 0)
        return stats

    def count(self) -> int:
        """Images in the collection, counted again only when its generation moved (health
        checks and every page's footer ask for it)."""
        collection = self.collection
        generation = collection.generation
        known = self._count
        if known is not None and known[0] == generation:
            return known[1]
        count = len(collection)
        self._count = (generation, count)
        return count

    def examples(self, n: int) -> list[tuple[str, str | None]]:
        return self.collection.sample(n)

    # --- writing (the collection's own writer path: Collection.add / delete) -----------------
    def add(self, upload: Upload, label: str | None, name: str | None) -> ImageRecord:
        with self._writer_lock:  # while `cbir index` writes: refused before any decoding
            self._writer_collection().check_not_busy()
        digest = sha256_bytes(upload.data)
        vector = self._describe(upload.data, digest)[0]
        record = ImageRecord(
            id=f"{digest[:16]}-{safe_name(name or upload.filename)}",
            path=None, label=label, sha256=digest,
        )  # fmt: skip
        with self._writer_lock:
            writer = self._writer_collection()
            known = writer.find_sha256(digest)
            if known is not None:
                raise Conflict(f"this image is already indexed as {known[0]!r}")
            # The bytes go in the same transaction as the record: never one without the other.
            writer.add([record], vector, blobs=[upload.data])
        self.snapshots.refresh()  # the client that wrote reads what it wrote
        return record

    def delete(self, image_id: str) -> None:
        with self._writer_lock:
            writer = self._writer_collection()
            if writer.get(image_id) is None:
                raise NotFound(f"no indexed image has the id {image_id!r}")
            writer.delete([image_id])  # with its stored bytes, unless another image uses them
        self.snapshots.refresh()

    def _writer_collection(self) -> Collection:
        """The collection's writer side (the caller holds `_writer_lock`)."""
        if self._writer is None:
            self._writer = Collection.open(
                self.collection.folder, lock_timeout=0, backend_options=self._backend_options
            )
        return self._writer


def _rank(hits: list[Hit], query: Query, offset: int) -> list[Result]:
    return [
        Result(
            rank=rank,
            id=hit.id,
            score=hit.score,
            label=hit.label,
            relevant=None if query.label is None else hit.label == query.label,
        )
        for rank, hit in enumerate(hits, start=offset + 1)
    ]


def current_service() -> SearchService:
    return current_app.extensions[EXTENSION_KEY]
