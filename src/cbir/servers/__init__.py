"""Development search servers (Elasticsearch, Milvus) started and stopped by PID.

Shared pieces: the cache folder outside any checkout, a free loopback port, bounded waits,
and stopping a process tree by PID (SIGTERM, then SIGKILL after a timeout). Processes are
never looked up by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from cbir.errors import CbirError

KILL_WAIT = 5.0  # seconds for the kernel to finish off SIGKILLed processes


class ServerError(CbirError):
    """A development server could not be obtained, started or stopped."""


def cache_dir() -> Path:
    """Where engines are downloaded and unpacked: $CBIR_ENGINES_DIR, else ~/.cache/cbir/engines
    (/var/cache/cbir/engines for root: the servers run as `nobody`, who cannot enter /root)."""
    if os.environ.get("CBIR_ENGINES_DIR"):
        path = Path(os.environ["CBIR_ENGINES_DIR"])
    elif os.geteuid() == 0:
        path = Path("/var/cache/cbir/engines")
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cbir/engines"
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (by parent PID, never by name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def stop_pids(pids: list[int], timeout: float = 15.0) -> None:
    """SIGTERM each pid, wait up to `timeout` s for all to exit, then SIGKILL the rest."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        _reap(pids)
        time.sleep(0.2)
    for pid in pids:
        if alive(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT  # SIGKILL is not instantaneous either
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        _reap(pids)
        time.sleep(0.05)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pids: list[int]) -> None:
    """Collect exited children of this process so they do not linger as zombies."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
