"""Shared by the server backends (Elasticsearch, Milvus): ranking the server's answers, and
timing its round trips.

A server answers each query with candidate ids and one similarity each, never their vectors
(a 256-d vector weighs a hundred times more than its id and score, and parsing vectors was
what made server searches slow and Milvus Lite runs grow to gigabytes). Candidates are ordered
here by `order_hits` (score descending, then id descending), so ties break as in every
backend. A server ranks with its own float rounding, so a fetch is known to hold the true top
k only when the k-th score beats the worst fetched candidate by more than that rounding;
otherwise the caller fetches again, more. A server whose scores may round identical vectors
differently, or returns them rounded to float32 (Elasticsearch), has its near-ties rescored
exactly (`rescore_near_ties`) from the vectors of those few candidates only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from cbir.errors import CbirError
from cbir.index.base import check_vectors, l2_normalise, order_hits

MIN_OVERFETCH = 8


@dataclass
class SearchTiming:
    """How the last `search` went: requests sent, their wall time as the client saw it, and
    the time the server reports having spent (None when the server reports none)."""

    round_trips: int = 0
    round_trip_s: float = 0.0
    server_s: float | None = None
    _started: float = field(default=0.0, repr=False)

    def start(self) -> float:
        """Mark a request sent; returns the mark, for a caller with several in flight."""
        self._started = time.perf_counter()
        return self._started

    def stop(self, server_s: float | None = None, started: float | None = None) -> None:
        """Count a request answered: sent at `started`, else at the last `start`."""
        self.round_trips += 1
        self.round_trip_s += time.perf_counter() - (self._started if started is None else started)
        if server_s is not None:
            self.server_s = (self.server_s or 0.0) + server_s

    def as_dict(self) -> dict[str, float | int | None]:
        ms = None if self.server_s is None else round(1000 * self.server_s, 3)
        return {
            "round_trips": self.round_trips,
            "round_trip_ms": round(1000 * self.round_trip_s, 3),
            "server_ms": ms,
        }


class TimedSearches:
    """`last_search`: the SearchTiming of the last search made by the calling thread (a web
    server's threads share one index, and each reports its own request's timing)."""

    _local: threading.local

    @property
    def last_search(self) -> SearchTiming:
        if not hasattr(self, "_local"):
            self._local = threading.local()
        return getattr(self._local, "timing", None) or SearchTiming()

    def _new_timing(self) -> SearchTiming:
        if not hasattr(self, "_local"):
            self._local = threading.local()
        self._local.timing = SearchTiming()
        return self._local.timing


def prepare(vectors: np.ndarray, dim: int, metric: str, what: str = "vectors") -> np.ndarray:
    """Checked float32 rows, unit length for cosine (zero rows stay zero), -0.0 made 0.0."""
    vectors = check_vectors(vectors, dim, what)
    if metric == "cosine":
        vectors = l2_normalise(vectors)
    return vectors + np.float32(0.0)


def fetch_size(k: int) -> int:
    return k + max(MIN_OVERFETCH, k // 4)


def check_batch(batch: object) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        raise CbirError(f"batch (queries per request) must be a positive integer, got {batch!r}")
    return int(batch)


def batches(count: int, batch: int) -> Iterator[slice]:
    for start in range(0, count, batch):
        yield slice(start, min(start + batch, count))


def top_k(
    ids: Sequence[str], scores: Sequence[float], k: int, complete: bool, tolerance: float
) -> tuple[list[str], list[float]] | None:
    """The top k of one query's candidates in the VectorIndex order, or None when the server
    holds more than were fetched (`complete` False) and the k-th score is within `tolerance`
    (relative) of the worst fetched one: a document left out might tie with the k-th.
    Ordered by the float32 scores returned: a server's score parsed from JSON and one
    recomputed here may differ past float32's precision, and then tie."""
    hits = order_hits(ids, (np.asarray(scores, np.float32) + np.float32(0.0)).tolist())
    if not complete and hits:
        kth = hits[min(k, len(hits)) - 1][1]
        worst = hits[-1][1]
        if len(hits) < k or kth - worst <= tolerance * max(1.0, abs(kth)):
            return None
    top = hits[:k]
    return [id_ for id_, _ in top], [score for _, score in top]


# one query's answer: candidate ids, their similarities, and whether the server's order of
# them is already exact (it then holds no tie the fetch could have cut)
Answer = tuple[list[str], Sequence[float], bool]


