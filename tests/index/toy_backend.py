"""A toy backend, to show that adding one is one file and one registration line: exact search
over a dict of vectors, in this process. tests/index/test_toy_backend.py runs it through the
contract suite, `create_index`, settings resolution and the CLI."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cbir.index import Backend, Setting, register_backend
from cbir.index.base import check_dim_and_metric, check_ids, check_k, check_new_entries, order_hits
from cbir.index.remote import exact_scores, prepare


@register_backend("toy")
class DictIndex(Backend):
    """id -> prepared vector; a search scores every vector, in float64 (exact ties)."""

    declared_settings = (
        Setting("index", str, "flat", "index spec: flat (the only kind it builds)"),
        Setting("search", str, "", "search spec: none"),
    )
    index_kinds = ("flat",)

    def __init__(self, dim: int, metric: str = "cosine", index: str = "flat", search: str = ""):
        self.dim = check_dim_and_metric(dim, metric)
        self.metric = metric
        self._vectors: dict[str, np.ndarray] = {}

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids, vectors = check_new_entries(ids, vectors, self.dim, present=self._vectors)
        self._vectors.update(zip(ids, prepare(vectors, self.dim, self.metric), strict=True))

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        k = min(check_k(k), len(self))
        ids = list(self._vectors)
        stored = np.array(list(self._vectors.values())).reshape(len(ids), self.dim)
        found = []
        for query in prepare(queries, self.dim, self.metric, what="queries"):
            found.append(order_hits(ids, exact_scores(query, stored))[:k])
        scores = np.array([[s for _, s in row] for row in found], np.float32)
        return [[id_ for id_, _ in row] for row in found], scores.reshape(len(found), k)

    def delete(self, ids: Sequence[str]) -> int:
        return sum(self._vectors.pop(id_, None) is not None for id_ in set(check_ids(ids)))

    def __len__(self) -> int:
        return len(self._vectors)

    def ids(self) -> list[str]:
        return list(self._vectors)

    def close(self) -> None:
        self._vectors.clear()
