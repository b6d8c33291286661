"""Upload-to-results latency of `cbir serve`, measured over HTTP on 127.0.0.1.

Starts `cbir serve` on a collection as a child process (stopped by its PID at the end), then
sends a bounded number of searches over one keep-alive connection, each a different 32x32 PNG
uploaded as multipart `image` to POST /api/search, and the same number of "more like this"
searches by id (GET /api/search?id=...). Prints and saves p50/p90/p99 of the client-side time
(request sent -> JSON parsed) and of the server's own `took_ms`.

    .venv/bin/cbir index cifar10 -c runs/cifar10-gch --data /work/shared/data   # once, ~45 s
    .venv/bin/python benchmarks/search_latency.py --collection runs/cifar10-gch

As DESIGN.md allows for benchmarks, the server runs without OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE (set on some machines for old OpenBLAS builds; they slow a current numpy);
--keep-openblas-env keeps them. The JSON records which.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cbir.speed.measure import save_result

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, only benchmarks/ is on sys.path: the repository root is added for the server
# process and HTTP client of tests/support (test helpers, kept out of the cbir package).
sys.path.insert(0, str(ROOT))
from tests.support.http_client import Client  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402

OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
WARMUP = 20


def query_images(n: int, seed: int = 0) -> list[bytes]:
    """n different 32x32 PNGs: smooth colour gradients with noise, like small photos."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, 32, dtype=np.float32)
    out = []
    for _ in range(n):
        low, high = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        image = low + (high - low) * ramp[:, None, None] * ramp[None, :, None] * 2
        image = np.clip(image + rng.normal(0, 12, (32, 32, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def summarise(client_ms: list[float], server_ms: list[float]) -> dict[str, float]:
    def percentile(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 3)

    return {
        "requests": len(client_ms),
        "p50_ms": percentile(client_ms, 50),
        "p90_ms": percentile(client_ms, 90),
        "p99_ms": percentile(client_ms, 99),
        "mean_ms": round(statistics.fmean(client_ms), 3),
        "max_ms": round(max(client_ms), 3),
        "server_took_p50_ms": percentile(server_ms, 50),
        "server_took_p99_ms": percentile(server_ms, 99),
    }


def timed(send) -> tuple[float, float]:
    """(client ms, server took_ms) of one request that must succeed."""
    started = time.perf_counter()
    reply = send()
    body = reply.json()
    elapsed = (time.perf_counter() - started) * 1000.0
    if reply.status != 200:
        raise SystemExit(f"search failed with {reply.status}: {body}")
    return elapsed, body["took_ms"]


def run(args: argparse.Namespace) -> dict:
    env = os.environ.copy()
    if not args.keep_openblas_env:
        for name in OPENBLAS_VARIABLES:
            env.pop(name, None)
    queries = query_images(args.requests + WARMUP)
    load_before = os.getloadavg()[0]  # other work on the machine shows in the tail: record it
    deadline = time.monotonic() + args.max_seconds
    with ServerProcess(args.collection, env=env) as server, Client(server.url) as http:
        stats = http.request("GET", "/api/collection").json()
        example_ids = [r["id"] for r in http.search_upload(queries[0], k=100).json()["results"]]
        upload_client, upload_server, id_client, id_server = [], [], [], []
        for i, data in enumerate(queries):
            if time.monotonic() > deadline:
                break
            upload = timed(lambda data=data: http.search_upload(data, k=args.k))
            image_id = example_ids[i % len(example_ids)]
            by_id = timed(lambda i=image_id: http.request("GET", f"/api/search?id={i}&k={args.k}"))
            if i >= WARMUP:  # the first requests warm caches and code paths
                upload_client.append(upload[0])
                upload_server.append(upload[1])
                id_client.append(by_id[0])
                id_server.append(by_id[1])
        pid = server.pid
    if not upload_client:
        raise SystemExit("no request measured: raise --max-seconds")
    return {
        "benchmark": "search_latency",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "collection": str(args.collection),
        "images": stats["count"],
        "extractor": stats["extractor"],
        "dim": stats["dim"],
        "k": args.k,
        "query": "32x32 PNG, a different one per request, multipart POST /api/search",
        "transport": "HTTP/1.1 keep-alive on 127.0.0.1, one connection, waitress",
        "server_pid": pid,
        "openblas_env_kept": args.keep_openblas_env,
        "upload": summarise(upload_client, upload_server),
        "by_id": summarise(id_client, id_server),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", type=Path, default=Path("runs/cifar10-gch"))
    parser.add_argument("--requests", type=int, default=500, help="measured searches of each kind")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop sending after this")
    parser.add_argument("--keep-openblas-env", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search_latency.json"))
    args = parser.parse_args()
    result = run(args)
    save_result(args.out, result)
    for kind in ("upload", "by_id"):
        r = result[kind]
        print(
            f"{kind:<7} p50 {r['p50_ms']:6.2f} ms  p90 {r['p90_ms']:6.2f}  p99 {r['p99_ms']:6.2f}  "
            f"(server p50 {r['server_took_p50_ms']:.2f} ms, {r['requests']} requests)"
        )
    load = result["machine"]["load_average_1min"]
    print(
        f"{result['images']:,} images, extractor {result['extractor']['name']}; load average "
        f"{load['before']:.1f} -> {load['after']:.1f} on {result['machine']['cpus']} cpus; "
        f"wrote {args.out}"
    )


if __name__ == "__main__":
    main()