def search_in_rounds(
    queries: np.ndarray,
    k: int,
    max_size: int,
    fetch: Callable[[np.ndarray, int], Iterable[Answer]],
    tolerance: float,
) -> tuple[list[list[str]], np.ndarray]:
    """Top k of each prepared query: `fetch(queries, size)` answers each with at most `size`
    candidates; queries whose boundary was unsure are asked again, twice as many."""
    if k > max_size:
        raise CbirError(f"k={k} is too large: this backend returns at most {max_size:,} hits")
    rows: list[tuple[list[str], list[float]] | None] = [None] * len(queries)
    size = min(fetch_size(k), max_size)
    pending = list(range(len(queries)))
    while pending:
        for i, (ids, scores, exact_order) in zip(
            pending, fetch(queries[pending], size), strict=True
        ):
            # fewer hits than asked for: the server holds no more (no count request needed)
            complete = exact_order or len(ids) < size or size >= max_size
            rows[i] = top_k(ids, scores, k, complete, tolerance)
        pending = [i for i in pending if rows[i] is None]
        size = min(size * 2, max_size)
    return as_results(rows)  # type: ignore[arg-type]


def near_ties(scores: Sequence[float], tolerance: float) -> list[int]:
    """Positions of the candidates whose score is within `tolerance` (relative) of another's:
    the only ones a server's rounding may have misordered or split from an exact tie."""
    values = np.asarray(scores, dtype=np.float64)
    if len(values) < 2:
        return []
    order = np.argsort(-values, kind="stable")
    ranked = values[order]
    close = ranked[:-1] - ranked[1:] <= tolerance * np.maximum(1.0, np.abs(ranked[:-1]))
    tied = np.zeros(len(values), dtype=bool)
    tied[:-1] |= close
    tied[1:] |= close
    return sorted(order[tied].tolist())


def rescore_near_ties(
    queries: np.ndarray,
    answers: Sequence[tuple[list[str], list[float]]],
    vectors_of: Callable[[set[str]], dict[str, np.ndarray]],
    tolerance: float,
    inexact: Callable[[np.ndarray], np.ndarray] | None = None,
) -> None:
    """Replace, in place, each answer's near-tied scores (`near_ties`), and those `inexact`
    marks (a mask over a query's scores), by exact similarities computed here from those
    candidates' stored vectors, fetched with one `vectors_of` call for the whole batch; a
    candidate it no longer finds (deleted meanwhile) keeps its score. A zero query ties
    every candidate, at exactly 0 already: none of its candidates is fetched."""
    tied = [
        near_ties(scores, tolerance) if query.any() else []
        for query, (_, scores) in zip(queries, answers, strict=True)
    ]
    if inexact is not None:
        tied = [
            sorted({*js, *np.flatnonzero(inexact(np.asarray(scores))).tolist()})
            for js, (_, scores) in zip(tied, answers, strict=True)
        ]
    vectors = vectors_of({ids[j] for (ids, _), js in zip(answers, tied, strict=True) for j in js})
    for query, (ids, scores), js in zip(queries, answers, tied, strict=True):
        found = [j for j in js if ids[j] in vectors]
        exact = exact_scores(query, [vectors[ids[j]] for j in found])
        for j, score in zip(found, exact, strict=True):
            scores[j] = score


def exact_scores(query: np.ndarray, vectors: np.ndarray) -> list[float]:
    """Similarities of prepared float32 vectors to a prepared query, as float32 values:
    products summed in float64 row by row in the same order, so identical vectors score the
    same bit for bit (a BLAS product may round rows differently)."""
    rows = np.asarray(vectors, np.float64).reshape(-1, len(query))
    scores = (rows * query).sum(axis=1).astype(np.float32)
    return (scores + np.float32(0.0)).tolist()  # -0.0 ties with 0.0


def as_results(rows: list[tuple[list[str], list[float]]]) -> tuple[list[list[str]], np.ndarray]:
    """Per-query (ids, scores) -> the VectorIndex result: ids per query, (Q, k') float32."""
    width = min((len(ids) for ids, _ in rows), default=0)
    scores = np.array([s[:width] for _, s in rows], dtype=np.float32).reshape(len(rows), width)
    return [ids[:width] for ids, _ in rows], scores
