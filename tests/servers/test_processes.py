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
    state.write_text(f'{{"pid": {os.getpid()}, "address": "x", "folder": "y"}}')
    assert es_server.recorded() is None  # this test's own PID: never signalled


@pytest.mark.server
def test_cbir_dev_milvus_starts_records_and_stops_a_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The whole `cbir dev milvus` cycle, with its own state folder (the installed server is
    shared through a link, so a developer's running server is never touched)."""
    from cbir.servers import milvus as milvus_server
    from cbir.servers import port_open

    if port_open(milvus_server.EMBEDDED_ETCD_PORT):
        pytest.skip(
            "another Milvus server runs on this machine (the session's test server or a dev "
            "server): Milvus 2.3.5's embedded etcd always binds 127.0.0.1:2379-2380, so a "
            "second one cannot start"
        )
    try:
        installed = milvus_server.ensure_installed()
    except Exception as error:  # noqa: BLE001 (any failure to install is a reason to skip)
        pytest.skip(f"no Milvus server: {error}")
    engines = tmp_path / "engines"
    engines.mkdir()
    (engines / milvus_server.venv().name).symlink_to(installed.parent.parent)
    env = {**os.environ, "CBIR_ENGINES_DIR": str(engines)}

    def dev(action: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cbir.cli", "dev", "milvus", action],
            capture_output=True, text=True, timeout=150, env=env,
        )  # fmt: skip

    started = dev("start")
    assert started.returncode == 0, started.stderr
    assert "export CBIR_MILVUS_URI=http://127.0.0.1:" in started.stdout
    pid = int(started.stdout.split("(pid ")[1].split(")")[0])
    try:
        assert dev("status").returncode == 0 and alive(pid)
    finally:
        stopped = dev("stop")
    assert stopped.returncode == 0 and f"stopped pid {pid}" in stopped.stdout
    assert not alive(pid)
    assert dev("status").returncode == 1
