"""The "elasticsearch" backend: vectors in an Elasticsearch 8.x index (official client).

    ElasticsearchIndex(dim, metric="cosine", url="http://127.0.0.1:9200", index_name="cbir",
                       index="flat", search="", shards=None, replicas=0, batch=256,
                       timeout=30.0)

Settings resolution (`cbir.index`) fills `url` from $CBIR_ELASTICSEARCH_URL, and the
credentials from the environment only, never from settings (which collections store):
$CBIR_ELASTICSEARCH_API_KEY, or $CBIR_ELASTICSEARCH_USER with $CBIR_ELASTICSEARCH_PASSWORD.
The index is created with the reference mapping (see `elasticsearch_requests`) when missing,
and checked (dims, similarity) when present. `index` and `search` are specs in the grammar
every backend shares (`cbir.index.spec`): `index="flat"` ranks exactly, with script_score over
every document; `index="hnsw[:M=32,ef_construction=200]"` builds the HNSW graph with those
parameters and searches it with the approximate `knn` query, `search="ef=128"` giving its
num_candidates (per shard). Either way queries go `batch` at a time in one `_msearch`
request, and each hit comes back lean: its id and the server's float32 score, from which its
similarity follows; near-tied candidates are rescored exactly from their stored vectors (one
mget) and all are ordered here (`cbir.index.remote`), so results follow the VectorIndex order
exactly. `last_search` tells how the last search went (round trips, their
time, the server's `took`). Adds and deletes refresh the index, so a search right after sees
them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from cbir.errors import CbirError, DimensionMismatchError
from cbir.index import elasticsearch_requests as req
from cbir.index import register_backend
from cbir.index.backend import Backend, Setting
from cbir.index.base import check_dim_and_metric, check_ids, check_k, check_new_entries, quote
from cbir.index.remote import (
    Answer,
    TimedSearches,
    batches,
    check_batch,
    prepare,
    rescore_near_ties,
    search_in_rounds,
)
from cbir.index.spec import parse_search, parse_spec

DEFAULT_URL = "http://127.0.0.1:9200"
# Manifests written before the shared index-spec grammar store this backend's own vocabulary:
# search="exact" | "knn" with num_candidates, hnsw_m and ef_construction beside it, and these
# defaults where absent. `ElasticsearchIndex.upgrade` translates them, so that an old
# collection searches its index as it did (exact, or knn with the same num_candidates).
LEGACY_SEARCH = ("exact", "knn")
LEGACY_DEFAULTS = {"num_candidates": 100, "hnsw_m": 16, "ef_construction": 100}
BULK_CHUNK = 500  # documents per bulk request
BULK_RETRIES = 3  # with exponential back-off from 1 s
# queries per _msearch request, measured (benchmarks/server_backends.py --batches): 64 to 1,024
# run at the same speed, the server's time per query dominating; bodies of ~10 kB per 256-d query
# stay far below http.max_content_length (100 MB)
DEFAULT_BATCH = 256
# the server's scores are float32 (1.8e-7 from the exact similarity, at most, over 6,250
# CIFAR-10 gch hits): candidates within this (relative) of another are rescored exactly here
# from their vectors, and a cut within it of the k-th is fetched again, deeper. 1e-5 would
# rescore 4.3 candidates a query on CIFAR-10 gch, 1e-6 0.43: a quarter of the client's time
SCORE_ROUNDING = 1e-6
FLAT_SHARDS = 2  # a flat index's primary shards, unless set
VECTOR_CHUNK = 1_000  # ids per mget of near-tied candidates' vectors


@register_backend("elasticsearch")
class ElasticsearchIndex(TimedSearches, Backend):
    """VectorIndex over an Elasticsearch index; exact (script_score) or approximate (knn)
    (a RemoteIndex)."""

    keeps_data = True  # the server holds the vectors: a collection syncs it, never rebuilds it
    connection = "url"
    name_setting = "index_name"
    index_kinds = ("flat", "hnsw")
    dev_server = "cbir.servers.elasticsearch"
    declared_settings = (
        Setting("url", str, DEFAULT_URL, "the server", env="CBIR_ELASTICSEARCH_URL"),
        Setting("index_name", str, "cbir", "the index's name there (a new cbir collection "
                "gets one of its own)"),
        Setting("index", str, "flat", "index spec: flat (exact) | "
                "hnsw[:M=32,ef_construction=200] (knn)"),
        Setting("search", str, "", "search spec: ef=128 (hnsw: knn's num_candidates)"),
        Setting("shards", int, None, "primary shards of a new index (2 for flat, whose "
                "scan the shards share across cores; 1 for hnsw, one graph to search)"),
        Setting("replicas", int, 0, "replicas of a new index"),
        Setting("batch", int, DEFAULT_BATCH, "queries per _msearch request"),
        Setting("timeout", float, 30.0, "seconds per request"),
        Setting("api_key", str, "", "an API key", secret=True, env="CBIR_ELASTICSEARCH_API_KEY"),
        Setting("user", str, "", "a user (with password)", secret=True,
                env="CBIR_ELASTICSEARCH_USER"),
        Setting("password", str, "", "the user's password", secret=True,
                env="CBIR_ELASTICSEARCH_PASSWORD"),
    )  # fmt: skip

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        url: str = DEFAULT_URL,
        index_name: str = "cbir",
        index: str = "flat",
        search: str = "",
        shards: int | None = None,
        replicas: int = 0,
        batch: int = DEFAULT_BATCH,
        timeout: float = 30.0,
        api_key: str = "",
        user: str = "",
        password: str = "",
    ) -> None:
        import elasticsearch  # optional dependency, imported when the backend is used

        from cbir.index.elasticsearch_json import serializers

        dim = check_dim_and_metric(dim, metric)
        if dim > req.MAX_DIMS:
            raise DimensionMismatchError(
                f"Elasticsearch indexes at most {req.MAX_DIMS}-d vectors; this index needs {dim}"
            )
        spec = parse_spec(index, kinds=self.index_kinds)
        self.dim = dim
        self.metric = metric
        self.index_name = index_name
        self.spec = spec
        # knn's candidates per shard; None: an exact (script_score) search
        self.num_candidates = parse_search(search, spec.kind)["ef"] if spec.kind == "hnsw" else None
        self.batch = check_batch(batch)
        self.url = url
        self._errors = elasticsearch
        self._client = elasticsearch.Elasticsearch(
            self.url, request_timeout=timeout, serializers=serializers(),
            **credentials(api_key, user, password),
        )  # fmt: skip
        graph = dict(spec.params) if spec.kind == "hnsw" else None
        if shards is None:  # measured (benchmarks/README.md): a flat search is a script scan
            # of every document, which 2 shards split between 2 cores: one query's server
            # time 10 -> 6.4 ms at 50,000 CIFAR-10 gch vectors, batches as fast; an hnsw
            # search would search each shard's graph as deep as one graph, twice the work
            shards = FLAT_SHARDS if graph is None else 1
        self._call(self._ensure_index, req.index_body(self.dim, metric, shards, replicas, graph))

    # --- declaration -------------------------------------------------------------------------
    @classmethod
    def upgrade(cls, stored: dict[str, Any]) -> dict[str, Any]:
        """Settings stored in this backend's old vocabulary (LEGACY_SEARCH), as specs."""
        legacy = {key: stored[key] for key in LEGACY_DEFAULTS if key in stored}
        mode = stored.get("search")
        if mode not in LEGACY_SEARCH and not legacy:
            return stored  # today's vocabulary (or nothing: exact, then and now)
        p = {**LEGACY_DEFAULTS, **legacy}
        settings = {key: value for key, value in stored.items() if key not in LEGACY_DEFAULTS}
        if mode == "knn":
            settings["index"] = f"hnsw:M={p['hnsw_m']},ef_construction={p['ef_construction']}"
            settings["search"] = f"ef={p['num_candidates']}"
        else:  # exact; hnsw_m / ef_construction only shaped a graph exact searches never use
            settings["index"], settings["search"] = "flat", ""
        return settings

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
        knn = self.num_candidates is not None
        for part in batches(len(queries), self.batch):
            searches: list[dict[str, Any]] = []
            for query in queries[part]:
                body = (
                    req.knn_search(query, self.metric, size, self.num_candidates)
                    if knn
                    else req.exact_search(query, self.metric, size)
                )
                searches.extend([{"index": self.index_name}, body])
            timing.start()
            response = self._call(self._msearch, searches, len(queries[part]))
            timing.stop(server_s=response.get("took", 0) / 1000)
            answers = []
            for result in response["responses"]:
                error = result.get("error")
                if error:
                    if error.get("type") == "index_not_found_exception":
                        raise CbirError(
                            f"Elasticsearch index {self.index_name!r} is missing at {self.url}"
                        )
                    raise CbirError(f"Elasticsearch search failed: {error.get('reason', error)}")
                answers.append(req.parse_hits(result, self.metric, knn))
            rescore_near_ties(
                queries[part], answers, self._vectors, SCORE_ROUNDING, req.inexact(self.metric)
            )
            for query, (ids, scores) in zip(queries[part], answers, strict=True):
                # a zero query ties every document at 0: the server's id order is then exact
                yield ids, scores, not query.any()

    def _vectors(self, ids: set[str]) -> dict[str, np.ndarray]:
        """Stored vectors of a few candidates (near-ties), by id; one request per 1,000."""
        wanted = sorted(ids)
        found: dict[str, np.ndarray] = {}
        for part in batches(len(wanted), VECTOR_CHUNK):
            response = self._call(
                self._client.mget, index=self.index_name, ids=wanted[part],
                source_includes=["features"],
            )  # fmt: skip
            found.update(req.vectors(response, self.dim))
        return found

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
            f"index_name={self.index_name!r}, index={str(self.spec)!r})"
        )


def credentials(api_key: str, user: str, password: str) -> dict[str, Any]:
    """The client's credentials: an API key, else a user and password; none when neither is
    set (a security-off development server)."""
    if api_key:
        return {"api_key": api_key}
    if user:
        return {"basic_auth": (user, password)}
    return {}
