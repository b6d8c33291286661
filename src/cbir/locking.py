"""One writer at a time: an exclusive `fcntl.flock` on a lock file inside the collection.

The kernel drops the lock when its holder exits, even on kill -9, so a crashed writer never
leaves a stale lock. The file is never deleted (unlinking a lock file races with a process
that is about to lock it). Its holder writes its pid and command line into it, so a writer
that has to give up can say who holds the lock.

A second writer waits up to a timeout (polling, so it cannot hang forever), then fails with a
CollectionBusyError. Locks are re-entrant within one WriterLock object, so an operation that
locks can run inside a writer that holds the lock for its whole life.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cbir.errors import CollectionError

DEFAULT_TIMEOUT_S = 10.0
TIMEOUT_ENV = "CBIR_LOCK_TIMEOUT"
_POLL_S = (0.005, 0.1)  # first and longest wait between attempts


class CollectionBusyError(CollectionError):
    """Another process is writing to the collection."""


def default_timeout() -> float:
    """CBIR_LOCK_TIMEOUT seconds when set, else DEFAULT_TIMEOUT_S."""
    raw = os.environ.get(TIMEOUT_ENV)
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise CollectionError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None


class WriterLock:
    def __init__(self, path: Path, what: str) -> None:
        self.path = Path(path)
        self.what = what  # how error messages name the locked thing
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self, timeout: float) -> None:
        if self._depth:
            self._depth += 1
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _wait_for(fd, timeout, lambda: self._busy_message(fd, timeout))
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {' '.join(_redacted(sys.argv))}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._depth = fd, 1

    def release(self) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)  # no stale holder named once the lock is free
            finally:
                os.close(fd)  # closing the descriptor releases the flock

    @contextmanager
    def hold(self, timeout: float) -> Iterator[None]:
        self.acquire(timeout)
        try:
            yield
        finally:
            self.release()

    def _busy_message(self, fd: int, timeout: float) -> str:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        pid, _, command = holder.partition(" ")
        who = f"process {pid} ({command})" if pid else "another process"
        return (
            f"{self.what} is being written by {who}; gave up after waiting {timeout:g} s. "
            f"Wait for it to finish, or wait longer (--wait SECONDS or {TIMEOUT_ENV})"
        )


def _redacted(argv: list[str]) -> list[str]:
    """The command line with the values of secret-looking `key=value` options hidden: the lock
    file is readable by anyone who can read the collection."""
    from cbir.index.settings import SECRET_WORDS

    def hide(arg: str) -> str:
        key, sep, _ = arg.partition("=")
        secret = any(word in key.lower().replace("-", "_") for word in SECRET_WORDS)
        return f"{key}=***" if sep and secret else arg

    return [hide(arg) for arg in argv]


def _wait_for(fd: int, timeout: float, message: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    pause = _POLL_S[0]
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CollectionBusyError(message()) from None
            time.sleep(min(pause, left))
            pause = min(pause * 2, _POLL_S[1])
