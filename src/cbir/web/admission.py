"""What an upload may cost the server: budgets for large bodies and for costly decodes, so a few
clients sending maximum-size images cannot take the cores that every other request needs.

- Bytes: a body over `large_body_bytes` is admitted against a budget of body bytes per second
  (all requests together) before it is parsed or hashed; past the budget it is answered 503
  with Retry-After at once.
- Pixels: what decoding an image will produce is read from its header before a pixel is
  decoded (JPEG's reduced-scale decoding counted), so a small file that unpacks to 36
  megapixels is known for what it is. Cheap images decode at once in the request's own thread.
  Costly ones (over `heavy_pixels`) go to a small pool of their own with a short queue and a
  budget of pixels per second; past either, 503 with Retry-After at once, so heavy uploads
  never hold every request thread. The pool's threads run at a lower scheduling priority
  (nice), so /api/health and searches of normal images keep their latency meanwhile.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image
from werkzeug.exceptions import ServiceUnavailable

HEAVY_NICENESS = 10  # the heavy pool's threads yield to every other thread of the machine
T = TypeVar("T")


@dataclass(frozen=True)
class AdmissionPolicy:
    heavy_pixels: int = 4_000_000  # about 0.12 s of PNG decoding on one core
    # PNG decodes at about 34 M pixels/s on one core here: heavy decodes, all requests
    # together, may take about a third of a core.
    pixels_per_s: int = 10_000_000
    lane_width: int = 1  # heavy decodes running at once (the pool's threads)
    queue: int = 1  # heavy requests that may wait for a thread of the pool
    large_body_bytes: int = 2**20
    # Receiving, parsing and hashing a body costs about 6 ms of CPU per MB here: large bodies,
    # all requests together, may take about a fifth of a core.
    body_bytes_per_s: int = 32 * 2**20


def decode_cost(data: bytes, size: tuple[int, int] | None) -> int:
    """Pixels that decoding `data` for an extractor of input `size` will produce, from the
    header only; 0 when the header does not parse (decoding then reports what is wrong)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if size is not None and image.format == "JPEG":
                    image.draft("RGB", (size[1], size[0]))  # as cbir.images.decode_image does
                width, height = image.size
    except Exception:  # any header a decoder rejects: decode_image names the problem
        return 0
    return width * height


class TokenBucket:
    """Refills at `per_s` tokens a second, holds at most `burst`; the caller serialises."""

    def __init__(self, per_s: int, burst: int) -> None:
        self.per_s, self.burst = per_s, burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self, amount: int) -> float:
        """0.0 when granted (and spent), else the seconds until it would be (nothing spent)."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        wanted = min(amount, self.burst)  # one request at the per-request limit always fits
        if self._tokens >= wanted:
            self._tokens -= wanted
            return 0.0
        return (wanted - self._tokens) / self.per_s


class Admission:
    def __init__(self, policy: AdmissionPolicy, max_pixels: int, max_body: int) -> None:
        self.policy = policy
        self._pixels = TokenBucket(policy.pixels_per_s, max(policy.pixels_per_s, max_pixels))
        body_burst = max(policy.body_bytes_per_s, 2 * max_body)
        self._bytes = TokenBucket(policy.body_bytes_per_s, body_burst)
        self._pool = ThreadPoolExecutor(
            policy.lane_width, thread_name_prefix="cbir-heavy-decode", initializer=lower_priority
        )
        self._lock = threading.Lock()
        self._admitted = 0  # heavy decodes running or queued

    def admit_body(self, length: int | None) -> None:
        """Before a body is parsed: a 503 when large bodies have spent their budget."""
        if not length or length <= self.policy.large_body_bytes:
            return
        with self._lock:
            wait = self._bytes.take(length)
        if wait:
            raise _busy("receiving other large uploads", math.ceil(wait))

    def run(self, pixels: int, work: Callable[[], T]) -> T:
        """`work()` now for a cheap image, in the heavy pool for a costly one; a 503 with
        Retry-After when the pool's queue is full or the pixel budget spent."""
        if pixels <= self.policy.heavy_pixels:
            return work()
        with self._lock:
            if self._admitted >= self.policy.lane_width + self.policy.queue:
                wait = max(1.0, pixels / self.policy.pixels_per_s)
            else:
                wait = self._pixels.take(pixels)
            if not wait:
                self._admitted += 1
        if wait:
            raise _busy("decoding other large images", math.ceil(wait))
        try:
            return self._pool.submit(work).result()
        finally:
            with self._lock:
                self._admitted -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def lower_priority() -> None:
    """Lower the calling thread's scheduling priority (Linux: a thread's own id names it
    alone); elsewhere nothing changes, and the work stays bounded by its pool."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HEAVY_NICENESS)


def _busy(doing: str, retry_after: int) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"the server is busy {doing}; try again shortly, or send a smaller image (a JPEG, "
        "or fewer pixels)",
        retry_after=retry_after,
    )
