"""CIFAR-10 retrieval through the server backends beside the embedded index, in one run: the
same gch vectors (50,000 training images indexed, 10,000 test queries, depth 100), the same
metrics as `cbir benchmark`, batched throughput, single-query latency (round trip and the
server's own time), queries per second by batch size, and the peak resident memory of this
client and of each server process tree while it indexes and answers.

    .venv/bin/cbir dev elasticsearch start && .venv/bin/cbir dev milvus start   # or let the
    CBIR_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/server_backends.py \\
        --out benchmarks/results/server-backends-gch.json          # script start its own

Servers recorded by `cbir dev ... start` are reused (their PIDs give the server's memory);
otherwise the script starts throwaway ones on 127.0.0.1 and stops them by PID at the end.
Peak memory is Linux's VmHWM, reset before each backend (/proc/PID/clear_refs).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cbir.commands import parse_param
from cbir.datasets import load_cifar10
from cbir.evaluation.metrics import mean_metrics, per_query_metrics
from cbir.features import get_extractor
from cbir.index import backend_class, create_index
from cbir.servers import children
from cbir.speed.measure import load_average, machine, save_result

DEPTH = 100
SINGLE_QUERIES = 200  # one request each, for latency percentiles
SWEEP_QUERIES = 2_000  # queries per batch size tried
WARM_UP_QUERIES = 256  # searched, untimed, before the timed batch search
BACKENDS: dict[str, tuple[str, str | None, dict[str, Any]]] = {  # tag -> backend, server, settings
    "embedded": ("embedded", None, {}),
    "es-exact": ("elasticsearch", "elasticsearch", {"index": "flat"}),
    # the graph parameters measured (benchmarks/README.md) before specs had shared defaults
    "es-knn": (
        "elasticsearch",
        "elasticsearch",
        {"index": "hnsw:M=16,ef_construction=100", "search": "ef=200"},
    ),
    "milvus-flat": ("milvus", "milvus", {"index": "flat"}),
    # ef 200 gave recall@100 0.9887-0.9987 over separate builds of the graph; 300 keeps >= 0.99
    "milvus-hnsw": (
        "milvus",
        "milvus",
        {"index": "hnsw:M=16,ef_construction=200", "search": "ef=300"},
    ),
    "milvus-lite": ("milvus", "lite", {"index": "flat"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-e", "--extractor", default="gch")
    parser.add_argument("-p", "--param", action="append", type=parse_param, default=[])
    parser.add_argument("-b", "--backend", action="append", choices=list(BACKENDS))
    parser.add_argument("--queries", type=int, default=10_000, help="first N test images")
    parser.add_argument(
        "--lite-queries", type=int, default=10_000,
        help="queries for Milvus Lite (milvus-lite 3.x searches in Python: ~120 queries/s here)",
    )  # fmt: skip
    parser.add_argument("--batches", default="", help="batch sizes to time, e.g. 64,256,1024")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    tags = args.backend or list(BACKENDS)

    ids, vectors, queries, labels, n_relevant, label_of, extractor = describe(args)
    results: dict[str, Any] = {
        "dataset": "CIFAR-10 (JPEG mirror)",
        "extractor": extractor,
        "n_index": len(ids),
        "n_queries": len(queries),
        "machine": machine(),
        "uptime_start": uptime(),
    }
    rankings: dict[str, np.ndarray] = {}
    position = {id_: i for i, id_ in enumerate(ids)}
    index_labels = np.array([label_of[id_] for id_ in ids])
    sweep = [int(b) for b in args.batches.split(",") if b]
    with tempfile.TemporaryDirectory() as tmp, servers(tags, Path(tmp)) as where:
        for tag in tags:
            name, server, settings = BACKENDS[tag]
            connection, pids = where.get(server, (None, []))
            if server is not None:
                cls = backend_class(name)
                fresh = f"bench_{tag.replace('-', '_')}"
                settings = {**settings, cls.connection: connection, cls.name_setting: fresh}
            n = args.lite_queries if server == "lite" else len(queries)
            tried = sweep if server != "lite" else []  # Lite: minutes per size
            result = run_backend(name, settings, ids, position, vectors, queries[:n], pids, tried)
            ranked = result.pop("ranked")

            def scored(ranking: np.ndarray) -> dict[str, float]:
                relevant = index_labels[ranking] == labels[: len(ranking), None]
                counts = n_relevant[: len(ranking)]
                return mean_metrics(per_query_metrics(relevant, counts, DEPTH), counts)

            metrics = scored(ranked)
            result = {"n_queries": n, "map_cut_100": metrics["map_cut_100"],
                      "P_100": metrics["P_100"], **result}  # fmt: skip
            if "embedded" in rankings and tag != "embedded":
                exact = rankings["embedded"][:n]
                pairs = list(zip(exact.tolist(), ranked.tolist(), strict=True))
                # against the embedded index's figure over the same queries
                result["map_cut_100_diff"] = metrics["map_cut_100"] - scored(exact)["map_cut_100"]
                result["recall_at_100_vs_embedded"] = float(
                    np.mean([len(set(a) & set(b)) / DEPTH for a, b in pairs])
                )
                result["identical_rankings"] = float(np.mean([a == b for a, b in pairs]))
            rankings[tag] = ranked
            results[tag] = result
            print(tag, json.dumps(result), file=sys.stderr, flush=True)
            if args.out:  # what is measured is kept, should a later backend fail
                save_result(args.out, results)
    results["uptime_end"] = uptime()
    print(json.dumps(results, indent=2))
    if args.out:
        save_result(args.out, results)


def describe(args: argparse.Namespace) -> tuple:
    """Index ids and vectors, query vectors and labels; the images are let go before any
    backend runs, so the client's memory is what searching costs."""
    data = load_cifar10(args.data, download=False)
    extractor = get_extractor(args.extractor, **dict(args.param))
    if extractor.needs_fit:
        extractor.fit(data.train.images, data.train.labels)
    vectors = extractor.transform(data.train.images)
    queries = extractor.transform(data.test.images)[: args.queries]
    labels = data.test.labels[: args.queries]
    ids = list(data.train.ids)
    label_of = dict(zip(ids, data.train.labels.tolist(), strict=True))
    n_relevant = np.bincount(data.train.labels, minlength=10)[labels]
    described = extractor.describe()
    del data, extractor
    gc.collect()
    return ids, vectors, queries, labels, n_relevant, label_of, described


