"""One query per `cbir search` process, as a user runs it: the index's own round trip.

Runs `cbir search IMAGE -c COLLECTION -k K --json` once per query image (each a new process,
so each search is the first of its process: a server backend's connection, consistency level
and lazy imports all count) and reads the `index_timing` the command reports: the index
search's round trip and, where the server reports one (Elasticsearch's `took`), the server's
own time. Prints and saves p50 / p90 / max of both. Process start-up (imports, opening the
collection, describing the image) is outside that timing and is not measured here.

    .venv/bin/cbir dev milvus start        # export the CBIR_MILVUS_URI it prints
    .venv/bin/cbir index cifar10 -c /tmp/mv-gch -e gch --backend milvus --data /work/shared/data
    .venv/bin/python benchmarks/cli_search_latency.py --collection /tmp/mv-gch \\
        --queries DIR_OF_IMAGES --out benchmarks/results/cli_search_latency-milvus.json

Extra `--backend-option KEY=VALUE` flags are passed to every `cbir search`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
from pathlib import Path

from cbir.images import IMAGE_SUFFIXES
from cbir.speed.measure import load_average, save_result


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p90": round(ordered[max(0, round(0.9 * len(ordered)) - 1)], 2),
        "max": round(ordered[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True, help="folder of query images")
    parser.add_argument("-n", type=int, default=20, help="queries (processes), at most 100")
    parser.add_argument("-k", type=int, default=100)
    parser.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    found = sorted(p for p in args.queries.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    images = found[: min(max(args.n, 1), 100)]
    if not images:
        parser.error(f"no images in {args.queries}")
    options = [flag for option in args.backend_option for flag in ("--backend-option", option)]
    load_before = load_average()
    round_trips, server = [], []
    for image in images:
        command = [sys.executable, "-m", "cbir.cli", "search", str(image),
                   "-c", str(args.collection), "-k", str(args.k), "--json", *options]  # fmt: skip
        answer = subprocess.run(command, capture_output=True, text=True, check=True)
        timing = json.loads(answer.stdout)["index_timing"]
        round_trips.append(timing["round_trip_ms"])
        if timing.get("server_ms") is not None:
            server.append(timing["server_ms"])
    manifest = json.loads((args.collection / "manifest.json").read_text())
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "collection": str(args.collection),
        "backend": manifest["backend"],
        "extractor": manifest["extractor"]["name"],
        "images": manifest["counts"]["images"],
        "k": args.k,
        "backend_options": args.backend_option,
        "queries": len(images),
        "round_trip_ms": percentiles(round_trips),
        "server_ms": percentiles(server),
        "load_average_before_after": [load_before, load_average()],
    }
    print(json.dumps(result, indent=2))
    save_result(args.out, result)


if __name__ == "__main__":
    main()
