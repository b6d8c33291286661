"""Timers and meters for speed benchmarks: latency percentiles, throughput, memory, recall,
and a description of the machine and its thread pools (the figures mean little without)."""

from __future__ import annotations

import gc
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info

from cbir.storage import atomic_write_text

WARMUP = 5  # untimed calls before a latency series: page faults, lazy caches, thread pools


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """`with stopwatch() as t: ...` then t["s"] holds the elapsed wall-clock seconds."""
    timing: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield timing
    finally:
        timing["s"] = time.perf_counter() - start


def latencies_ms(call: Callable[[np.ndarray], Any], queries: np.ndarray) -> dict[str, float]:
    """p50 / p99 / mean of `call(one query)` over the rows of `queries`, in milliseconds,
    with the garbage collector paused so that it does not land inside one timed call."""
    for row in queries[:WARMUP]:
        call(row[None])
    times = np.empty(len(queries))
    enabled = gc.isenabled()
    gc.disable()
    try:
        for i, row in enumerate(queries):
            start = time.perf_counter()
            call(row[None])
            times[i] = time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()
    times *= 1e3
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 4),
        "p99_ms": round(float(np.percentile(times, 99)), 4),
        "mean_ms": round(float(times.mean()), 4),
    }


def recall(found: Sequence[Sequence[str]], truth: Sequence[Sequence[str]]) -> float:
    """Mean share of each query's true top ids that were found."""
    shares = [len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True) if t]
    return float(np.mean(shares)) if shares else 1.0


def rss_mb() -> float | None:
    """This process's resident memory now (Linux /proc), None where unavailable."""
    try:
        fields = Path("/proc/self/status").read_text().split("VmRSS:")[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[0]) / 1024  # kB


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file()) / 2**20


def load_average() -> float | None:
    """Runnable processes, 1-minute average: above the core count, other work competed with
    the measurement and its figures are pessimistic."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def machine() -> dict[str, Any]:
    """CPU model, usable cores, library versions, BLAS kernels and thread counts."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        # set for old OpenBLAS builds, they slow a current one: benchmarks run without them
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")},
    }
    keys = ("internal_api", "version", "architecture", "num_threads", "threading_layer")
    info["thread_pools"] = [
        {key: pool.get(key) for key in keys} | {"library": Path(pool["filepath"]).name}
        for pool in threadpool_info()
    ]
    return info


def save_result(path: Path, result: dict[str, Any]) -> None:
    """A benchmark's figures as indented JSON, in the order they were gathered, written
    atomically (a killed benchmark never leaves half a results file)."""
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
