"""Backend settings as a collection keeps them: what goes into its manifest, and how they are
resolved each time the collection is opened.

- Stored settings never hold secrets: keys that name one, and URLs with a user or password in
  them, are refused (credentials come from the environment, see each backend).
- A server backend gets its own index / collection name, unique to the cbir collection, so two
  collections on one server never share vectors.
- Connection precedence at open: options given for this run (flags), then the environment
  ($CBIR_ELASTICSEARCH_URL, $CBIR_MILVUS_URI: how a deployment points every collection at its
  cluster), then the manifest. A Milvus Lite file given as a relative path lives in the
  collection folder (`milvus.db` by default).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cbir.errors import CbirError

SECRET_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey", "credential")
# backend -> (connection setting, environment variable, setting naming its index)
CONNECTIONS: dict[str, tuple[str, str, str]] = {
    "elasticsearch": ("url", "CBIR_ELASTICSEARCH_URL", "index_name"),
    "milvus": ("uri", "CBIR_MILVUS_URI", "collection"),
}
DEFAULT_CONNECTION = {"elasticsearch": "http://127.0.0.1:9200", "milvus": "milvus.db"}


def check_storable(settings: dict[str, Any]) -> None:
    """Refuse settings that would put a secret into a manifest."""
    for key, value in settings.items():
        if any(word in key.lower().replace("-", "_") for word in SECRET_WORDS):
            raise CbirError(
                f"backend setting {key!r} looks like a secret, and settings are stored in the "
                "collection's manifest: pass credentials through the environment instead "
                "(CBIR_ELASTICSEARCH_API_KEY, CBIR_ELASTICSEARCH_USER / _PASSWORD, "
                "CBIR_MILVUS_TOKEN)"
            )
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
    stored = dict(settings)
    if backend in CONNECTIONS:
        connection, variable, name_key = CONNECTIONS[backend]
        stored.setdefault(connection, os.environ.get(variable) or DEFAULT_CONNECTION[backend])
        stored.setdefault(name_key, f"cbir_{secrets.token_hex(6)}")
    check_storable(stored)  # the environment's URL, too, must not carry a password
    return stored


def settings_at_open(
    backend: str, stored: dict[str, Any], folder: Path, overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """(constructor settings, location) for a collection's backend. The location names where
    the vectors live, without credentials, as the collection tracks what it sent there: a
    relative Lite path stays relative in it, so a moved collection folder is the same place."""
    check_storable(overrides or {})  # flags end up in shell histories and process lists
    settings = dict(stored)
    if backend in CONNECTIONS:
        connection, variable, name_key = CONNECTIONS[backend]
        if os.environ.get(variable):
            settings[connection] = os.environ[variable]
        settings.update(overrides or {})
        place = str(settings[connection])
        location = f"{backend} {place} {settings[name_key]}"
        if backend == "milvus" and "://" not in place and not Path(place).is_absolute():
            settings[connection] = str(Path(folder) / place)
        return settings, location
    settings.update(overrides or {})
    return settings, backend
