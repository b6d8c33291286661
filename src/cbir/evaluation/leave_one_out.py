"""Leave-one-out search: every indexed image a query against all the others.

A labelled folder has no separate query set, so each image is searched against the index that
holds it, and the image itself is taken out of its own results: the top k of the others are the
top k + 1 of the whole index with the query removed (or the first k when the query ranks below
them, which ties with many copies can cause). Both the benchmark and the near-duplicate check
search this way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cbir.index.embedded import ExactIndex


def search(
    index: ExactIndex,
    vectors: np.ndarray,
    k: int,
    exclude_ids: Sequence[str] | None = None,
) -> tuple[list[list[str]], np.ndarray]:
    """Top k per query, in trec order; with `exclude_ids`, query i never retrieves
    `exclude_ids[i]` (its own id, in a leave-one-out run). Every list has the same length:
    min(k, N), or min(k, N - 1) when excluding."""
    if exclude_ids is None:
        return index.search(vectors, k)
    if len(exclude_ids) != len(vectors):
        raise ValueError(f"{len(exclude_ids)} ids to exclude for {len(vectors)} queries")
    width = min(k, len(index) - 1)
    if width <= 0:
        return [[] for _ in exclude_ids], np.zeros((len(exclude_ids), 0), dtype=np.float32)
    ranked, scores = index.search(vectors, k + 1)
    ranked_array = np.array(ranked, dtype=str)
    keep = ranked_array != np.array(exclude_ids, dtype=str)[:, None]
    # Rows where the query is not among the k + 1 keep their first k.
    keep[keep.all(axis=1), -1] = False
    shape = (len(ranked), width)
    return ranked_array[keep].reshape(shape).tolist(), scores[keep].reshape(shape)
