"""Vector index backends, chosen by name; optional backends are imported lazily."""

from __future__ import annotations

import importlib
from typing import Any

from cbir.errors import UnknownNameError
from cbir.index.base import VectorIndex

# backend name -> "module:ClassName"
_BACKENDS: dict[str, str] = {
    "embedded": "cbir.index.embedded:ExactIndex",
    "faiss": "cbir.index.faiss_index:FaissIndex",  # settings: index="auto|flat|hnsw:..", search=
    "elasticsearch": "cbir.index.elasticsearch:ElasticsearchIndex",  # url=, index_name=, search=
    "milvus": "cbir.index.milvus:MilvusIndex",  # uri=, collection=, index=
}

DEFAULT_BACKEND = "embedded"


def available() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> type:
    if name not in _BACKENDS:
        raise UnknownNameError(f"unknown index backend {name!r}; choose one of: {available()}")
    module_name, class_name = _BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def keeps_own_data(name: str) -> bool:
    """A backend that holds its vectors itself (a server), so a collection syncs it instead
    of rebuilding it from its database at every open."""
    return getattr(backend_class(name), "keeps_data", False)


def create_index(name: str, dim: int, metric: str = "cosine", **settings: Any) -> VectorIndex:
    return backend_class(name)(dim=dim, metric=metric, **settings)


__all__ = [
    "DEFAULT_BACKEND", "VectorIndex", "available", "backend_class", "create_index",
    "keeps_own_data",
]  # fmt: skip
