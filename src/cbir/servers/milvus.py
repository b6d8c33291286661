"""A local Milvus 2.3.5 server (the PyPI `milvus` package) for development and tests.

The server wheel lives in a virtual environment of its own (it pins packages the project does
not want), cached outside the checkout. `milvus-server` is a Python wrapper that starts
`milvus run standalone` as its child; stopping sends SIGTERM to both (child found by parent
PID), then SIGKILL after a timeout. Every port is chosen free, so runs do not collide.

Loopback: Milvus 2.3.5 listens on all interfaces and no setting found in its config template
binds it to 127.0.0.1; clients here only ever connect to 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cbir.servers import ServerError, alive, cache_dir, children, free_port, port_open, stop_pids
from cbir.servers import recorded as recorded_server

NAME = "Milvus"
VERSION = "2.3.5"
START_TIMEOUT = 60.0  # answers after ~7.5 s on an idle machine
# Its embedded etcd ignores --etcd-port for its own listeners and always binds 2379 (clients)
# and 2380 (peers) on 127.0.0.1: one Milvus 2.3.5 server per machine.
EMBEDDED_ETCD_PORT = 2380
PORT_FLAGS = (  # every port the standalone server opens, so that each run gets free ones
    "--proxy-port",
    "--proxy-internal-port",
    "--etcd-port",
    "--root-coord-port",
    "--query-coord-port",
    "--query-node-port",
    "--index-coord-port",
    "--index-node-port",
    "--data-coord-port",
    "--data-node-port",
)


def venv() -> Path:
    return cache_dir() / f"milvus-{VERSION}-venv"


def ensure_installed(timeout: float = 300.0) -> Path:
    """`milvus-server` from its own virtual environment, installed on first use."""
    folder = venv()
    server = folder / "bin" / "milvus-server"
    marker = folder / ".cbir-installed"
    if marker.exists():
        return server
    try:
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, capture_output=True)
        subprocess.run(
            [str(folder / "bin" / "pip"), "install", "-q", f"milvus=={VERSION}", "setuptools<81"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        stderr = (getattr(error, "stderr", b"") or b"").decode(errors="replace")
        raise ServerError(f"cannot install milvus=={VERSION}: {stderr[-300:]}") from error
    marker.touch()
    return server


@dataclass
class RunningServer:
    pid: int  # the milvus-server wrapper (our child)
    uri: str
    folder: Path

    @property
    def address(self) -> str:
        return self.uri

    def stop(self, timeout: float = 10.0) -> None:
        if alive(self.pid):
            stop_pids([*children(self.pid), self.pid], timeout)
        subprocess.run(["rm", "-rf", str(self.folder)], check=False)


def start(timeout: float = START_TIMEOUT, port: int | None = None) -> RunningServer:
    """Start a throwaway server, its clients' port `port` (default: a free one), and wait (at
    most `timeout` s) until a client call succeeds."""
    server = ensure_installed()
    folder = Path(tempfile.mkdtemp(prefix="cbir-milvus-"))
    ports = {flag: free_port() for flag in PORT_FLAGS}
    ports["--proxy-port"] = port or ports["--proxy-port"]
    command = [str(server), "--data", str(folder / "data")]
    for flag, port in ports.items():
        command += [flag, str(port)]
    with open(folder / "server.log", "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = RunningServer(process.pid, f"http://127.0.0.1:{ports['--proxy-port']}", folder)
    try:
        _wait_ready(process, running, ports["--proxy-port"], timeout)
    except BaseException:  # not ready, or interrupted (Ctrl-C): never leave a server behind
        running.stop()
        raise
    return running


def _wait_ready(
    process: subprocess.Popen, running: RunningServer, port: int, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (running.folder / "server.log").read_text(errors="replace")[-500:]
            raise ServerError(f"milvus-server exited with {process.returncode}: {tail}")
        if port_open(port) and _answers(running.uri):
            return
        time.sleep(0.5)
    raise ServerError(f"Milvus did not answer on {running.uri} within {timeout:.0f} s")


def _answers(uri: str) -> bool:
    from pymilvus import MilvusClient, MilvusException

    try:
        client = MilvusClient(uri, timeout=3)
        client.list_collections()
        client.close()
        return True
    except (MilvusException, OSError):
        return False


# --- a server that outlives the command that started it (`cbir dev milvus`) -----------------
def recorded() -> RunningServer | None:
    """The server `cbir dev milvus start` left running, if its PID is still that server."""
    return recorded_server.recorded("milvus", venv(), RunningServer)


def start_recorded(timeout: float = START_TIMEOUT, port: int | None = None) -> RunningServer:
    return recorded_server.start("milvus", lambda: start(timeout, port), recorded)


def stop_recorded() -> RunningServer | None:
    return recorded_server.stop("milvus", recorded)
