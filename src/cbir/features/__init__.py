"""Extractor registry: `@register("name")` on a class, `get_extractor(name, **params)`.

The registration line is the only place an extractor's name is written. The built-in modules
are imported when a name is first looked up; importing them is cheap because each imports its
heavy dependencies (torch, OpenCV, ONNX Runtime) only when it describes images.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from cbir.errors import UnknownNameError
from cbir.features.base import PARAMS_FILE, Extractor

# the modules whose `@register` lines make the built-in extractors
_BUILTIN_MODULES = (
    "cbir.features.color",
    "cbir.features.hog",
    "cbir.features.bovw",
    "cbir.features.cnn.extractor",
    "cbir.features.efficientnet",
)
_REGISTRY: dict[str, type[Extractor]] = {}

DEFAULT_EXTRACTOR = "efficientnet"  # people's photos; `cbir benchmark cifar10` picks its own


def register(name: str):
    """Class decorator that adds an Extractor subclass to the registry under `name`."""

    def decorate(cls: type[Extractor]) -> type[Extractor]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _import_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available() -> list[str]:
    """Extractor names; presets (`cbir.features.presets`) are listed apart."""
    _import_builtins()
    return sorted(_REGISTRY)


def extractor_class(name: str) -> type[Extractor]:
    if name not in _REGISTRY:
        _import_builtins()
    if name not in _REGISTRY:
        from cbir.features.presets import PRESETS

        raise UnknownNameError(
            f"unknown extractor {name!r}; choose one of: {', '.join(available())} "
            f"(or a preset: {', '.join(PRESETS)})"
        )
    return _REGISTRY[name]


def get_extractor(name: str, **params: Any) -> Extractor:
    """A new extractor by registry name, or by preset name (its parameters, then `params`)."""
    from cbir.features.presets import resolve

    name, params = resolve(name, params)
    return extractor_class(name)(**params)


def load_extractor(folder: Path) -> Extractor:
    """Rebuild a saved extractor (parameters + learnt state) from its folder."""
    name = json.loads((Path(folder) / PARAMS_FILE).read_text())["name"]
    return extractor_class(name).load(folder)


__all__ = [
    "DEFAULT_EXTRACTOR",
    "Extractor",
    "available",
    "extractor_class",
    "get_extractor",
    "load_extractor",
    "register",
]
