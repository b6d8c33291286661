"""The VectorIndex protocol every backend implements (embedded, Milvus, Elasticsearch).

Results are ordered exactly as trec_eval orders a run: score descending, ties broken by
document id descending (byte-wise string comparison, like strcmp). A backend that cannot
break ties itself must over-fetch and re-sort with `order_hits`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from cbir.errors import DimensionMismatchError

METRICS = ("cosine", "ip")


@runtime_checkable
class VectorIndex(Protocol):
    dim: int
    metric: str

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Top-k for each query row: (ids per query, scores (Q, k') float32), k' <= k when
        the index holds fewer than k vectors."""
        ...

    def delete(self, ids: Sequence[str]) -> int: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


def check_vectors(vectors: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    """(N, dim) float32, C-contiguous, finite; a clear error otherwise."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise DimensionMismatchError(
            f"{what} have shape {tuple(np.shape(vectors))}; this index holds {dim}-d vectors"
        )
    if not np.isfinite(array).all():
        raise DimensionMismatchError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(array)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero (they score 0 against everything)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def order_hits(ids: Sequence[str], scores: Sequence[float]) -> list[tuple[str, float]]:
    """trec_eval's order: score descending, then id descending."""
    return sorted(zip(ids, scores, strict=True), key=lambda hit: (hit[1], hit[0]), reverse=True)
