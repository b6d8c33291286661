"""Vector index backends, chosen by name; optional backends are imported lazily."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from cbir.errors import CbirError, UnknownNameError
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
    """Backend `name`'s index; an unknown or ill-typed setting is a CbirError, one line."""
    check_settings(name, settings)
    try:
        return backend_class(name)(dim=dim, metric=metric, **settings)
    except (TypeError, ValueError) as error:  # a value the backend cannot take
        raise CbirError(
            f"backend {name!r} cannot take these settings {settings}: {error}"
        ) from None


def check_settings(name: str, settings: dict[str, Any]) -> None:
    """A CbirError naming the valid settings when `settings` holds one that backend `name`
    does not take (its constructor's keyword arguments)."""
    parameters = inspect.signature(backend_class(name).__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    valid = [key for key in parameters if key not in ("self", "dim", "metric")]
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise CbirError(
            f"unknown setting(s) {', '.join(unknown)} for backend {name!r} "
            f"(--backend-option); valid settings: {', '.join(valid)}"
        )


__all__ = [
    "DEFAULT_BACKEND", "VectorIndex", "available", "backend_class", "check_settings",
    "create_index", "keeps_own_data",
]  # fmt: skip
