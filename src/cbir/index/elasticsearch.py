"""The "elasticsearch" backend: vectors in an Elasticsearch 8.x index (official client).

    ElasticsearchIndex(dim, metric="cosine", url=None, index_name="cbir", search="exact",
                       num_candidates=100, shards=1, replicas=0, hnsw_m=16, ef_construction=100,
                       batch=256)

`url` defaults to $CBIR_ELASTICSEARCH_URL, else http://127.0.0.1:9200. Credentials come from
the environment only, never from settings (which collections store): $CBIR_ELASTICSEARCH_API_KEY,
or $CBIR_ELASTICSEARCH_USER with $CBIR_ELASTICSEARCH_PASSWORD. The index is created
with the reference mapping (see `elasticsearch_requests`) when missing, and checked (dims,
similarity) when present. `search="exact"` ranks with script_score over every document;
`search="knn"` uses the approximate top-level `knn` search (HNSW, `num_candidates` per
shard). Either way queries go `batch` at a time in one `_msearch` request, and each hit comes
back lean: its id and its exact similarity (computed by the server for the returned hits
only), ordered here (`cbir.index.remote`), so results follow the VectorIndex order exactly.
`last_search` tells how the last search went (round trips, their time, the server's `took`).
Adds and deletes refresh the index, so a search right after sees them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from cbir.errors import CbirError, DimensionMismatchError
from cbir.index import elasticsearch_requests as req
from cbir.index.base import check_dim_and_metric, check_ids, check_k, check_new_entries, quote
from cbir.index.remote import (
    Answer,
    TimedSearches,
    batches,
    check_batch,
    prepare,
    search_in_rounds,
)

DEFAULT_URL = "http://127.0.0.1:9200"
SEARCH_MODES = ("exact", "knn")
BULK_CHUNK = 500  # documents per bulk request
BULK_RETRIES = 3  # with exponential back-off from 1 s
# queries per _msearch request, measured (benchmarks/server_backends.py --batches): 64 to 1,024
# run at the same speed, the server's time per query dominating; bodies of ~10 kB per 256-d query
# stay far below http.max_content_length (100 MB)
DEFAULT_BATCH = 256
# the server's scores are floats: candidates within this (relative) of the k-th may be out of
# order, so the boundary is checked against it
SCORE_ROUNDING = 1e-5


class ElasticsearchIndex(TimedSearches):
    """VectorIndex over an Elasticsearch index; exact (script_score) or approximate (knn)."""

    keeps_data = True  # the server holds the vectors: a collection syncs it, never rebuilds it

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        url: str | None = None,
        index_name: str = "cbir",
        search: str = "exact",
        num_candidates: int = 100,
        shards: int = 1,
        replicas: int = 0,
        hnsw_m: int = 16,
        ef_construction: int = 100,
        batch: int = DEFAULT_BATCH,
        timeout: float = 30.0,
    ) -> None:
        import elasticsearch  # optional dependency, imported when the backend is used

        dim = check_dim_and_metric(dim, metric)
        if dim > req.MAX_DIMS:
            raise DimensionMismatchError(
                f"Elasticsearch indexes at most {req.MAX_DIMS}-d vectors; this index needs {dim}"
            )
        if search not in SEARCH_MODES:
            raise CbirError(f"unknown search {search!r}; choose one of: {', '.join(SEARCH_MODES)}")
        self.dim = dim
        self.metric = metric
        self.index_name = index_name
        self.search_mode = search
        self.num_candidates = int(num_candidates)
        self.batch = check_batch(batch)
        self.url = url or os.environ.get("CBIR_ELASTICSEARCH_URL") or DEFAULT_URL
        self._errors = elasticsearch
        self._client = elasticsearch.Elasticsearch(
            self.url, request_timeout=timeout, **credentials_from_environment()
        )
        self._call(
            self._ensure_index,
            req.index_body(self.dim, metric, shards, replicas, hnsw_m, ef_construction),
        )

    # --- plumbing ----------------------------------------------------------------------------
    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a client call, turning transport and API failures into clear CbirErrors."""
        errors = self._errors
        try:
            return function(*args, **kwargs)
        except errors.ConnectionError as error:
            raise CbirError(f"Elasticsearch is not reachable at {self.url}: {error}") from error
        except errors.NotFoundError as error:
            raise CbirError(
                f"Elasticsearch index {self.index_name!r} is missing at {self.url}"
            ) from error
        except errors.ApiError as error:
            raise CbirError(f"Elasticsearch refused the request: {error}") from error

    def _ensure_index(self, body: dict[str, Any]) -> None:
        indices = self._client.indices
        if not indices.exists(index=self.index_name):
            try:
                indices.create(index=self.index_name, **body)
                return
            except self._errors.BadRequestError as error:
                if error.error != "resource_already_exists_exception":
                    raise
        mapped = req.mapped_vector(indices.get_mapping(index=self.index_name), self.index_name)
        similarity = body["mappings"]["properties"]["features"]["similarity"]
        if mapped is None or mapped != (self.dim, similarity):
            raise DimensionMismatchError(
                f"Elasticsearch index {self.index_name!r} holds {mapped} vectors (dims, "
                f"similarity); this index needs ({self.dim}, {similarity!r})"
            )

    # --- VectorIndex -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._call(self._client.count, index=self.index_name)["count"])

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        too_long = [id_ for id_ in check_ids(ids) if len(id_.encode()) > req.MAX_ID_BYTES]
        if too_long:
            raise CbirError(
                f"Elasticsearch ids are at most {req.MAX_ID_BYTES} bytes: {quote(too_long)}"
            )
        present = set(self._present(check_ids(ids)))
        ids, vectors = check_new_entries(ids, vectors, self.dim, present)
        vectors = prepare(vectors, self.dim, self.metric)
        failed = self._bulk(req.index_actions(self.index_name, ids, vectors))
        if failed:
            # all or nothing, as in every backend: take back the documents that did go in
            self._bulk(req.delete_actions(self.index_name, [i for i in ids if i not in failed]))
            lines = [f"{id_}: {reason}" for id_, reason in failed.items()]
            raise CbirError(
                f"Elasticsearch refused {len(failed)} of {len(ids)} documents, nothing added: "
                f"{quote(lines)}"
            )

    def delete(self, ids: Sequence[str]) -> int:
        """Remove the given ids (unknown ones are ignored); returns how many were removed."""
        ids = list(dict.fromkeys(check_ids(ids)))
        if not ids:
            return 0
        deleted = 0

        def count(item: dict[str, Any]) -> None:
            nonlocal deleted
            deleted += item["delete"].get("result") == "deleted"

        # an unknown id comes back "not_found", without an error: ignored, as promised
        failed = self._bulk(req.delete_actions(self.index_name, ids), on_item=count)
        if failed:
            lines = [f"{id_}: {reason}" for id_, reason in failed.items()]
            raise CbirError(f"Elasticsearch could not delete {len(failed)}: {quote(lines)}")
        return deleted

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        k = check_k(k)
        queries = prepare(queries, self.dim, self.metric, what="queries")
        self._new_timing()
        return search_in_rounds(
            queries, k, req.MAX_RESULT_WINDOW, self._fetch, tolerance=SCORE_ROUNDING
        )

    def close(self) -> None:
        self._client.close()

    def ids(self) -> Iterator[str]:
        """Every document id in the index (a scroll over ids only)."""
        from elasticsearch import helpers

        hits = helpers.scan(
            self._client, index=self.index_name, query={"query": {"match_all": {}}},
            _source=False, size=5000,
        )  # fmt: skip
        return iter(self._call(lambda: [hit["_id"] for hit in hits]))

    def compact(self, timeout: float = 600.0) -> None:
        """After a bulk load: merge the index into one segment (one HNSW graph for knn to
        search, and no background merging competing with searches for the cores)."""
        self._call(
            self._client.options(request_timeout=timeout).indices.forcemerge,
            index=self.index_name,
            max_num_segments=1,
        )

    def note_last_change(self, changed_at: float | None) -> None:
        """Nothing to do: adds and deletes refresh the index, so every search sees them."""

    def drop(self) -> None:
        """Delete the whole Elasticsearch index (tests, `cbir` collection removal)."""
        self._call(self._client.indices.delete, index=self.index_name, ignore_unavailable=True)

    # --- requests ----------------------------------------------------------------------------
    def _present(self, ids: list[str]) -> list[str]:
        present: list[str] = []
        for start in range(0, len(ids), req.MAX_RESULT_WINDOW):
            chunk = ids[start : start + req.MAX_RESULT_WINDOW]
            response = self._call(
                self._client.search,
                index=self.index_name,
                query={"ids": {"values": chunk}},
                size=len(chunk),
                source=False,
            )
            present.extend(hit["_id"] for hit in response["hits"]["hits"])
        return present

    def _bulk(self, actions: Iterable[dict[str, Any]], on_item: Any = None) -> dict[str, str]:
        """Send actions in chunks, refreshing, so that searches see them; id -> error reason
        for each document that failed."""
        from elasticsearch import helpers

        failed: dict[str, str] = {}
        results = helpers.streaming_bulk(
            self._client,
            actions,
            chunk_size=BULK_CHUNK,
            raise_on_error=False,
            raise_on_exception=False,
            refresh=True,
            max_retries=BULK_RETRIES,  # documents refused with 429 (queue full) are sent again
            initial_backoff=1,
        )
        for ok, item in self._call(list, results):
            if on_item is not None:
                on_item(item)
            if not ok:
                failed.update(req.bulk_errors([item]))
        return failed

    def _fetch(self, queries: np.ndarray, size: int) -> Iterator[Answer]:
        timing = self.last_search
        for part in batches(len(queries), self.batch):
            searches: list[dict[str, Any]] = []
            for query in queries[part]:
                body = (
                    req.knn_search(query, self.metric, size, self.num_candidates)
                    if self.search_mode == "knn"
                    else req.exact_search(query, self.metric, size)
                )
                searches.extend([{"index": self.index_name}, body])
            timing.start()
            response = self._call(self._msearch, searches, len(queries[part]))
            timing.stop(server_s=response.get("took", 0) / 1000)
            for query, result in zip(queries[part], response["responses"], strict=True):
                error = result.get("error")
                if error:
                    if error.get("type") == "index_not_found_exception":
                        raise CbirError(
                            f"Elasticsearch index {self.index_name!r} is missing at {self.url}"
                        )
                    raise CbirError(f"Elasticsearch search failed: {error.get('reason', error)}")
                # a zero query ties every document at 0: the server's id order is then exact
                yield (*req.parse_hits(result), not query.any())

    def _msearch(self, searches: list[dict[str, Any]], count: int) -> Any:
        try:
            return self._client.msearch(searches=searches, filter_path=req.FILTER_PATH)
        except self._errors.ApiError as error:
            if error.meta.status in (413, 429):  # too large, or over a circuit breaker's limit
                raise CbirError(
                    f"Elasticsearch refused a batch of {count} queries ({error.message}): "
                    f"search in smaller batches, e.g. --backend-option batch={max(1, count // 4)}"
                ) from error
            raise

    def __repr__(self) -> str:  # never the credentials
        return (
            f"ElasticsearchIndex(dim={self.dim}, metric={self.metric!r}, url={self.url!r}, "
            f"index_name={self.index_name!r}, search={self.search_mode!r})"
        )


def credentials_from_environment() -> dict[str, Any]:
    """Client credentials from $CBIR_ELASTICSEARCH_API_KEY or $CBIR_ELASTICSEARCH_USER and
    $CBIR_ELASTICSEARCH_PASSWORD; none when unset (a security-off development server)."""
    api_key = os.environ.get("CBIR_ELASTICSEARCH_API_KEY")
    if api_key:
        return {"api_key": api_key}
    user = os.environ.get("CBIR_ELASTICSEARCH_USER")
    if user:
        return {"basic_auth": (user, os.environ.get("CBIR_ELASTICSEARCH_PASSWORD", ""))}
    return {}
