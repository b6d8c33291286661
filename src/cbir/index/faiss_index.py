"""The "faiss" backend: approximate (HNSW, IVF-PQ) or exact search with faiss, chosen by a spec.

    FaissIndex(dim, index="auto", search="")   # see cbir.index.spec for the spec strings

faiss finds candidates; their scores are then recomputed here, exactly, from the raw vectors
(kept once, in faiss's own flat storage, read through a zero-copy view), and ordered as every
backend orders results (score descending, then id descending). So scores are true cosines
(or inner products), identical vectors tie bit for bit, a query scores the same alone or in a
batch, and only the choice of candidates is approximate. A search over-fetches candidates
(k + a quarter), and fetches again, twice as many, for any query whose k-th score might tie
with a candidate it did not fetch, or that lost candidates to deletion; when even a fetch of
everything cannot fill a query (a graph that does not reach every vector), that query is
answered by an exact scan.

String ids map to faiss int64 labels, the row each vector was added at. HNSW cannot remove a
vector, so a delete leaves a tombstone (the label's id becomes ""), searches skip tombstoned
labels, and once tombstones reach COMPACT_FRACTION of the labels the index is rebuilt from the
live vectors. A deleted id is never returned.

On disk (`save` / `load`): `faiss-<token>.index` (faiss.write_index), `ids-<token>.npy` (the
id of every label, "" for tombstones) and `index.json` (dim, metric, specs, counts, and the
names of the two files). index.json is written last, atomically, and is the commit: a crash
before it leaves the previous index.json pointing at the previous, untouched files. A save
whose faiss structure has not changed since the last save to the same folder (deletes only)
reuses the faiss file instead of writing it again.
"""

from __future__ import annotations

import copy
import logging
import re
import secrets
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cbir.errors import CbirError, CollectionError
from cbir.index import register_backend
from cbir.index.backend import Backend, Setting, lazy_import
from cbir.index.base import (
    check_dim_and_metric,
    check_ids,
    check_k,
    check_new_entries,
    check_saved_ids,
    check_vectors,
    l2_normalise,
    order_hits,
    quote,
    read_index_meta,
)
from cbir.index.embedded import top_k  # shared with ExactIndex
from cbir.index.spec import IndexSpec, format_search, parse_search, parse_spec, resolve
from cbir.storage import atomic_save_npy, atomic_write_json, atomic_writer, load_npy

faiss = lazy_import("faiss")  # loaded when an index is made, not when the CLI reads the settings
log = logging.getLogger(__name__)

META_FILE = "index.json"
FORMAT_VERSION = 1
_FILE_NAME = re.compile(r"(faiss-[0-9a-f]+\.index|ids-[0-9a-f]+\.npy)")

# Cores faiss may use (the project's budget), for calls with enough work to share: a search
# of PARALLEL_FROM queries or more, an add or training of PARALLEL_ADD_FROM vectors or more.
# Smaller calls run on one thread: waking faiss's second OpenMP thread while numpy's OpenBLAS
# threads spin made a 50,000 x 256 flat single query 15.8 ms at p50 instead of 1.9 ms, and
# training a 300-vector IVF-PQ 0.66 s instead of 0.04 s on a busy machine.
THREADS = 2
PARALLEL_FROM = 16
PARALLEL_ADD_FROM = 10_000
COMPACT_FRACTION = 0.25  # rebuild once this share of the labels are tombstones
MIN_OVERFETCH = 8  # candidates fetched beyond k, at least; k // 4 for large k
# Rescoring gathers (queries x candidates x dim) floats, and a batched exact scan scores
# (queries x vectors), a block at a time: 8M floats = 32 MB.
BLOCK_FLOATS = 8 << 20
MAX_SCAN_ROWS = 1024  # queries per exact-scan block; top_k takes fewer than 65,536
# Scores recomputed here differ from faiss's by float rounding; a fetch is complete when the
# k-th score beats the worst fetched candidate's faiss score by more than this (relative).
TIE_TOLERANCE = 1e-4


