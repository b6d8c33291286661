"""Backend settings as a collection keeps them: what goes into its manifest, and how they are
resolved each time the collection is opened, read from each backend's declaration
(`cbir.index.backend`).

- Stored settings never hold secrets: keys that name one, and URLs with a user or password in
  them, are refused (credentials come from the environment, see each backend).
- A server backend gets its own index / collection name, unique to the cbir collection, so two
  collections on one server never share vectors.
- Connection precedence at open: options given for this run (flags), then the environment
  (the connection setting's variable, e.g. $CBIR_ELASTICSEARCH_URL: how a deployment points
  every collection at its cluster), then the manifest. Where a stored connection relative to
  the collection folder points is the backend's to say (`Backend.locate`: a Milvus Lite file).
- Manifests written by an older cbir are read in today's vocabulary (`Backend.upgrade`).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cbir.errors import CbirError
from cbir.index import backend_class
from cbir.index.backend import SECRET_WORDS, refuse_secrets

__all__ = ["SECRET_WORDS", "check_storable", "settings_at_open", "settings_for_new_collection"]


def check_storable(backend: str, settings: dict[str, Any]) -> None:
    """Refuse settings that would put a secret into a manifest."""
    refuse_secrets(backend_class(backend), settings)
    for key, value in settings.items():
        if isinstance(value, str) and "://" in value:
            parts = urlsplit(value)
            if parts.username or parts.password:
                raise CbirError(
                    f"backend setting {key!r} has credentials in its URL; give the URL without "
                    "them and the credentials through the environment"
                )


def settings_for_new_collection(backend: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a new collection records: the given ones, plus, for a server backend, the
    connection in effect now and an index name of its own."""
    cls = backend_class(backend)
    stored = dict(settings)
    if cls.keeps_data:
        assert cls.connection is not None and cls.name_setting is not None
        stored.setdefault(cls.connection, cls.default_connection())
        stored.setdefault(cls.name_setting, f"cbir_{secrets.token_hex(6)}")
    check_storable(backend, stored)  # the environment's URL, too, must not carry a password
    return stored


def settings_at_open(
    backend: str, stored: dict[str, Any], folder: Path, overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """(constructor settings, location) for a collection's backend. The location names where
    the vectors live, without credentials, as the collection tracks what it sent there: a
    relative Lite path stays relative in it, so a moved collection folder is the same place."""
    cls = backend_class(backend)
    check_storable(backend, overrides or {})  # flags end up in shell histories and process lists
    settings = cls.upgrade(dict(stored))
    if not cls.keeps_data:
        return {**settings, **(overrides or {})}, backend
    assert cls.connection is not None and cls.name_setting is not None
    for setting in cls.options():
        environment = setting.from_environment(backend) if setting.env else None
        if environment is not None:
            settings[setting.name] = environment
    settings.update(overrides or {})
    place = settings.setdefault(cls.connection, cls.setting(cls.connection).default)
    location = f"{backend} {place} {settings[cls.name_setting]}"
    return cls.locate(settings, folder), location
