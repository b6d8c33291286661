"""Admission for decoding uploads: what an image will cost is read from its header before a pixel
is decoded, so a small file that unpacks to 36 megapixels cannot take the server's cores.

Cheap images (at most `heavy_pixels` once JPEG's reduced-scale decoding is counted) decode at
once in the request's own thread. Costly ones take turns in one narrow lane with a short queue
and a budget of pixels per second; past either, the request is answered 503 with Retry-After at
once, so heavy uploads never hold every request thread and /api/health and searches of normal
images keep their latency.
"""

from __future__ import annotations

import io
import math
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image
from werkzeug.exceptions import ServiceUnavailable

LANE_WAIT_S = 30.0  # a queued heavy decode gives up after this long


@dataclass(frozen=True)
class DecodePolicy:
    heavy_pixels: int = 4_000_000  # about 0.15 s of PNG decoding on one core
    pixels_per_s: int = 20_000_000  # heavy decodes, all requests together
    lane_width: int = 1  # heavy decodes running at once
    queue: int = 1  # heavy requests that may wait for the lane


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


class PixelBudget:
    """A token bucket of pixels: refills at `per_s`, holds at most `burst`."""

    def __init__(self, per_s: int, burst: int) -> None:
        self.per_s, self.burst = per_s, burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self, pixels: int) -> float:
        """0.0 when granted (and spent), else the seconds until it would be (nothing spent).
        The caller serialises calls."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        wanted = min(pixels, self.burst)  # one image at the per-request limit always fits
        if self._tokens >= wanted:
            self._tokens -= wanted
            return 0.0
        return (wanted - self._tokens) / self.per_s


class DecodeGate:
    def __init__(self, policy: DecodePolicy, max_pixels: int) -> None:
        self.policy = policy
        self._budget = PixelBudget(policy.pixels_per_s, max(policy.pixels_per_s, max_pixels))
        self._lane = threading.BoundedSemaphore(policy.lane_width)
        self._lock = threading.Lock()
        self._admitted = 0  # heavy requests running or queued

    @contextmanager
    def admit(self, pixels: int) -> Iterator[None]:
        """Run the block now for a cheap image, in the heavy lane for a costly one; raise a
        503 with Retry-After when the lane is full or the budget spent."""
        if pixels <= self.policy.heavy_pixels:
            yield
            return
        seconds_each = max(1, math.ceil(pixels / self.policy.pixels_per_s))
        with self._lock:
            if self._admitted >= self.policy.lane_width + self.policy.queue:
                raise _busy(seconds_each)
            wait = self._budget.take(pixels)
            if wait:
                raise _busy(math.ceil(wait))
            self._admitted += 1
        try:
            if not self._lane.acquire(timeout=LANE_WAIT_S):
                raise _busy(seconds_each)
            try:
                yield
            finally:
                self._lane.release()
        finally:
            with self._lock:
                self._admitted -= 1


def _busy(retry_after: int) -> ServiceUnavailable:
    return ServiceUnavailable(
        "the server is busy decoding other large images; try again shortly, or send a "
        "smaller image (a JPEG, or fewer pixels)",
        retry_after=retry_after,
    )
