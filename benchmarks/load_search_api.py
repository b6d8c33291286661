"""Load test of `cbir serve`'s /api/search: concurrent clients for a bounded time, on 127.0.0.1.

Starts `cbir serve` on a collection as a child process (stopped by its PID at the end, even on
error), then runs --clients threads, each with its own keep-alive connection, that send
searches back to back for --duration seconds (at most 60): alternately a 32x32 PNG upload
(POST /api/search, multipart `image`) and a "more like this" search by id
(GET /api/search?id=...). Optionally, `--index-during FOLDER` runs `cbir index FOLDER` into the
same collection while the load runs, so searches go on while a writer commits and the server
refreshes. Prints and saves requests/s, p50/p90/p99 latency and every error.

    .venv/bin/cbir index cifar10 -c runs/cifar10-gch --data /work/shared/data   # once
    .venv/bin/python benchmarks/load_search_api.py --collection runs/cifar10-gch

Clients and server share the machine's cores: the figures are for both on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from cbir.benchmarking.measure import save_result
from cbir.collection import Collection
from cbir.web.client import Client
from cbir.web.process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "load_search_api.json"
MAX_DURATION_S = 60.0
REQUEST_TIMEOUT_S = 30.0
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_latency import query_images  # noqa: E402  (the latency benchmark's query images)


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def record(self, seconds: float, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.latencies.append(seconds)
            else:
                self.errors.append(error)


def client_loop(
    url: str, uploads: list[bytes], ids: list[str], k: int, deadline: float, seed: int, tally: Tally
) -> None:
    rng = np.random.default_rng(seed)
    with Client(url, timeout=REQUEST_TIMEOUT_S) as client:
        turn = seed
        while time.monotonic() < deadline:
            turn += 1
            started = time.perf_counter()
            try:
                if turn % 2:
                    reply = client.search_upload(uploads[rng.integers(len(uploads))], k=k)
                else:
                    image_id = ids[rng.integers(len(ids))]
                    reply = client.request("GET", f"/api/search?k={k}&id={_quote(image_id)}")
                error = (
                    None if reply.status == 200 else f"HTTP {reply.status}: {reply.body[:200]!r}"
                )
                if error is None and len(reply.json()["results"]) != k:
                    error = f"{len(reply.json()['results'])} results, wanted {k}"
            except Exception as failure:  # every failure is counted and reported
                error = f"{type(failure).__name__}: {failure}"
            tally.record(time.perf_counter() - started, error)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def health_count(url: str) -> int:
    with Client(url) as client:
        return client.request("GET", "/api/health").json()["images"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds, at most 60")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file (default {RESULTS})")
    parser.add_argument("--threads", type=int, default=4, help="server request threads")
    parser.add_argument(
        "--index-during", type=Path, metavar="FOLDER",
        help="run `cbir index FOLDER` into the collection during the load",
    )  # fmt: skip
    args = parser.parse_args()
    duration = min(max(args.duration, 1.0), MAX_DURATION_S)

    with Collection.open(args.collection, read_only=True) as collection:
        ids = sorted(collection.known_ids())[:: max(1, len(collection) // 2000)]
    uploads = query_images(200)
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARIABLES}
    tally = Tally()
    indexer = None
    with ServerProcess(
        args.collection, env=env, extra_args=("--threads", str(args.threads))
    ) as server:
        count_before = health_count(server.url)
        deadline = time.monotonic() + duration
        if args.index_during:
            indexer = subprocess.Popen(
                [sys.executable, "-m", "cbir.cli", "-q", "index", str(args.index_during),
                 "-c", str(args.collection)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            )  # fmt: skip
        threads = [
            threading.Thread(
                target=client_loop,
                args=(server.url, uploads, ids, args.k, deadline, seed, tally),
            )
            for seed in range(args.clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=duration + REQUEST_TIMEOUT_S + 5)
        elapsed = time.monotonic() - started
        indexer_output = None
        if indexer is not None:
            try:
                indexer_output = indexer.communicate(timeout=120)[0].strip()
            except subprocess.TimeoutExpired:
                indexer.kill()
                indexer_output = "indexer still running after 120 s: killed"
        count_after = health_count(server.url)
        server_alive = server.alive()
    latencies = np.array(tally.latencies) * 1000.0
    figures = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "collection": str(args.collection),
        "images_before_after": [count_before, count_after],
        "clients": args.clients,
        "server_threads": args.threads,
        "duration_s": round(elapsed, 1),
        "requests": len(latencies),
        "errors": len(tally.errors),
        "error_examples": tally.errors[:10],
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": {f"p{q}": round(float(np.percentile(latencies, q)), 1) for q in (50, 90, 99)}
        if len(latencies)
        else {},
        "mix": f"alternating upload (POST multipart) and by-id (GET) searches, k={args.k}",
        "index_during": indexer_output,
        "server_alive_at_end": server_alive,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures, indent=2))
    save_result(args.out, figures)
    if tally.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