def run_backend(
    name: str,
    settings: dict[str, Any],
    ids: list[str],
    position: dict[str, int],
    vectors: np.ndarray,
    queries: np.ndarray,
    server_pids: list[int],
    sweep: list[int],
) -> dict[str, Any]:
    watched = [os.getpid(), *server_pids]
    release_freed_memory()  # the last backend's garbage is not this one's peak
    for pid in watched:
        reset_peak(pid)
    before = {pid: resident_mb(pid) for pid in watched}
    load = [load_average()]
    index = create_index(name, dim=vectors.shape[1], **settings)
    remote = backend_class(name).keeps_data  # a RemoteIndex: compact() and drop()
    try:
        started = time.perf_counter()
        index.add(ids, vectors)
        add_s = time.perf_counter() - started
        started = time.perf_counter()
        if remote:
            index.compact()  # a server's step after a bulk load
        compact_s = time.perf_counter() - started
        # throughput is a warm server's: the first search after a bulk load pays one-time
        # costs (Milvus's Strong read waits for its tick, lazy imports, cold caches), which
        # the one-query figures below and benchmarks/cli_search_latency.py show instead
        index.search(queries[:WARM_UP_QUERIES], DEPTH)
        started = time.perf_counter()
        found, _ = index.search(queries, DEPTH)
        batch_s = time.perf_counter() - started
        # positions, not id strings: rankings of every backend are kept for the comparison
        ranked = np.array([[position[i] for i in row] for row in found], dtype=np.int32)
        del found
        timing = getattr(index, "last_search", None)
        single, round_trip, server = [], [], []
        for query in queries[:SINGLE_QUERIES]:
            started = time.perf_counter()
            index.search(query, DEPTH)
            single.append(1000 * (time.perf_counter() - started))
            if hasattr(index, "last_search"):
                round_trip.append(1000 * index.last_search.round_trip_s)
                server.append(index.last_search.server_s)
        by_batch = {}
        for size in sweep if hasattr(index, "batch") else []:
            index.batch = size
            started = time.perf_counter()
            index.search(queries[:SWEEP_QUERIES], DEPTH)
            by_batch[size] = round(SWEEP_QUERIES / (time.perf_counter() - started), 1)
    finally:
        if remote:
            index.drop()
        index.close()
    load.append(load_average())
    result: dict[str, Any] = {
        "ranked": ranked,
        "settings": {k: v for k, v in settings.items() if k not in ("url", "uri")},
        "index_docs_per_s": round(len(ids) / add_s, 1),
        "compact_s": round(compact_s, 2),
        "batch_search_s": round(batch_s, 3),
        "batch_search_queries_per_s": round(len(queries) / batch_s, 1),
        "single_query_ms_p50": round(float(np.median(single)), 2),
        "single_query_ms_p95": round(float(np.percentile(single, 95)), 2),
        "client_rss_mb_before": before[os.getpid()],
        "client_peak_rss_mb": peak_mb(os.getpid()),
        "load_average_before_after": load,
    }
    if timing is not None:
        result["batch_round_trips"] = timing.round_trips
        result["batch_server_s"] = timing.server_s and round(timing.server_s, 3)
        result["single_round_trip_ms_p50"] = round(float(np.median(round_trip)), 2)
        known = [s for s in server if s is not None]
        result["single_server_ms_p50"] = round(1000 * float(np.median(known)), 2) if known else None
    if by_batch:
        result[f"queries_per_s_by_batch_{SWEEP_QUERIES}_queries"] = by_batch
    if server_pids:
        result["server_rss_mb_before"] = round(sum(before[pid] or 0 for pid in server_pids), 1)
        result["server_peak_rss_mb"] = round(sum(peak_mb(pid) or 0 for pid in server_pids), 1)
    return result


