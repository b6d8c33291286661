"""Process handling shared by the dev servers: children by parent PID, SIGTERM then SIGKILL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cbir.servers import alive, cache_dir, children, stop_pids
from cbir.servers import elasticsearch as es_server

# a parent that waits on a child; the child ignores SIGTERM, so only SIGKILL stops it
STUBBORN = (
    "import signal, subprocess, sys, time;"
    "child = subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)']);"
    "time.sleep(60)"
)


def test_stop_finds_the_child_by_parent_pid_and_escalates_to_sigkill() -> None:
    parent = subprocess.Popen([sys.executable, "-c", STUBBORN])
    deadline = time.monotonic() + 10
    while not children(parent.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    (child,) = children(parent.pid)
    time.sleep(0.5)  # let the child install its handler
    started = time.monotonic()
    stop_pids([child, parent.pid], timeout=1.0)
    assert time.monotonic() - started < 5
    assert not alive(parent.pid) and not alive(child)


def test_cache_is_outside_the_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CBIR_ENGINES_DIR", str(tmp_path / "engines"))
    assert cache_dir() == tmp_path / "engines" and cache_dir().is_dir()
    assert es_server.home().parent == tmp_path / "engines"


def test_sha256_of(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert es_server.sha256_of(tmp_path / "f") == digest


def test_recorded_node_ignores_a_pid_that_is_not_elasticsearch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CBIR_ENGINES_DIR", str(tmp_path))
    state = tmp_path / "run" / "elasticsearch.json"
    state.parent.mkdir()
    state.write_text(f'{{"pid": {os.getpid()}, "url": "x", "folder": "y"}}')
    assert es_server.recorded() is None  # this test's own PID: never signalled
