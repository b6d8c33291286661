"""Session fixtures that start live search servers once, on 127.0.0.1, and stop them by PID.

A server that cannot be obtained or started in time makes the tests that need it skip, with
the reason (`pytest -rs` prints it); nothing here can hang: every wait is bounded. Set
CBIR_ELASTICSEARCH_URL to test against a server you started yourself instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cbir.errors import CbirError

ES_START_TIMEOUT = 120.0  # download (first run only, ~60 s) is bounded separately
MILVUS_START_TIMEOUT = 90.0
# Test modules import these fixtures, and each import is a fixture of its own to pytest: the
# servers (or the reason they are missing) are kept here so that each starts once a session.
_started: dict[str, Any] = {}


def _once(what: str, start: Callable[[], Any]) -> Any:
    if what not in _started:
        try:
            _started[what] = start()
        except (CbirError, OSError) as error:
            _started[what] = error
    result = _started[what]
    if isinstance(result, Exception):
        pytest.skip(f"no {what} server: {result}")
    return result


@pytest.fixture(scope="session")
def elasticsearch_url() -> Iterator[str]:
    if os.environ.get("CBIR_ELASTICSEARCH_URL"):
        yield os.environ["CBIR_ELASTICSEARCH_URL"]
        return
    from cbir.servers import elasticsearch as es_server

    node = _once(f"Elasticsearch {es_server.VERSION}", lambda: es_server.start(ES_START_TIMEOUT))
    try:
        yield node.url
    finally:
        node.stop()  # idempotent: the first of the fixtures' teardowns stops it


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Milvus Lite: a local .db file (no server process to manage)."""
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")
    return str(tmp_path_factory.mktemp("milvus") / "contract.db")


@pytest.fixture(scope="session")
def milvus_server_uri() -> Iterator[str]:
    """A Milvus 2.3.5 server (its own virtual environment, installed on first use), or
    $CBIR_MILVUS_URI when set."""
    if os.environ.get("CBIR_MILVUS_URI"):
        yield os.environ["CBIR_MILVUS_URI"]
        return
    from cbir.servers import milvus as milvus_server

    server = _once(
        f"Milvus {milvus_server.VERSION}", lambda: milvus_server.start(MILVUS_START_TIMEOUT)
    )
    try:
        yield server.uri
    finally:
        server.stop()