@contextlib.contextmanager
def servers(tags: list[str], tmp: Path) -> Iterator[dict[str, tuple[str, list[int]]]]:
    """server -> (address, PIDs of its process tree): the ones `cbir dev` recorded, else
    throwaway ones started here and stopped at the end."""
    from cbir.servers import elasticsearch as es_server
    from cbir.servers import milvus as milvus_server

    wanted = {BACKENDS[tag][1] for tag in tags}
    found: dict[str, tuple[str, list[int]]] = {}
    started = []
    try:
        for engine, module in (("elasticsearch", es_server), ("milvus", milvus_server)):
            if engine in wanted:
                running = module.recorded()
                if running is None:
                    running = module.start()
                    started.append(running)
                address = running.url if engine == "elasticsearch" else running.uri
                found[engine] = (address, tree(running.pid))
        if "lite" in wanted:
            found["lite"] = (str(tmp / "bench.db"), [])  # Milvus Lite runs in this process
        yield found
    finally:
        for server in started:
            server.stop()


def tree(pid: int) -> list[int]:
    pids = [pid]
    for child in children(pid):
        pids += tree(child)
    return pids


def release_freed_memory() -> None:
    """Collect garbage and hand the C heap's free pages back (glibc's malloc_trim), so that
    the resident memory before a backend is what this process still uses."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak(pid: int) -> None:
    """Linux: writing 5 to clear_refs resets the process's peak resident memory (VmHWM)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _status_mb(pid: int, field: str) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
        return round(int(text.split(f"{field}:")[1].split()[0]) / 1024, 1)
    except (OSError, IndexError):
        return None


def peak_mb(pid: int) -> float | None:
    return _status_mb(pid, "VmHWM")


def resident_mb(pid: int) -> float | None:
    return _status_mb(pid, "VmRSS")


def uptime() -> str:
    return os.popen("uptime").read().strip()  # noqa: S605 (a fixed command, for the record)


if __name__ == "__main__":
    main()
