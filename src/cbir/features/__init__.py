"""Extractor registry: `@register("name")` on a class, `get_extractor(name, **params)`.

Built-in extractors are imported lazily by name so that heavy dependencies (torch, OpenCV)
load only when their extractor is used.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from cbir.errors import UnknownNameError
from cbir.features.base import PARAMS_FILE, Extractor

# registry name -> module that defines it (imported on first use)
_BUILTIN_MODULES: dict[str, str] = {
    "gch": "cbir.features.color",
    "hog": "cbir.features.hog",
    "cnn": "cbir.features.cnn.extractor",  # needs torch
    "efficientnet": "cbir.features.efficientnet",  # needs torch + the packaged ImageNet weights
    "bovw": "cbir.features.bovw",  # needs OpenCV and scikit-learn
    "bovw-reference": "cbir.features.bovw",
}
_REGISTRY: dict[str, type[Extractor]] = {}

DEFAULT_EXTRACTOR = "efficientnet"  # people's photos; `cbir benchmark cifar10` picks its own


def register(name: str):
    """Class decorator that adds an Extractor subclass to the registry under `name`."""

    def decorate(cls: type[Extractor]) -> type[Extractor]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available() -> list[str]:
    """Extractor names; presets (`cbir.features.presets`) are listed apart."""
    return sorted(set(_BUILTIN_MODULES) | set(_REGISTRY))


def extractor_class(name: str) -> type[Extractor]:
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
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
