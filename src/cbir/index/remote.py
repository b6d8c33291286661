"""Shared by the server backends (Elasticsearch, Milvus): exact rescoring of candidates.

A server computes scores with its own float rounding (and, for Elasticsearch's script_score,
an offset that costs precision) and breaks ties its own way. So the server only proposes
candidates, with their stored vectors; their scores are recomputed here in float32 exactly as
the embedded backend computes them, and ordered by `order_hits`. A fetch is known to hold the
true top k when the k-th score beats the worst fetched candidate by more than the rounding
between the two computations; otherwise the caller fetches again, more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cbir.index.base import check_vectors, l2_normalise, order_hits

TIE_TOLERANCE = 1e-4  # relative; server scores differ from ours by float rounding only
MIN_OVERFETCH = 8


def prepare(vectors: np.ndarray, dim: int, metric: str, what: str = "vectors") -> np.ndarray:
    """Checked float32 rows, unit length for cosine (zero rows stay zero), -0.0 made 0.0."""
    vectors = check_vectors(vectors, dim, what)
    if metric == "cosine":
        vectors = l2_normalise(vectors)
    return vectors + np.float32(0.0)


def fetch_size(k: int) -> int:
    return k + max(MIN_OVERFETCH, k // 4)


def rescore(
    query: np.ndarray,
    ids: Sequence[str],
    vectors: np.ndarray,
    k: int,
    complete: bool,
) -> tuple[list[str], list[float]] | None:
    """The exact top k of one prepared query among candidate (ids, prepared vectors), or None
    when the candidates might miss a document tied with (or, by rounding, above) the k-th and
    the server holds more than were fetched (`complete` False)."""
    # float64 products summed row by row in the same order: identical vectors score the same
    # bit for bit (a BLAS matrix-vector product may round rows differently)
    scores = (vectors.astype(np.float64) * query).sum(axis=1).astype(np.float32)
    hits = order_hits(ids, (scores + np.float32(0.0)).tolist())  # -0.0 ties with 0.0
    if not complete and len(hits) > 0:
        kth = hits[min(k, len(hits)) - 1][1]
        worst = float(scores.min())
        if len(hits) < k or kth - worst <= TIE_TOLERANCE * max(1.0, abs(kth)):
            return None
    top = hits[:k]
    return [id_ for id_, _ in top], [score for _, score in top]


def as_results(rows: list[tuple[list[str], list[float]]]) -> tuple[list[list[str]], np.ndarray]:
    """Per-query (ids, scores) -> the VectorIndex result: ids per query, (Q, k') float32."""
    width = min((len(ids) for ids, _ in rows), default=0)
    scores = np.array([s[:width] for _, s in rows], dtype=np.float32).reshape(len(rows), width)
    return [ids[:width] for ids, _ in rows], scores
