"""Vector index backends, registered by name; built-in ones are imported lazily.

A backend is one class: it implements `VectorIndex` (`cbir.index.base`), declares its
settings and facts by inheriting `Backend` (`cbir.index.backend`), and registers with
`@register_backend("name")`. Everything else (settings resolution, the CLI's help, `cbir dev`,
the benchmark's backend runs, the contract tests) reads that declaration.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

from cbir.errors import CbirError, UnknownNameError
from cbir.index.backend import Backend, Setting, refuse_secrets
from cbir.index.base import LocalIndex, RemoteIndex, VectorIndex

# registry name -> module that defines it (imported on first use, one line per built-in)
_BUILTIN_MODULES: dict[str, str] = {
    "embedded": "cbir.index.embedded",
    "faiss": "cbir.index.faiss_index",
    "elasticsearch": "cbir.index.elasticsearch",
    "milvus": "cbir.index.milvus",
}
_REGISTRY: dict[str, type[Backend]] = {}

DEFAULT_BACKEND = "embedded"
B = TypeVar("B", bound=type[Backend])


def register_backend(name: str) -> Callable[[B], B]:
    """Class decorator that adds a Backend subclass to the registry under `name`."""

    def decorate(cls: B) -> B:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available() -> list[str]:
    return sorted(set(_BUILTIN_MODULES) | set(_REGISTRY))


def backend_class(name: str) -> type[Backend]:
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown index backend {name!r}; choose one of: {available()}")
    return _REGISTRY[name]


def backends() -> list[type[Backend]]:
    """Every backend's class (each module imported: cheap, engines load on first use)."""
    return [backend_class(name) for name in available()]


def keeps_own_data(name: str) -> bool:
    """A backend that holds its vectors itself (a server), so a collection syncs it instead
    of rebuilding it from its database at every open."""
    return backend_class(name).keeps_data


def create_index(name: str, dim: int, metric: str = "cosine", **settings: Any) -> VectorIndex:
    """Backend `name`'s index; an unknown or ill-typed setting is a CbirError, one line.
    Settings not given come from their environment variable when it is set (credentials only
    ever do), else the declared default."""
    cls = backend_class(name)
    settings = check_settings(name, settings)
    for setting in cls.declared_settings:
        if setting.env and setting.name not in settings:
            value = setting.from_environment(name)
            if value is not None:
                settings[setting.name] = value
    try:
        return cls(dim=dim, metric=metric, **settings)  # type: ignore[call-arg]
    except (TypeError, ValueError) as error:  # a value the backend cannot take
        shown = {k: v for k, v in settings.items() if not cls.setting(k).secret}
        raise CbirError(f"backend {name!r} cannot take these settings {shown}: {error}") from None


def check_settings(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` checked against backend `name`'s declaration: a one-line CbirError naming
    the valid settings for one it does not take, naming the setting for a value of the wrong
    type, or from the index-spec parser for a bad spec. Returns them typed (3 -> 3.0 for a
    number). Nothing is connected to."""
    cls = backend_class(name)
    refuse_secrets(cls, settings)
    declared = {s.name: s for s in cls.options()}
    unknown = sorted(set(settings) - set(declared))
    if unknown:
        # settings in an older cbir's vocabulary: say how they are written today
        upgraded = cls.upgrade(dict(settings))
        today = [f"{k}={v}" for k, v in upgraded.items() if settings.get(k) != v]
        hint = f" (today written {', '.join(today)})" if set(upgraded) <= set(declared) else ""
        raise CbirError(
            f"unknown setting(s) {', '.join(unknown)} for backend {name!r} "
            f"(--backend-option); valid settings: {', '.join(declared) or 'none'}{hint}"
        )
    typed = {key: declared[key].checked(value, name) for key, value in settings.items()}
    if cls.index_kinds:  # the spec strings parse, and the search spec fits the index kind
        from cbir.index.spec import parse_search, parse_spec

        kind = parse_spec(typed.get("index", cls.setting("index").default), kinds=cls.index_kinds)
        parse_search(typed.get("search", cls.setting("search").default), kind.kind)
    return typed


def describe_options() -> str:
    """Every backend's settings in a line, for the CLI's help."""
    parts = []
    for cls in backends():
        names = [s.name if s.default in (None, "") else f"{s.name}={s.default}"
                 for s in cls.options()]  # fmt: skip
        parts.append(f"{cls.name}: {', '.join(names) or 'none'}")
    return "; ".join(parts)


__all__ = [
    "DEFAULT_BACKEND", "Backend", "LocalIndex", "RemoteIndex", "Setting", "VectorIndex",
    "available", "backend_class", "backends", "check_settings", "create_index",
    "describe_options", "keeps_own_data", "register_backend",
]  # fmt: skip
