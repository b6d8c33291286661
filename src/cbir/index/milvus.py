"""The "milvus" backend: vectors in a Milvus collection, through pymilvus's MilvusClient.

    MilvusIndex(dim, metric="cosine", uri="milvus.db", collection="cbir", index="flat",
                search="", batch=None, timeout=30.0)

The same code serves Milvus Lite (`uri` a local `.db` file, no server) and a Milvus server
(`uri` http://host:19530). `index` and `search` are specs in the grammar every backend shares
(`cbir.index.spec`): flat (Milvus's FLAT), ivf[:nlist=N] (IVF_FLAT, searched with nprobe=N)
or hnsw[:M=N,ef_construction=N] (HNSW, searched with ef=N). Settings resolution (`cbir.index`)
fills `uri` from $CBIR_MILVUS_URI and the token, when the server wants one, from
$CBIR_MILVUS_TOKEN only (never from settings, which collections store). Collections have
string primary keys and store vectors prepared as the embedded backend stores them (unit
length for cosine), searched by inner product (IP), so zero vectors need no special case.
Queries go `batch` at a time in one search request, answered lean (ids and Milvus's float32
similarities, never vectors) and ordered here (`cbir.index.remote`), so results follow the
VectorIndex order; `last_search` tells how the last search went (Milvus reports no server
time). A search sees every add and delete this process made before it (the first search after
one is Strong); the others are Bounded, so that they do not wait for the server's next tick,
and see another process's changes within Milvus's staleness bound (seconds). A process's
first search is Strong too, unless its collection says the server last changed longer ago
than that bound (`note_last_change`): a `cbir search` then answers without waiting for a tick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cbir.errors import CbirError, DimensionMismatchError
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

DEFAULT_URI = "milvus.db"
# spec kind -> (Milvus index type, its build parameters' names for the spec's)
INDEX_TYPES = {
    "flat": ("FLAT", {}),
    "ivf": ("IVF_FLAT", {"nlist": "nlist"}),
    "hnsw": ("HNSW", {"M": "M", "ef_construction": "efConstruction"}),
}
# Manifests written before the shared index-spec grammar store Milvus's own vocabulary:
# index="FLAT" | "IVF_FLAT" | "HNSW" with nlist, nprobe, M, ef_construction and ef beside it,
# and these defaults where absent. `MilvusIndex.upgrade` translates them, so that an old
# collection opens on the same server collection and searches with the same parameters.
LEGACY_INDEX = {"FLAT": "flat", "IVF_FLAT": "ivf", "HNSW": "hnsw"}
LEGACY_DEFAULTS = {"nlist": 128, "nprobe": 16, "M": 16, "ef_construction": 200, "ef": 128}
MAX_DIM = 32_768  # Milvus's limit for a float vector field
MAX_LIMIT = 16_384  # Milvus's largest top-k
MAX_ID_LENGTH = 512
INSERT_CHUNK = 2_000
QUERY_CHUNK = 1_000  # ids per `get`
# Milvus Lite (milvus-lite 3.x) holds unflushed rows as Python records and seals them all at
# once: 50,000 x 256-d rows sealed together raised the process's peak by ~0.9 GB. Sealing
# every 10,000 rows as they are added kept it to ~0.66 GB, at the same search speed (its
# compaction merges the small segments); every 4,000, to ~0.63 GB but 8% slower searches.
LITE_FLUSH_ROWS = 10_000
# queries per search request, measured (benchmarks/server_backends.py --batches): a server
# answers 1,024 faster than 256. Milvus Lite (a pure-Python engine in milvus-lite 3.x) loops
# in Python over every row once per request, then ~5 ms per query at 50,000 CIFAR-10 gch
# vectors: 64 a request gave 146 queries/s, 512 186 (client peak 697 MB), 2,048 196 (898 MB);
# a batch of 512 takes ~3 s there, well within the 30 s timeout up to ~10x as many vectors
DEFAULT_BATCH = 1_024
DEFAULT_LITE_BATCH = 512
MAX_NQ = 16_384  # Milvus refuses more queries in one search
LOAD_WAIT = 120.0  # s, at most, for the query node to serve freshly indexed segments
# Milvus's float32 scores of one vector differ with its place in a batched product: scores this
# close (relative) are rescored exactly from the vectors of those candidates
SCORE_ROUNDING = 1e-6
# Milvus's Bounded reads wait until the server has applied everything older than its
# `common.gracefulTime` (5 s by default); a change older than this is seen by a Bounded read.
BOUNDED_SETTLED_S = 10.0


# Milvus Lite has no timestamp service, so every query_iterator warns that it takes the
# client's clock instead: harmless (a Lite file has one writer), and noise on every sync.
logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(
    lambda record: "mvccTs" not in record.getMessage()
)
_lite_users: Counter[str] = Counter()  # open indexes per Milvus Lite file in this process


def lite_path(uri: str) -> str | None:
    """The absolute path of a Milvus Lite file URI, None for a server."""
    return os.path.abspath(uri) if uri.endswith(".db") and "://" not in uri else None


@register_backend("milvus")
class MilvusIndex(TimedSearches, Backend):
    """VectorIndex over a Milvus (or Milvus Lite) collection (a RemoteIndex)."""

    keeps_data = True  # the server (or Lite file) holds the vectors: collections sync it
    connection = "uri"
    name_setting = "collection"
    index_kinds = tuple(INDEX_TYPES)
    dev_server = "cbir.servers.milvus"
    declared_settings = (
        Setting("uri", str, DEFAULT_URI, "a Milvus Lite file (a relative path lives in the "
                "collection folder) or a server, http://host:19530", env="CBIR_MILVUS_URI"),
        Setting("collection", str, "cbir", "the collection's name there (a new cbir "
                "collection gets one of its own)"),
        Setting("index", str, "flat", "index spec: flat | ivf[:nlist=1024] | "
                "hnsw[:M=32,ef_construction=200]"),
        Setting("search", str, "", "search spec: nprobe=32 (ivf) | ef=128 (hnsw)"),
        Setting("batch", int, None, f"queries per search request ({DEFAULT_BATCH:,}; "
                f"{DEFAULT_LITE_BATCH} for Milvus Lite)"),
        Setting("timeout", float, 30.0, "seconds per request"),
        Setting("token", str, "", "the server's token", secret=True, env="CBIR_MILVUS_TOKEN"),
    )  # fmt: skip

    def __init__(
        self,
        dim: int,
        metric: str = "cosine",
        uri: str = DEFAULT_URI,
        collection: str = "cbir",
        index: str = "flat",
        search: str = "",
        batch: int | None = None,
        timeout: float = 30.0,
        token: str = "",
    ) -> None:
        import pymilvus  # optional dependency, imported when the backend is used

        dim = check_dim_and_metric(dim, metric)
        if dim > MAX_DIM:
            raise DimensionMismatchError(f"Milvus holds at most {MAX_DIM}-d vectors, not {dim}")
        spec = parse_spec(index, kinds=self.index_kinds)
        self.dim = dim
        self.metric = metric
        self.uri = uri
        self.collection = collection
        self.index_type, names = INDEX_TYPES[spec.kind]
        self._changed = True  # by this process since its last search
        self._timeout = timeout
        self._errors = pymilvus
        build = {names[key]: value for key, value in spec.params.items()}
        self._search_params = {"metric_type": "IP", "params": parse_search(search, spec.kind)}
        self._lite = lite_path(self.uri)
        self.batch = check_batch(
            batch if batch is not None else DEFAULT_LITE_BATCH if self._lite else DEFAULT_BATCH
        )
        try:
            self._client = self._call(pymilvus.MilvusClient, self.uri, token=token, timeout=timeout)
        except CbirError as error:
            if self._lite is not None:
                raise CbirError(
                    f"cannot open the Milvus Lite file {self.uri}: Milvus Lite serves one "
                    "process at a time, so another process may hold it (stop it, or use a "
                    f"Milvus server for concurrent access). {error}"
                ) from error
            raise
        if self._lite is not None:
            _lite_users[self._lite] += 1
        self._call(self._ensure_collection, build)
        _import_sparse_check()

    def note_last_change(self, changed_at: float | None) -> None:
        """What the collection knows of the server's last change (unix time, None: unknown).
        When it is older than Milvus's staleness bound and this process changed nothing, a
        Bounded read sees it all: the first search need not wait for the server's tick."""
        if changed_at is not None and time.time() - changed_at > BOUNDED_SETTLED_S:
            self._changed = False

    # --- declaration -------------------------------------------------------------------------
    @classmethod
    def locate(cls, settings: dict[str, Any], folder: Path) -> dict[str, Any]:
        """A Milvus Lite file given as a relative path lives in `folder` (a collection's:
        `milvus.db` by default), so a moved collection folder keeps its vectors."""
        place = str(settings.get("uri") or DEFAULT_URI)
        if "://" not in place and not Path(place).is_absolute():
            return {**settings, "uri": str(Path(folder) / place)}
        return settings

    @classmethod
    def upgrade(cls, stored: dict[str, Any]) -> dict[str, Any]:
        """Settings stored in Milvus's own vocabulary (LEGACY_INDEX), as index/search specs."""
        legacy = {key: stored[key] for key in LEGACY_DEFAULTS if key in stored}
        kind = LEGACY_INDEX.get(stored.get("index", "FLAT"))
        if kind is None or (not legacy and "index" not in stored):
            return stored  # today's vocabulary (or nothing: flat, then and now)
        p = {**LEGACY_DEFAULTS, **legacy}
        settings = {key: value for key, value in stored.items() if key not in LEGACY_DEFAULTS}
        settings["index"], settings["search"] = {
            "flat": ("flat", ""),
            "ivf": (f"ivf:nlist={p['nlist']}", f"nprobe={p['nprobe']}"),
            "hnsw": (f"hnsw:M={p['M']},ef_construction={p['ef_construction']}", f"ef={p['ef']}"),
        }[kind]
        return settings

    # --- plumbing ----------------------------------------------------------------------------
    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except self._errors.MilvusException as error:
            raise CbirError(f"Milvus at {self.uri} failed: {error}") from error

    def _ensure_collection(self, build_params: dict[str, Any]) -> None:
        from pymilvus import DataType, MilvusClient

        client = self._client
        if client.has_collection(self.collection):
            fields = client.describe_collection(self.collection)["fields"]
            dims = [f.get("params", {}).get("dim") for f in fields if f["name"] == "vector"]
            if [int(d) for d in dims if d is not None] != [self.dim]:
                raise DimensionMismatchError(
                    f"Milvus collection {self.collection!r} holds {dims} vectors; "
                    f"this index needs {self.dim}-d"
                )
            client.load_collection(self.collection)
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_LENGTH)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        index_params = MilvusClient.prepare_index_params()
        index_params.add_index(
            field_name="vector",
            index_type=self.index_type,
            metric_type="IP",
            params=build_params,
        )
        client.create_collection(
            self.collection,
            schema=schema,
            index_params=index_params,
            consistency_level="Strong",
            timeout=self._timeout,
        )

    # --- VectorIndex -------------------------------------------------------------------------
    def __len__(self) -> int:
        rows = self._call(
            self._client.query, self.collection, filter="", output_fields=["count(*)"]
        )
        return int(rows[0]["count(*)"])

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        too_long = [id_ for id_ in check_ids(ids) if len(id_.encode()) > MAX_ID_LENGTH]
        if too_long:
            raise CbirError(f"Milvus ids are at most {MAX_ID_LENGTH} bytes: {quote(too_long)}")
        present = set(self._present(check_ids(ids)))
        ids, vectors = check_new_entries(ids, vectors, self.dim, present)
        vectors = prepare(vectors, self.dim, self.metric)
        unsealed = 0
        for start in range(0, len(ids), INSERT_CHUNK):
            rows = [
                {"id": id_, "vector": vector}
                for id_, vector in zip(
                    ids[start : start + INSERT_CHUNK],
                    vectors[start : start + INSERT_CHUNK].tolist(),
                    strict=True,
                )
            ]
            self._changed = True
            self._call(self._client.insert, self.collection, rows, timeout=self._timeout)
            unsealed += len(rows)
            if self._lite is not None and unsealed >= LITE_FLUSH_ROWS:
                self._call(self._client.flush, self.collection, timeout=self._timeout)
                unsealed = 0

    def delete(self, ids: Sequence[str]) -> int:
        """Remove the given ids (unknown ones are ignored); returns how many were removed."""
        # Milvus's delete count is the number of ids asked for, so count what exists first
        present = self._present(list(dict.fromkeys(check_ids(ids))))
        for start in range(0, len(present), QUERY_CHUNK):
            chunk = present[start : start + QUERY_CHUNK]
            self._changed = True
            self._call(self._client.delete, self.collection, ids=chunk, timeout=self._timeout)
        return len(present)

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        k = check_k(k)
        queries = prepare(queries, self.dim, self.metric, what="queries")
        self._new_timing()
        return search_in_rounds(queries, k, MAX_LIMIT, self._fetch, tolerance=SCORE_ROUNDING)

    def close(self) -> None:
        self._client.close()
        if self._lite is not None and _lite_users[self._lite] > 0:
            _lite_users[self._lite] -= 1
            if _lite_users[self._lite] == 0:
                # Milvus Lite runs its server inside this process until exit, holding the
                # file's lock: release it, so that other processes (cbir verify, a later
                # `cbir index`) can open the collection while this one goes on.
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self._lite)

    def compact(self, timeout: float = 600.0) -> None:
        """After a bulk load: seal the growing segments (flush), wait, at most `timeout` s,
        until the index covers every row, then until the query node serves the sealed,
        indexed segments. Milvus 2.3.5 swaps them in ~15 s after the index is built; until
        then searches run on the growing segment (measured: HNSW recall@100 0.983 and half
        the speed), and an index still building competes with searches for the cores."""
        self._call(self._client.flush, self.collection, timeout=self._timeout)
        if self._lite is not None:
            return  # Milvus Lite builds its index as it seals, within flush
        deadline = time.monotonic() + timeout
        while True:
            state = self._call(self._client.describe_index, self.collection, "vector")
            if int(state.get("pending_index_rows", 0)) == 0 and state.get("state") != "InProgress":
                break
            if time.monotonic() > deadline:
                raise CbirError(
                    f"Milvus did not finish indexing {self.collection!r} within {timeout:.0f} s"
                )
            time.sleep(1.0)
        rows = int(state.get("total_rows", 0))
        # rows deleted since may never come back as loaded: a bounded wait, and searches are
        # right either way (only slower)
        deadline = min(deadline, time.monotonic() + LOAD_WAIT)
        while time.monotonic() < deadline:
            loaded = self._call(
                self._client.list_loaded_segments, self.collection, timeout=self._timeout
            )
            # a FLAT index is the raw vectors: its segments carry no index id
            served = sum(s.num_rows for s in loaded if s.index_id or self.index_type == "FLAT")
            if served >= rows:
                return
            time.sleep(1.0)

    def drop(self) -> None:
        """Drop the whole Milvus collection."""
        self._call(self._client.drop_collection, self.collection)

    def ids(self) -> Iterator[str]:
        """Every id in the collection, a page at a time."""
        pages = self._call(
            self._client.query_iterator, self.collection, batch_size=QUERY_CHUNK,
            output_fields=["id"], timeout=self._timeout,
        )  # fmt: skip
        try:
            while page := self._call(pages.next):
                yield from (row["id"] for row in page)
        finally:
            pages.close()

    # --- requests ----------------------------------------------------------------------------
    def _present(self, ids: list[str]) -> list[str]:
        present: list[str] = []
        for start in range(0, len(ids), QUERY_CHUNK):
            rows = self._call(
                self._client.get,
                self.collection,
                ids=ids[start : start + QUERY_CHUNK],
                output_fields=["id"],
                timeout=self._timeout,
            )
            present.extend(row["id"] for row in rows)
        return present

    def _fetch(self, queries: np.ndarray, size: int) -> Iterator[Answer]:
        # Strong waits for the server's next time tick (~200 ms): only the first search after
        # this process changed the collection needs it, the others read as Bounded does
        level = "Strong" if self._changed else "Bounded"
        parts = list(batches(len(queries), self.batch))
        # A server gets the next request while the last one's answers are read and rescored
        # here, so that it searches while the client works: HNSW on 4,096 CIFAR-10 gch
        # queries, 1,010-1,147 -> 1,135-1,260 q/s. Not Milvus Lite: its engine is Python in
        # this process, and the two would share one interpreter lock (169 -> 155 q/s).
        ahead = self._lite is None
        sent = None
        for i, part in enumerate(parts):
            answers = self._receive(*(sent or self._send(queries[part], size, level)))
            sent = None
            if ahead and i + 1 < len(parts):
                sent = self._send(queries[parts[i + 1]], size, level)
            self._changed = False  # a Strong search went through: later ones see as much
            rescore_near_ties(
                queries[part], answers, lambda ids: self._vectors(level, ids), SCORE_ROUNDING
            )
            for ids, scores in answers:
                yield ids, scores, False

    def _send(self, queries: np.ndarray, size: int, level: str) -> tuple[Any, float, int]:
        """Send one search request, without waiting: (its pending answer, when it was sent,
        how many queries it holds)."""
        started = self.last_search.start()
        try:
            future = self._client.search(
                self.collection,
                data=list(queries),
                limit=size,
                # ids and scores only; Milvus Lite (3.x) answers `[]` with every field, vectors
                # included, and took 40% of its search time building them: asked for the id
                output_fields=["id"] if self._lite else [],
                search_params=self._params_for(size),
                consistency_level=level,
                timeout=self._timeout,
                _async=True,  # hands back the gRPC call, whose raw answer is read here
            )
        except (self._errors.MilvusException, _grpc_error()) as error:
            raise self._refused(error, len(queries)) from error
        return future, started, len(queries)

    def _receive(
        self, future: Any, started: float, count: int
    ) -> list[tuple[list[str], list[float]]]:
        """A sent search's answer: (ids, scores) of each query, read straight from the
        response's protobuf. pymilvus's own SearchResult builds a dict per hit: 1,024
        queries x 125 hits took ~0.65 s of client CPU, more than the server's HNSW search."""
        call = getattr(future, "_future", None)  # None: a pymilvus without it
        try:
            response = (call or future).result()  # the request's own deadline applies
            if call is not None and (response.status.code or response.status.error_code):
                status = response.status
                raise self._errors.MilvusException(code=status.code, message=status.reason)
        except (self._errors.MilvusException, _grpc_error()) as error:
            raise self._refused(error, count) from error
        self.last_search.stop(started=started)
        if call is None:  # pymilvus's own conversion
            return [(list(hits.ids), list(hits.distances)) for hits in response]
        data = response.results
        ids = list(data.ids.str_id.data)
        scores = list(data.scores)
        answers = []
        start = 0
        for hits in data.topks:
            answers.append((ids[start : start + hits], scores[start : start + hits]))
            start += hits
        return answers

    def _refused(self, error: Exception, count: int) -> CbirError:
        """A search refused (over Milvus's nq limit), or not answered within the timeout."""
        reason = getattr(error, "message", None) or str(error).splitlines()[0]
        return CbirError(
            f"Milvus at {self.uri} refused a search of {count} queries ({reason}): search in "
            f"smaller batches, e.g. --backend-option batch={max(1, min(self.batch, MAX_NQ) // 4)}"
        )

    def _vectors(self, level: str, ids: set[str]) -> dict[str, np.ndarray]:
        """Stored vectors of a few candidates (near-ties), by id; one request per 1,000."""
        vectors: dict[str, np.ndarray] = {}
        wanted = sorted(ids)
        for start in range(0, len(wanted), QUERY_CHUNK):
            rows = self._call(
                self._client.get,
                self.collection,
                ids=wanted[start : start + QUERY_CHUNK],
                output_fields=["vector"],
                consistency_level=level,
                timeout=self._timeout,
            )
            vectors.update((row["id"], np.asarray(row["vector"], np.float32)) for row in rows)
        return vectors

    def _params_for(self, limit: int) -> dict[str, Any]:
        params = dict(self._search_params["params"])
        if "ef" in params:  # Milvus refuses an HNSW search whose ef is below its limit
            params["ef"] = max(params["ef"], limit)
        return {**self._search_params, "params": params}

    def __repr__(self) -> str:
        return (
            f"MilvusIndex(dim={self.dim}, metric={self.metric!r}, uri={self.uri!r}, "
            f"collection={self.collection!r}, index={self.index_type!r})"
        )


def _import_sparse_check() -> None:
    """pymilvus tells sparse query matrices from dense ones by importing scipy.sparse on its
    first search (0.2 s on this machine, all of a first `cbir search`'s search time): import
    it now, with the client's other imports, where opening the index pays for start-up."""
    with contextlib.suppress(ImportError):  # no scipy: pymilvus checks nothing then
        import scipy.sparse  # noqa: F401


def _grpc_error() -> type[Exception]:
    import grpc  # loaded with pymilvus, which the index imported

    return grpc.RpcError
