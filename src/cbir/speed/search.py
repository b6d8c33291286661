"""The search benchmark behind `cbir bench search`: exact and approximate side by side.

Both indexes get the same seeded, clustered vectors (cbir.speed.data) and the same
queries, in one process, one after the other: build time, single-query latency (p50 / p99
over `single` queries, one call each), batched throughput (all queries in one call), size
as saved to disk, and the approximate index's recall@k against the exact results.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cbir import __version__
from cbir.errors import CbirError
from cbir.speed.data import Mixture
from cbir.speed.measure import (
    folder_mb,
    latencies_ms,
    load_average,
    machine,
    recall,
    rss_mb,
    stopwatch,
)


@dataclass(frozen=True)
class SearchBenchmark:
    n: int
    dim: int
    queries: int = 10_000
    single: int = 1_000  # queries timed one call at a time (at most `queries`)
    k: int = 100
    index: str = "auto"  # the approximate side's index spec
    search: str = ""  # ... and its search spec
    seed: int = 0
    clusters: int = 256
    spread: float = 1.0
    spectrum_power: float = 0.5  # 0: isotropic clusters, the hard case for graph search
    sweep: tuple[str, ...] = ()  # more search specs measured on the same approximate build

    def check(self) -> None:
        for name in ("n", "dim", "queries", "single", "k", "clusters"):
            if getattr(self, name) < 1:
                raise CbirError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.spread < 0 or self.spectrum_power < 0:
            raise CbirError("spread and spectrum_power must be >= 0")


def run_search_benchmark(
    config: SearchBenchmark,
    progress: Callable[[str], None] = lambda message: None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Measure; returns {"params", "exact", "ann", "speedup_p50", "speedup_batch"}."""
    import faiss

    from cbir.index import embedded, faiss_index
    from cbir.index.embedded import ExactIndex
    from cbir.index.faiss_index import FaissIndex

    config.check()
    load_at_start = load_average()
    mixture = Mixture(config.dim, clusters=config.clusters, spread=config.spread,
                      spectrum_power=config.spectrum_power, seed=config.seed)  # fmt: skip
    progress(f"generating {config.n:,} x {config.dim} vectors and {config.queries:,} queries")
    vectors = mixture.sample(config.n, stream=0)
    queries = mixture.sample(config.queries, stream=1)
    ids = [f"v{i:08d}" for i in range(config.n)]
    single = queries[: min(config.single, config.queries)]

    k = config.k
    with tempfile.TemporaryDirectory(dir=workdir, prefix="cbir-bench-") as scratch:
        progress("exact (ExactIndex): build, single queries, batch")
        index, exact = _build(lambda: ExactIndex(config.dim), ids, vectors)
        timing, truth = _search(index, queries, single, k)
        exact.update(timing, **_saved_size(index, Path(scratch) / "exact"))
        index.close()
        del index  # before the approximate one is built: RSS deltas stay apart

        progress(f"approximate (faiss {config.index}): build, single queries, batch")
        index, ann = _build(
            lambda: FaissIndex(config.dim, index=config.index, search=config.search), ids, vectors
        )
        ann.update(active=str(index.active), search=index.settings["search"])
        timing, found = _search(index, queries, single, k)
        ann.update(timing, **{f"recall_at_{k}": round(recall(found, truth), 5)})
        ann.update(_saved_size(index, Path(scratch) / "ann"))
        sweep = []
        for search in config.sweep:  # other search settings, same build
            progress(f"approximate, searched with {search}")
            index.set_search(search)
            timing, found = _search(index, queries, single, k)
            sweep.append({"search": index.settings["search"], **timing,
                          f"recall_at_{k}": round(recall(found, truth), 5)})  # fmt: skip
        index.close()
    params = {
        **{key: value for key, value in asdict(config).items()
           if key not in ("clusters", "spread", "spectrum_power", "sweep")},
        "spec": config.index,
        "data": mixture.describe(),
        "threads": {
            "exact_scan_threads": embedded.THREADS,
            "faiss_omp_threads": faiss_index.THREADS,
            "faiss_parallel_from_queries": faiss_index.PARALLEL_FROM,
        },
        "faiss": faiss.__version__,
        "cbir": __version__,
        **machine(),
        "load_average_1m": {"start": load_at_start, "end": load_average()},
    }  # fmt: skip
    result = {
        "params": params,
        "exact": exact,
        "ann": ann,
        "speedup_p50": round(exact["p50_ms"] / ann["p50_ms"], 2),
        "speedup_batch": round(ann["qps_batch"] / exact["qps_batch"], 2),
    }
    if sweep:
        result["sweep"] = sweep
    return result


def _build(
    make: Callable[[], Any], ids: Sequence[str], vectors: np.ndarray
) -> tuple[Any, dict[str, Any]]:
    """A new index holding `vectors`; its build time and how much the process grew."""
    gc.collect()
    rss_before = rss_mb()
    with stopwatch() as build:
        index = make()
        index.add(ids, vectors)
    rss_after = rss_mb()
    figures: dict[str, Any] = {"build_s": round(build["s"], 6)}
    if rss_before is not None and rss_after is not None:
        figures["rss_delta_mb"] = round(rss_after - rss_before, 1)  # noisy: allocator, temps
    return index, figures


def _search(
    index: Any, queries: np.ndarray, single: np.ndarray, k: int
) -> tuple[dict[str, Any], list[list[str]]]:
    """Single-query latencies, then every query in one batch; the batch's results."""
    figures = latencies_ms(lambda query: index.search(query, k), single)
    with stopwatch() as batch:
        found, _ = index.search(queries, k)
    figures["batch_s"] = round(batch["s"], 6)
    figures["qps_batch"] = round(len(queries) / batch["s"], 1)
    return figures, found


def _saved_size(index: Any, folder: Path) -> dict[str, float]:
    """memory_mb: the index as saved (vectors + graph or codes + ids), close to what it
    holds in memory; and how long the save took."""
    with stopwatch() as save:
        index.save(folder)
    return {"save_s": round(save["s"], 6), "memory_mb": round(folder_mb(folder), 1)}
