"""A real `cbir serve` child process on 127.0.0.1, for the tests that drive a real server and
for the latency and load benchmarks. It picks a free port (--port 0, read back from the
server's first line), is started and stopped by its PID, and every wait is bounded in time."""

from __future__ import annotations

import collections
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class ServerProcess:
    def __init__(
        self,
        collection: Path,
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.collection = Path(collection)
        self.env = env
        self.extra_args = extra_args
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0
        self.output: collections.deque[str] = collections.deque(maxlen=200)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> ServerProcess:
        command = [
            sys.executable, "-m", "cbir.cli", "-q", "serve", "--collection", str(self.collection),
            "--host", "127.0.0.1", "--port", "0", *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=self.env if self.env is not None else os.environ.copy(),
        )  # fmt: skip
        self.url = self._read_url()
        self.port = int(self.url.rsplit(":", 1)[1].strip("/"))
        # Keep draining its output so a chatty server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        self._wait_healthy()
        return self

    def _read_url(self) -> str:
        assert self.process and self.process.stdout
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline()
                if not line:
                    break  # the process ended
                self.output.append(line.rstrip())
                if " on http://" in line:
                    return line.rsplit(" on ", 1)[1].strip()
            elif self.process.poll() is not None:
                break
        self.stop()
        raise RuntimeError("cbir serve did not start:\n" + "\n".join(self.output))

    def _drain(self) -> None:
        assert self.process and self.process.stdout
        for line in self.process.stdout:
            self.output.append(line.rstrip())

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "api/health", timeout=5) as response:
                    if response.status == 200 and json.load(response)["status"] == "ok":
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("cbir serve never answered /api/health:\n" + "\n".join(self.output))

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM to our own child's PID, then SIGKILL if it has not gone in time."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
