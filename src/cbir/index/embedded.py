"""The embedded backend: exact top-k by inner product over float32 vectors held in memory.

Results are ordered as trec_eval orders a run (score descending, then id descending), and the
top k is chosen by that same order, so which of several tied documents make the cut at rank k
is decided by id too. A brute-force scan is exact and, with BLAS for the product and a
vectorised selection, fast enough for a few hundred thousand vectors on two cores.

On disk (`save` / `load`): `vectors.npy` (float32, storage order), `ids.npy` (numpy unicode)
and `index.json` (dim, metric, count), each written atomically; `index.json` is written last
and `load` checks that the three agree.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from cbir.errors import CollectionError
from cbir.index import register_backend
from cbir.index.backend import Backend
from cbir.index.base import (
    check_dim_and_metric,
    check_ids,
    check_k,
    check_new_entries,
    check_saved_ids,
    check_vectors,
    l2_normalise,
    quote,
    read_index_meta,
)
from cbir.storage import atomic_save_npy, atomic_write_json, load_npy

VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.npy"
META_FILE = "index.json"
FORMAT_VERSION = 1

# Queries are scored a block at a time, (rows, N) float32 of about BLOCK_BYTES per thread:
# 64 MB (335 queries at N = 50,000) bounds memory whatever N is, and the matrix product runs
# within ~10% of its speed on blocks twice as large.
BLOCK_BYTES = 64 << 20
MAX_BLOCK_ROWS = 1024  # also keeps row numbers within top_k's 16 bits
GROUP_SIZE = 8  # scores per group in `_candidates` (4..16 measured; 8 fastest)
# The project's core budget: large batches are split in two halves, each scanned by its own
# thread (numpy releases the GIL in BLAS and in the selection). With OpenBLAS on 2 threads
# this is as fast as one thread (the product already uses both cores); with a single-threaded
# BLAS (OPENBLAS_NUM_THREADS=1) it is ~2x faster, and the fastest setting measured.
THREADS = 2
# A small batch of queries (a server's concurrent searches, `cbir.web.batching`) is a product
# BLAS does badly: (8, 324) x (324, 50,000) took 20 ms here, three times one query's 6.5 ms,
# as it repacks the whole matrix. Scored instead a block of stored rows at a time (the block
# is packed from cache) and the rows split between THREADS threads, 8 queries took 9.4 ms
# (1 query 4.9, 32 queries 15 instead of 27). Larger batches keep the one product.
SMALL_BATCH = 64
ROW_BLOCK = 1024  # stored rows per product in a small batch (256..2048 measured alike)


@register_backend("embedded")
class ExactIndex(Backend):
    """Exact inner-product (or cosine) search over float32 vectors, trec_eval ordering (a
    LocalIndex; no settings)."""

    def __init__(self, dim: int, metric: str = "cosine") -> None:
        self.dim = check_dim_and_metric(dim, metric)
        self.metric = metric
        # Rows [0, count) of the buffer are the vectors in storage (insertion) order; spare
        # rows make repeated small adds amortised O(1).
        self._buffer = np.empty((0, self.dim), dtype=np.float32)
        self._count = 0
        self._ids: list[str] = []
        self._position: dict[str, int] = {}
        # Derived from the contents, rebuilt lazily after add/delete.
        self._id_array: np.ndarray | None = None
        self._rank: np.ndarray | None = None
        self._duplicates: tuple[np.ndarray, np.ndarray] | None = None
        # Each row's exact hash (see `find_duplicate_rows`), kept up to date by add and delete:
        # a server catching up with a few new rows every second then hashes only those rows
        # (0.17 s for all 60,000 rows of 324-d, on every catch-up, otherwise).
        self._row_hashes: np.ndarray | None = None

    # --- contents ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def __contains__(self, id_: object) -> bool:
        return id_ in self._position

    def ids(self) -> list[str]:
        """Ids in storage order (a copy)."""
        return list(self._ids)

    @property
    def vectors(self) -> np.ndarray:
        """The stored (normalised, for cosine) vectors in storage order, read-only."""
        view = self._buffer[: self._count]
        view.flags.writeable = False
        return view

    @property
    def tiebreak_rank(self) -> np.ndarray:
        """(N,) rank of each stored id in ascending string order (code points, which is the
        byte order of UTF-8, i.e. strcmp's): among equal scores, higher rank comes first."""
        if self._rank is None:
            order = np.argsort(self._id_array_cached(), kind="stable")
            rank = np.empty(self._count, dtype=np.int64)
            rank[order] = np.arange(self._count)
            rank.flags.writeable = False
            self._rank = rank
        return self._rank

    @property
    def duplicates(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, originals): positions whose vector is identical to that of an earlier
        position. BLAS computes the same dot product with different rounding in different
        rows of a matrix product (edge tiles), so identical vectors could score a few ulp
        apart; every score matrix copies the originals' scores onto their duplicates so that
        identical documents tie exactly, and the tie goes to the id, as trec_eval wants."""
        if self._duplicates is None:
            if self._row_hashes is None:
                self._row_hashes = row_hashes(self.vectors)
            self._duplicates = find_duplicate_rows(self.vectors, self._row_hashes)
        return self._duplicates

    def _id_array_cached(self) -> np.ndarray:
        if self._id_array is None:
            self._id_array = _as_unicode_array(self._ids)
        return self._id_array

    # --- changes -----------------------------------------------------------------------------
    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids, vectors = check_new_entries(ids, vectors, self.dim, present=self._position)
        if self.metric == "cosine":
            vectors = l2_normalise(vectors)
        vectors = vectors + np.float32(0.0)  # -0.0 -> 0.0: equal vectors are equal bit for bit
        self._reserve(self._count + len(ids))
        self._buffer[self._count : self._count + len(ids)] = vectors
        self._position.update((id_, self._count + i) for i, id_ in enumerate(ids))
        self._ids.extend(ids)
        self._count += len(ids)
        self._invalidate()
        if self._row_hashes is not None:
            self._row_hashes = np.concatenate([self._row_hashes, row_hashes(vectors)])

    def delete(self, ids: Sequence[str]) -> int:
        """Remove the given ids (unknown ones are ignored); returns how many were removed."""
        doomed = {self._position[id_] for id_ in check_ids(ids) if id_ in self._position}
        if not doomed:
            return 0
        keep = np.ones(self._count, dtype=bool)
        keep[list(doomed)] = False
        self._buffer = self._buffer[: self._count][keep]  # a compact copy, order preserved
        self._ids = [id_ for id_, kept in zip(self._ids, keep.tolist(), strict=True) if kept]
        self._position = {id_: i for i, id_ in enumerate(self._ids)}
        self._count = len(self._ids)
        self._invalidate()
        if self._row_hashes is not None:
            self._row_hashes = self._row_hashes[keep]
        return len(doomed)

    def copy(self) -> ExactIndex:
        """An independent copy (see Backend.copy); the derived arrays are shared, as add and
        delete replace them rather than change them."""
        twin = copy.copy(self)
        twin._buffer = self._buffer[: self._count].copy()
        twin._ids = list(self._ids)
        twin._position = dict(self._position)
        return twin

    def close(self) -> None:
        """Nothing to release: the index lives in memory (or in a read-only memory map)."""

    def _reserve(self, needed: int) -> None:
        if needed <= len(self._buffer) and self._buffer.flags.writeable:
            return
        capacity = max(needed, len(self._buffer) * 3 // 2)
        grown = np.empty((capacity, self.dim), dtype=np.float32)
        grown[: self._count] = self._buffer[: self._count]
        self._buffer = grown

    def _invalidate(self) -> None:
        self._id_array = None
        self._rank = None
        self._duplicates = None

    # --- search ------------------------------------------------------------------------------
    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(Q, N) float32 scores of every stored vector, in storage order (identical vectors
        score exactly the same, see `duplicates`)."""
        scores = self._prepare_queries(queries) @ self.vectors.T
        _equalise_duplicates(scores, self.duplicates)
        return scores

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Top-k ids and float32 scores (Q, min(k, N)) per query, in trec_eval order."""
        check_k(k)
        queries = self._prepare_queries(queries)
        k = min(int(k), self._count)
        if k == 0:
            return [[] for _ in range(len(queries))], np.zeros((len(queries), 0), np.float32)
        positions = np.empty((len(queries), k), dtype=np.intp)
        top_scores = np.empty((len(queries), k), dtype=np.float32)
        # lazily built state (rank, duplicates) is made here, before any thread could race
        scan = partial(
            _scan, vectors=self.vectors, rank=self.tiebreak_rank, dups=self.duplicates, k=k
        )
        spans = _split(len(queries), THREADS if len(queries) > _block_rows(self._count) else 1)
        if len(spans) == 1:  # single queries and small batches: no thread start-up
            scan(queries, positions=positions, top_scores=top_scores)
        else:
            with ThreadPoolExecutor(len(spans)) as pool:
                jobs = [
                    pool.submit(scan, queries[s], positions=positions[s], top_scores=top_scores[s])
                    for s in spans
                ]
                for job in jobs:
                    job.result()
        return self._id_array_cached()[positions].tolist(), top_scores

    def _prepare_queries(self, queries: np.ndarray) -> np.ndarray:
        queries = check_vectors(queries, self.dim, what="queries")
        return l2_normalise(queries) if self.metric == "cosine" else queries

    # --- persistence -------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        atomic_save_npy(folder / VECTORS_FILE, self._buffer[: self._count])
        atomic_save_npy(folder / IDS_FILE, self._id_array_cached())
        meta = {
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "metric": self.metric,
            "count": self._count,
        }
        atomic_write_json(folder / META_FILE, meta)  # last: it vouches for the other two

    @classmethod
    def load(cls, folder: Path, mmap: bool = False) -> ExactIndex:
        """Read what `save` wrote; with mmap=True the vectors stay in a read-only memory map
        (copied on the first add)."""
        folder = Path(folder)
        meta = _read_meta(folder)
        try:
            vectors = load_npy(folder / VECTORS_FILE, mmap=mmap)
            ids = load_npy(folder / IDS_FILE)
        except (OSError, ValueError, EOFError) as error:
            raise CollectionError(f"cannot read the index in {folder}: {error}") from error
        if vectors.dtype != np.float32 or vectors.shape != (meta["count"], meta["dim"]):
            raise CollectionError(
                f"index in {folder} is inconsistent: {VECTORS_FILE} holds {vectors.dtype} "
                f"{vectors.shape}, {META_FILE} promises float32 ({meta['count']}, {meta['dim']})"
            )
        check_saved_ids(ids, meta["count"], folder, IDS_FILE, META_FILE)
        index = cls(meta["dim"], meta["metric"])
        index._ids = ids.tolist()
        index._position = {id_: i for i, id_ in enumerate(index._ids)}
        if len(index._position) != len(index._ids):
            repeated = [id_ for id_, n in Counter(index._ids).items() if n > 1]
            raise CollectionError(f"index in {folder} holds duplicate ids: {quote(repeated)}")
        index._buffer = vectors
        index._count = len(vectors)
        index._id_array = ids
        return index

    def __repr__(self) -> str:
        return f"ExactIndex(dim={self.dim}, metric={self.metric!r}, count={self._count})"


def _scan(
    queries: np.ndarray,
    *,
    vectors: np.ndarray,
    rank: np.ndarray,
    dups: tuple[np.ndarray, np.ndarray],
    k: int,
    positions: np.ndarray,
    top_scores: np.ndarray,
) -> None:
    """Fill positions/top_scores (Q, k) for `queries`, one block of rows at a time, reusing
    one score buffer (fresh pages for every block would cost more than the selection)."""
    step = _block_rows(len(vectors))
    block = np.empty((min(step, len(queries)), len(vectors)), dtype=np.float32)
    for start in range(0, len(queries), step):
        chunk = queries[start : start + step]
        scores = _product(chunk, vectors, out=block[: len(chunk)])
        _equalise_duplicates(scores, dups)
        rows = slice(start, start + len(chunk))
        positions[rows], top_scores[rows] = top_k(scores, k, rank)


def _product(queries: np.ndarray, vectors: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = queries @ vectors.T; a small batch by blocks of stored rows, in parallel."""
    if not 1 < len(queries) <= SMALL_BATCH or len(vectors) < THREADS * ROW_BLOCK:
        return np.matmul(queries, vectors.T, out=out)
    transposed = np.ascontiguousarray(queries.T)
    by_row = np.empty((len(vectors), len(queries)), dtype=np.float32)  # out, transposed
    blocks = len(vectors) // ROW_BLOCK
    # One call per thread: numpy loops over the blocks of a stacked product in C, without
    # taking the GIL between them (a Python loop would queue for it after every block).
    stacked = vectors[: blocks * ROW_BLOCK].reshape(blocks, ROW_BLOCK, -1)
    stacked_out = by_row[: blocks * ROW_BLOCK].reshape(blocks, ROW_BLOCK, -1)
    spans = _split(blocks, THREADS)
    jobs = [
        _row_pool().submit(np.matmul, stacked[span], transposed, out=stacked_out[span])
        for span in spans[1:]
    ]
    np.matmul(stacked[spans[0]], transposed, out=stacked_out[spans[0]])  # this thread's share
    np.matmul(vectors[blocks * ROW_BLOCK :], transposed, out=by_row[blocks * ROW_BLOCK :])
    for job in jobs:
        job.result()
    out[...] = by_row.T
    return out


@cache
def _row_pool() -> ThreadPoolExecutor:
    """Threads for the shares of small batches, for the life of the process (a pool per
    search would start threads on every server request)."""
    return ThreadPoolExecutor(THREADS - 1, thread_name_prefix="cbir-scan")


def top_k(scores: np.ndarray, k: int, tiebreak_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of each row of `scores` (Q, N), ordered by score descending then tiebreak
    rank descending: (positions (Q, k'), scores (Q, k')), k' = min(k, N); k > 0, Q < 65,536.

    Ranking all (Q, N) 64-bit keys would cost far more than the matrix product; instead
    `_candidates` keeps, in one pass, a superset of each row's top k (every tie at the
    boundary included), and only those few are sorted by key = (score bits << 32) | rank.
    """
    n_queries, n = scores.shape
    k = min(k, n)
    if k < n:
        rows, cols = _candidates(scores, k)
    else:
        rows, cols = np.divmod(np.arange(n_queries * n), n)
    # -0.0 -> 0.0: equal scores, as trec_eval sees them
    values = scores.reshape(-1).take(rows * n + cols) + np.float32(0.0)
    keys = _sortable_bits(values).astype(np.uint64) << np.uint64(32)
    keys |= tiebreak_rank[cols].astype(np.uint64)
    # By row, then key descending: keys are unique within a row, so a fast unstable sort of
    # the keys followed by a stable (radix) sort of the 16-bit row numbers does it.
    by_key = np.argsort(~keys)
    order = by_key[np.argsort(rows[by_key].astype(np.uint16), kind="stable")]
    # Every row has >= k candidates: take the first k of each row's run.
    starts = np.zeros(n_queries, dtype=np.intp)
    np.cumsum(np.bincount(rows, minlength=n_queries)[:-1], out=starts[1:])
    chosen = order[(starts[:, None] + np.arange(k)).ravel()]
    return cols[chosen].reshape(n_queries, k), values[chosen].reshape(n_queries, k)


def _candidates(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols), rows ascending, of a superset of each row's k largest scores, every tie
    with the k-th included; 0 < k < N.

    Column c joins group c mod G. A row's threshold t is its k-th largest group maximum: at
    least k groups reach t, so at least k scores do, so t <= the k-th largest score; and every
    score >= t lies in a group whose maximum is >= t. So only the ~k groups reaching t are
    read again. The maxima take one SIMD pass over the block, and the partition works on
    1/GROUP_SIZE of it; strided groups keep that pass fast, at the price of one cache miss
    per re-read score, hence small groups.
    """
    n_queries, n = scores.shape
    # >= 4k groups to choose from; and no more than sqrt(N) per group, so that the N mod size
    # columns left over (< size <= groups) each join a group of their own
    size = max(1, min(GROUP_SIZE, n // (4 * k), math.isqrt(n)))
    groups = n // size
    main = groups * size
    maxima = scores[:, :main].reshape(n_queries, size, groups).max(axis=1)
    left = n - main  # columns main + j (j < left) join group j
    if left:
        np.maximum(maxima[:, :left], scores[:, main:], out=maxima[:, :left])
    threshold = np.partition(maxima, groups - k, axis=1)[:, groups - k]
    rows, group = np.divmod(np.flatnonzero(maxima >= threshold[:, None]), groups)
    members = size + (left > 0)
    cols = (group[:, None] + groups * np.arange(members)).ravel()
    rows = np.repeat(rows, members)
    if left:
        inside = cols < n
        rows, cols = rows[inside], cols[inside]
    keep = scores.reshape(-1).take(rows * n + cols) >= threshold[rows]
    return rows[keep], cols[keep]


def row_hashes(vectors: np.ndarray) -> np.ndarray:
    """(N,) uint64: an exact integer hash of each row (its uint32 bits times fixed odd
    weights, summed mod 2**64: no rounding, unlike a float product)."""
    dim = vectors.shape[1]
    weights = np.random.default_rng(0).integers(1, 1 << 63, dim, dtype=np.uint64) | np.uint64(1)
    return np.ascontiguousarray(vectors, dtype=np.float32).view(np.uint32) @ weights


def find_duplicate_rows(
    vectors: np.ndarray, hashes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, originals) such that vectors[rows[i]] is bit-identical to vectors[originals[i]]
    and originals[i] < rows[i] is the first row with that vector.

    The rows' `row_hashes` (computed here unless given) find the candidates in one pass; rows
    that share a hash are then grouped exactly with np.unique, so a collision never misleads.
    """
    n, dim = vectors.shape
    none = np.zeros(0, dtype=np.intp)
    if n < 2:
        return none, none
    if hashes is None:
        hashes = row_hashes(vectors)
    _, group, sizes = np.unique(hashes, return_inverse=True, return_counts=True)
    shared = np.flatnonzero(sizes[group] > 1)  # storage order
    if len(shared) == 0:
        return none, none
    rows = np.ascontiguousarray(vectors[shared]).view(np.dtype((np.void, 4 * dim))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    originals = shared[first[inverse]]
    copies = originals != shared
    return shared[copies], originals[copies]


def _equalise_duplicates(scores: np.ndarray, dups: tuple[np.ndarray, np.ndarray]) -> None:
    rows, originals = dups
    if len(rows):
        scores[:, rows] = scores[:, originals]


def _sortable_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> uint32 with the same order (IEEE bits: flip negatives, set the sign bit of
    non-negatives); callers map -0.0 to 0.0 first so the two compare equal."""
    bits = values.view(np.uint32)
    return np.where(bits >> np.uint32(31) == 1, ~bits, bits | np.uint32(0x80000000))


def _block_rows(n: int) -> int:
    return max(1, min(MAX_BLOCK_ROWS, BLOCK_BYTES // (4 * max(n, 1))))


def _split(total: int, parts: int) -> list[slice]:
    """`parts` contiguous, nearly equal slices of range(total)."""
    bounds = np.linspace(0, total, parts + 1).round().astype(int)
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a] or [
        slice(0, total)
    ]


def _as_unicode_array(ids: list[str]) -> np.ndarray:
    return np.array(ids, dtype=str) if ids else np.zeros(0, dtype="<U1")


def _read_meta(folder: Path) -> dict[str, Any]:
    meta = read_index_meta(folder, META_FILE, {"dim": int, "metric": str, "count": int})
    path = folder / META_FILE
    if meta.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise CollectionError(
            f"{path} has format version {meta['format_version']}; this cbir reads "
            f"version {FORMAT_VERSION}: upgrade cbir or rebuild the index"
        )
    if meta["dim"] < 1 or meta["count"] < 0:
        raise CollectionError(f"{path} is malformed: {meta}")
    return meta