@register_backend("faiss")
class FaissIndex(Backend):
    """VectorIndex over faiss: exact (flat), HNSW or IVF-PQ candidates, exact scores (a
    LocalIndex)."""

    index_kinds = ("auto", "flat", "hnsw", "ivfpq")
    declared_settings = (
        Setting("index", str, "auto", "index spec: auto (exact while small, then hnsw) | flat "
                "| hnsw[:M=32,ef_construction=200] | ivfpq[:nlist=1024,m=32,nbits=8]"),
        Setting("search", str, "", "search spec: ef=128 (hnsw, auto) | "
                "nprobe=32,k_factor=4 (ivfpq)"),
    )  # fmt: skip

    def __init__(self, dim: int, metric: str = "cosine", index: str = "auto", search: str = ""):
        self.dim = check_dim_and_metric(dim, metric)
        self.metric = metric
        self.spec = parse_spec(index, kinds=self.index_kinds)
        if self.spec.kind == "ivfpq" and self.dim % self.spec.params["m"]:
            divisors = [m for m in range(1, min(self.dim, 64) + 1) if self.dim % m == 0]
            raise CbirError(
                f"ivfpq m={self.spec.params['m']} must divide the dimension {self.dim}; "
                f"try one of {divisors}"
            )
        self._search_params = parse_search(search, self.spec.kind)
        start = resolve(self.spec, 0, self.dim)  # flat until "auto" or "ivfpq" grow out of it
        self._use(_build(start, self.dim), start)
        self._ids: list[str] = []  # label -> id; "" once deleted
        self._labels: dict[str, int] = {}  # live id -> label
        self._alive = np.zeros(0, dtype=bool)  # label -> not a tombstone
        self._id_array: np.ndarray | None = None  # cached np.array(self._ids)
        self._version = 0  # bumped whenever the faiss structure changes
        self._saved: tuple[Path, int, str] | None = None  # (folder, version, faiss file)

    # --- contents ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, id_: object) -> bool:
        return id_ in self._labels

    def ids(self) -> list[str]:
        """Live ids in label (insertion) order."""
        return [id_ for id_ in self._ids if id_]

    @property
    def active(self) -> IndexSpec:
        """The structure in use now, e.g. flat while an "auto" index is small."""
        return self._active

    @property
    def tombstones(self) -> int:
        return len(self._ids) - len(self._labels)

    @property
    def search_params(self) -> dict[str, int]:
        return dict(self._search_params)

    def set_search(self, search: str) -> None:
        """Change the search parameters ("ef=256"); no rebuild needed."""
        self._search_params = parse_search(search, self.spec.kind)

    @property
    def settings(self) -> dict[str, str]:
        """What recreates this index: the keyword arguments of the constructor."""
        return {"index": str(self.spec), "search": format_search(self._search_params)}

    # --- changes -----------------------------------------------------------------------------
    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids, vectors = check_new_entries(ids, vectors, self.dim, present=self._labels)
        if not ids:
            return
        vectors = l2_normalise(vectors) if self.metric == "cosine" else vectors.copy()
        vectors += np.float32(0.0)  # -0.0 -> 0.0, as ExactIndex stores them
        target = resolve(self.spec, len(self) + len(ids), self.dim)
        # grow out of an exact scan ("auto" got large, "ivfpq" can train); never back into
        # one here, so adds and deletes around a threshold cannot rebuild again and again
        if self._active.kind == "flat" and target.kind != "flat":
            self._rebuild(target, extra_ids=ids, extra_vectors=vectors)
            return
        _set_threads(len(vectors), PARALLEL_ADD_FROM)
        self._index.add(vectors)
        first = len(self._ids)
        self._ids.extend(ids)
        self._labels.update((id_, first + i) for i, id_ in enumerate(ids))
        self._alive = np.concatenate([self._alive, np.ones(len(ids), dtype=bool)])
        self._id_array = None
        self._version += 1

    def delete(self, ids: Sequence[str]) -> int:
        """Tombstone the given ids (unknown ones are ignored); returns how many were removed."""
        doomed = [self._labels.pop(id_) for id_ in dict.fromkeys(check_ids(ids))
                  if id_ in self._labels]  # fmt: skip
        for label in doomed:
            self._ids[label] = ""
        self._alive[doomed] = False
        if self._id_array is not None:
            self._id_array[doomed] = ""
        if self.tombstones and self.tombstones >= COMPACT_FRACTION * len(self._ids):
            self.compact()
        return len(doomed)

    def compact(self) -> None:
        """Rebuild from the live vectors only: drops tombstones, relabels."""
        if self.tombstones:
            self._rebuild(resolve(self.spec, len(self), self.dim))

    def copy(self) -> FaissIndex:
        """An independent copy (see Backend.copy): faiss's structure cloned, the id maps
        copied."""
        twin = copy.copy(self)
        twin._use(faiss.clone_index(self._index), self._active)
        twin._ids = list(self._ids)
        twin._labels = dict(self._labels)
        twin._alive = self._alive.copy()
        return twin

    def close(self) -> None:
        """Nothing to release beyond memory, which Python frees with the object."""

    def _use(self, index: faiss.Index, active: IndexSpec) -> None:
        """Adopt a faiss index (the object that owns it) and typed views of its parts, kept
        here rather than downcast at every search: the searcher (HNSW, the IVF-PQ inside
        its refinement, or flat) and the flat storage of the raw vectors."""
        self._index, self._active = index, active
        typed = faiss.downcast_index(index)
        self._searcher = faiss.downcast_index(typed.base_index) if active.kind == "ivfpq" else typed
        self._flat = _storage(typed)

    def _rebuild(
        self,
        target: IndexSpec,
        extra_ids: Sequence[str] = (),
        extra_vectors: np.ndarray | None = None,
    ) -> None:
        """Replace the faiss structure by `target` over the live vectors (+ the extra ones)."""
        live = np.flatnonzero(self._alive)
        vectors = self._stored_vectors()[live]  # a copy: the old index is freed below
        if extra_vectors is not None:
            vectors = np.concatenate([vectors, extra_vectors])
        ids = [self._ids[label] for label in live.tolist()] + list(extra_ids)
        log.info("building %s over %d vectors", target, len(vectors))
        index = _build(target, self.dim)
        _set_threads(len(vectors), PARALLEL_ADD_FROM)
        if not index.is_trained:
            index.train(vectors)
        index.add(vectors)
        self._use(index, target)
        self._ids = ids
        self._labels = {id_: label for label, id_ in enumerate(ids)}
        self._alive = np.ones(len(ids), dtype=bool)
        self._id_array = None
        self._version += 1

    # --- search ------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Top-k ids and float32 scores (Q, min(k, len)) per query, in trec_eval order."""
        check_k(k)
        queries = check_vectors(queries, self.dim, what="queries")
        if self.metric == "cosine":
            queries = l2_normalise(queries)
        k = min(int(k), len(self))
        found_ids: list[list[str]] = [[] for _ in range(len(queries))]
        found_scores = np.zeros((len(queries), k), dtype=np.float32)
        if k == 0:
            return found_ids, found_scores
        total = self._index.ntotal
        # over-fetch for ties at the k-th place and for tombstones among the candidates
        fetch = min(total, -(-(k + max(MIN_OVERFETCH, k // 4)) * total // len(self)))
        pending = np.arange(len(queries))
        exhaustive = False
        while len(pending):
            if exhaustive:  # the structure could not fill these queries: scan everything
                labels = np.broadcast_to(np.arange(total), (len(pending), total))
                worst = np.full(len(pending), -np.inf, dtype=np.float32)
            else:
                labels, worst = self._candidates(queries[pending], fetch)
            # a query that got every label back has all there is: its top k is settled
            everything = (labels >= 0).all(axis=1) & (labels.shape[1] >= total)
            done = self._take_top(queries[pending], labels, worst, everything, k, pending,
                                  found_ids, found_scores)  # fmt: skip
            exhaustive = fetch >= total
            pending = pending[~done]
            fetch = min(total, 2 * fetch)
        return found_ids, found_scores

    def _candidates(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels (Q, n) with -1 for none, the worst fetched faiss score per query)."""
        _set_threads(len(queries), PARALLEL_FROM)
        kind = self._active.kind
        if kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self._search_params["ef"], fetch)
            scores, labels = self._searcher.search(queries, fetch, params=params)
        elif kind == "ivfpq":  # PQ scores are rough: fetch k_factor times more, rescore all
            params = faiss.SearchParametersIVF()
            params.nprobe = self._search_params["nprobe"]
            wanted = min(self._index.ntotal, fetch * self._search_params["k_factor"])
            scores, labels = self._searcher.search(queries, wanted, params=params)
        elif len(queries) >= PARALLEL_FROM:  # flat, batched: faiss's heaps are the slow part
            return self._scan_candidates(queries, fetch)
        else:
            scores, labels = self._searcher.search(queries, fetch)
        worst = np.where(labels >= 0, scores, np.inf).min(axis=1)
        return labels, worst

    def _scan_candidates(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-`fetch` labels by a BLAS product and ExactIndex's top-k selection, a
        block of queries at a time: 2,000 queries over 50,000 x 512 took 4.2 s in faiss's
        IndexFlat (one thread; 6.2 s on two), 1.25 s for the product alone."""
        store = self._stored_vectors()
        rank = np.arange(len(store))  # any order will do: the caller settles ties
        labels = np.empty((len(queries), fetch), dtype=np.int64)
        worst = np.empty(len(queries), dtype=np.float32)
        step = max(1, min(MAX_SCAN_ROWS, BLOCK_FLOATS // len(store)))
        for start in range(0, len(queries), step):
            rows = slice(start, start + step)
            positions, values = top_k(queries[rows] @ store.T, fetch, rank)
            labels[rows], worst[rows] = positions, values[:, -1]
        return labels, worst

    def _take_top(
        self,
        queries: np.ndarray,
        labels: np.ndarray,
        worst: np.ndarray,
        everything: np.ndarray,
        k: int,
        rows: np.ndarray,
        found_ids: list[list[str]],
        found_scores: np.ndarray,
    ) -> np.ndarray:
        """Rescore the candidates exactly, fill in the queries whose top k is settled, and
        return which ones are (the others need a larger fetch)."""
        usable = labels >= 0
        usable[usable] = self._alive[labels[usable]]
        scores = np.where(usable, self._exact_scores(queries, np.where(usable, labels, 0)),
                          -np.inf)  # fmt: skip
        order = np.argsort(-scores, axis=1, kind="stable")[:, : k + 1]
        top = np.take_along_axis(scores, order, axis=1)
        kth = top[:, k - 1]
        slack = TIE_TOLERANCE * np.maximum(1.0, np.abs(kth))
        done = (usable.sum(axis=1) >= k) & ((kth > worst + slack) | everything)
        tied = (top[:, 1:] == top[:, :-1]).any(axis=1)
        id_array = self._id_array_cached()
        for i in np.flatnonzero(done):
            if tied[i]:  # the larger id first among equal scores, as trec_eval orders them
                chosen = np.flatnonzero(usable[i])
                hits = order_hits(id_array[labels[i, chosen]].tolist(),
                                  scores[i, chosen].tolist())[:k]  # fmt: skip
                found_ids[rows[i]] = [id_ for id_, _ in hits]
                found_scores[rows[i]] = [score for _, score in hits]
            else:
                found_ids[rows[i]] = id_array[labels[i, order[i, :k]]].tolist()
                found_scores[rows[i]] = top[i, :k]
        return done

    def _exact_scores(self, queries: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(Q, n) float32 scores of stored vectors `labels` against each query.

        einsum computes every (query, vector) dot product with the same kernel, so a score
        depends only on the two vectors: identical vectors tie bit for bit, alone or in a
        batch (a BLAS product rounds differently in different rows; the contract tests
        check this). 2.4x faster than a product then a sum. -0.0 comes back as 0.0."""
        store = self._stored_vectors()
        out = np.empty(labels.shape, dtype=np.float32)
        n_rows, n_cols = labels.shape
        cols = max(1, min(n_cols, BLOCK_FLOATS // self.dim))
        rows = max(1, BLOCK_FLOATS // (cols * self.dim))
        for r in range(0, n_rows, rows):
            for c in range(0, n_cols, cols):
                block = store[labels[r : r + rows, c : c + cols]]
                out[r : r + rows, c : c + cols] = np.einsum(
                    "qkd,qd->qk", block, queries[r : r + rows]
                )
        return out + np.float32(0.0)

    def _stored_vectors(self) -> np.ndarray:
        """(ntotal, dim) float32 view of faiss's flat storage (every label, tombstones too);
        valid until the next add or rebuild."""
        flat = self._flat
        if flat.ntotal == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * self.dim).reshape(-1, self.dim)

    def _id_array_cached(self) -> np.ndarray:
        if self._id_array is None:
            self._id_array = np.array(self._ids, dtype=str) if self._ids else np.zeros(0, "<U1")
        return self._id_array

    # --- persistence -------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(6)
        here = folder.resolve()
        if (
            self._saved
            and self._saved[:2] == (here, self._version)
            and (folder / self._saved[2]).exists()
        ):
            faiss_file = self._saved[2]  # only tombstones changed: the faiss file stands
        else:
            faiss_file = f"faiss-{token}.index"
            _write_faiss(self._index, folder / faiss_file)
        ids_file = f"ids-{token}.npy"
        atomic_save_npy(folder / ids_file, self._id_array_cached())
        meta = {
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "metric": self.metric,
            "spec": str(self.spec),
            "active": str(self._active),
            "search": format_search(self._search_params),
            "count": len(self._ids),
            "live": len(self),
            "files": {"faiss": faiss_file, "ids": ids_file},
        }
        atomic_write_json(folder / META_FILE, meta)  # the commit
        self._saved = (here, self._version, faiss_file)
        for stale in folder.iterdir():
            if _FILE_NAME.fullmatch(stale.name) and stale.name not in (faiss_file, ids_file):
                stale.unlink(missing_ok=True)

    @classmethod
    def load(cls, folder: Path, search: str | None = None) -> FaissIndex:
        """Read what `save` wrote; `search` overrides the saved search parameters."""
        folder = Path(folder)
        meta = _read_meta(folder)
        files = meta["files"]
        try:
            faiss_index = faiss.read_index(str(folder / files["faiss"]))
            ids = load_npy(folder / files["ids"])
        except (OSError, ValueError, EOFError, RuntimeError) as error:
            raise CollectionError(f"cannot read the index in {folder}: {error}") from error
        try:
            index = cls(meta["dim"], meta["metric"], meta["spec"], meta["search"])
            active = parse_spec(meta["active"])
        except CbirError as error:
            raise CollectionError(f"{folder / META_FILE} is malformed: {error}") from error
        found = _describe(faiss_index)
        if found != active or faiss_index.d != index.dim or faiss_index.ntotal != meta["count"]:
            raise CollectionError(
                f"index in {folder} is inconsistent: {files['faiss']} holds {found} "
                f"({faiss_index.ntotal} x {faiss_index.d}), {META_FILE} promises {active} "
                f"({meta['count']} x {meta['dim']})"
            )
        check_saved_ids(ids, meta["count"], folder, files["ids"], META_FILE)
        index._use(faiss_index, active)
        index._ids = ids.tolist()
        index._alive = ids != ""
        index._labels = {id_: label for label, id_ in enumerate(index._ids) if id_}
        if len(index._labels) != int(index._alive.sum()) or len(index) != meta["live"]:
            repeated = [id_ for id_, n in Counter(ids[index._alive].tolist()).items() if n > 1]
            raise CollectionError(
                f"index in {folder} holds duplicate ids or a wrong count: {quote(repeated)}"
            )
        index._id_array = ids
        if search is not None:
            index.set_search(search)
        index._saved = (folder.resolve(), index._version, files["faiss"])
        return index

    def __repr__(self) -> str:
        return (
            f"FaissIndex(dim={self.dim}, metric={self.metric!r}, index={str(self.spec)!r}, "
            f"active={str(self._active)!r}, count={len(self)})"
        )


def _set_threads(work: int, parallel_from: int) -> None:
    """faiss's OpenMP threads for the next call from this thread (the setting is per thread)."""
    faiss.omp_set_num_threads(THREADS if work >= parallel_from else 1)


def _build(spec: IndexSpec, dim: int) -> faiss.Index:
    """An empty faiss index for a resolved spec (inner product; vectors come normalised)."""
    p = spec.params
    factory = {
        "flat": "Flat",
        "hnsw": f"HNSW{p.get('M')},Flat",
        "ivfpq": f"IVF{p.get('nlist')},PQ{p.get('m')}x{p.get('nbits')},RFlat",
    }[spec.kind]
    # The factory's object owns the C++ index; a downcast view of it owns nothing, so keep
    # the former and downcast at each use.
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if spec.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efConstruction = p["ef_construction"]
    if spec.kind == "ivfpq":  # the factory turns on polysemous training: slow, unused here
        faiss.downcast_index(faiss.downcast_index(index).base_index).do_polysemous_training = False
    return index


def _describe(index: faiss.Index) -> IndexSpec | None:
    """The spec a faiss index was built from (None: not one this backend makes)."""
    index = faiss.downcast_index(index)
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None
    if isinstance(index, faiss.IndexHNSWFlat):
        hnsw = index.hnsw
        return IndexSpec(
            "hnsw", {"M": hnsw.nb_neighbors(1), "ef_construction": hnsw.efConstruction}
        )
    if isinstance(index, faiss.IndexRefineFlat):
        base = faiss.downcast_index(index.base_index)
        if isinstance(base, faiss.IndexIVFPQ):
            params = {"nlist": base.nlist, "m": base.pq.M, "nbits": base.pq.nbits}
            return IndexSpec("ivfpq", params)
        return None
    return IndexSpec("flat") if isinstance(index, faiss.IndexFlat) else None


def _storage(index: faiss.Index) -> faiss.IndexFlat:
    """The flat index holding the raw vectors of any structure `_build` makes."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexHNSW):
        return faiss.downcast_index(index.storage)
    if isinstance(index, faiss.IndexRefine):
        return faiss.downcast_index(index.refine_index)
    return index


def _write_faiss(index: faiss.Index, path: Path) -> None:
    """faiss.write_index streamed through an atomic, fsynced file: durable before index.json
    names it, and never a full in-memory copy (1.3 GB for 1,000,000 x 256 HNSW)."""
    with atomic_writer(path, "wb") as handle:
        faiss.write_index(index, faiss.PyCallbackIOWriter(handle.write))


def _read_meta(folder: Path) -> dict[str, Any]:
    expected = {"format_version": int, "dim": int, "metric": str, "spec": str, "active": str,
                "search": str, "count": int, "live": int, "files": dict}  # fmt: skip
    meta = read_index_meta(folder, META_FILE, expected)
    path = folder / META_FILE
    if meta["format_version"] > FORMAT_VERSION:
        raise CollectionError(
            f"{path} has format version {meta['format_version']}; this cbir reads up to "
            f"{FORMAT_VERSION}. Upgrade cbir to open it"
        )
    files = meta["files"]
    if not all(isinstance(files.get(key), str) and _FILE_NAME.fullmatch(files[key])
               for key in ("faiss", "ids")):  # fmt: skip
        raise CollectionError(f"{path} is malformed: bad file names {files!r}")
    return meta
