"""Servers that outlive the command that started them (`cbir dev ENGINE start`).

The PID, address and folder of each are recorded in the engines cache; `stop` and `status`
read them back and act on that PID only while its command line still names the engine's
installation: a PID the kernel has since given to some other program is never signalled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from cbir.servers import cache_dir


class RunningServer(Protocol):
    pid: int
    folder: Path

    @property
    def address(self) -> str: ...

    def stop(self) -> None: ...


T = TypeVar("T", bound=RunningServer)


def state_file(engine: str) -> Path:
    return cache_dir() / "run" / f"{engine}.json"


def recorded(engine: str, marker: Path, make: Callable[[int, str, Path], T]) -> T | None:
    """The server `start` left running, if its PID is still a process of `marker` (the
    engine's installation folder)."""
    try:
        state = json.loads(state_file(engine).read_text())
        pid, address, folder = int(state["pid"]), str(state["address"]), Path(state["folder"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if str(marker).encode() not in cmdline:
        return None
    return make(pid, address, folder)


def start(engine: str, launch: Callable[[], T], find: Callable[[], T | None]) -> T:
    """The recorded server when one runs, else a new one (recorded)."""
    running = find()
    if running is not None:
        return running
    server = launch()
    state = {"pid": server.pid, "address": server.address, "folder": str(server.folder)}
    state_file(engine).parent.mkdir(parents=True, exist_ok=True)
    state_file(engine).write_text(json.dumps(state))
    return server


def stop(engine: str, find: Callable[[], T | None]) -> T | None:
    running = find()
    if running is not None:
        running.stop()
    state_file(engine).unlink(missing_ok=True)
    return running
