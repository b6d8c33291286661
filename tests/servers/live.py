"""Live search servers for tests: each backend that declares a `dev_server` gets one, started
once a session on 127.0.0.1 and stopped by PID at its end.

A server that cannot be obtained or started in time makes the tests that need it skip, with
the reason (`pytest -rs` prints it); nothing here can hang: every wait is bounded. Set a
backend's connection variable (CBIR_ELASTICSEARCH_URL, CBIR_MILVUS_URI) to test against a
server you started yourself instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cbir.errors import CbirError
from cbir.index import backend_class

START_TIMEOUT = 120.0  # an Elasticsearch download (first run only, ~60 s) is bounded apart
# Test modules import these fixtures, and each import is a fixture of its own to pytest: the
# servers (or the reason they are missing) are kept here so that each starts once a session.
_started: dict[str, Any] = {}


def server_address(backend: str) -> str:
    """The address of a live server for `backend`: its connection variable's when set, else
    one of its declared dev server, started on first use (or a skip saying why not)."""
    cls = backend_class(backend)
    assert cls.connection is not None and cls.dev_server is not None
    given = cls.setting(cls.connection).from_environment(backend)
    if given:
        return given
    server = importlib.import_module(cls.dev_server)
    what = f"{server.NAME} {server.VERSION}"
    if what not in _started:
        try:
            _started[what] = server.start(START_TIMEOUT)
        except (CbirError, OSError) as error:
            _started[what] = error
    result = _started[what]
    if isinstance(result, Exception):
        pytest.skip(f"no {what} server: {result}")
    return result.address


def _stop_started() -> None:
    for started in _started.values():
        if not isinstance(started, Exception):
            started.stop()  # idempotent: the first of the fixtures' teardowns stops it


@pytest.fixture(scope="session")
def live_server() -> Iterator[Callable[[str], str]]:
    """`server_address`, for a test parametrised over backends."""
    yield server_address
    _stop_started()


@pytest.fixture(scope="session")
def elasticsearch_url() -> Iterator[str]:
    yield server_address("elasticsearch")
    _stop_started()


@pytest.fixture(scope="session")
def milvus_server_uri() -> Iterator[str]:
    """A Milvus 2.3.5 server (its own virtual environment, installed on first use), or
    $CBIR_MILVUS_URI when set."""
    yield server_address("milvus")
    _stop_started()
