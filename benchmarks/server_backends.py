"""CIFAR-10 retrieval through the server backends, compared with the embedded backend:
the same vectors (50,000 training images indexed, 10,000 test queries, depth 100), the
same metrics as `cbir benchmark`, plus bulk-index throughput and search timings.

    .venv/bin/cbir dev elasticsearch start        # prints CBIR_ELASTICSEARCH_URL
    CBIR_ELASTICSEARCH_URL=... CBIR_DATA_DIR=../shared/data .venv/bin/python \
        benchmarks/server_backends.py -e gch -b embedded -b es-exact -b es-knn -b milvus-lite \
        --queries 2000 --out benchmarks/results/server-backends-gch.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cbir.benchmarking.measure import save_result
from cbir.commands import parse_param
from cbir.datasets import load_cifar10
from cbir.evaluation.metrics import mean_metrics, per_query_metrics
from cbir.features import get_extractor
from cbir.index import create_index

DEPTH = 100
SINGLE_QUERIES = 50  # one request per query, for latency percentiles


def backends(tmp: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        "embedded": ("embedded", {}),
        "es-exact": ("elasticsearch", {"index_name": "bench_exact", "search": "exact"}),
        "es-knn": ("elasticsearch", {"index_name": "bench_knn", "search": "knn",
                                     "num_candidates": 400}),
        "milvus-lite": ("milvus", {"uri": str(tmp / "bench.db"), "collection": "bench"}),
        "milvus-lite-hnsw": ("milvus", {"uri": str(tmp / "bench.db"), "collection": "bench_hnsw",
                                        "index": "HNSW", "ef": 400}),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-e", "--extractor", default="gch")
    parser.add_argument("-p", "--param", action="append", type=parse_param, default=[])
    parser.add_argument("-b", "--backend", action="append", default=[])
    parser.add_argument("--queries", type=int, default=10_000, help="first N test images")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    data = load_cifar10(args.data, download=False)
    index_set, queries = data.train, data.test
    extractor = get_extractor(args.extractor, **dict(args.param))
    if extractor.needs_fit:
        extractor.fit(index_set.images, index_set.labels)
    index_vectors = extractor.transform(index_set.images)
    query_vectors = extractor.transform(queries.images)[: args.queries]
    query_labels = queries.labels[: args.queries]
    label_of = dict(zip(index_set.ids, index_set.labels.tolist(), strict=True))
    n_relevant = np.bincount(index_set.labels, minlength=10)[query_labels]

    results: dict[str, Any] = {"extractor": extractor.describe(), "n_queries": len(query_labels)}
    rankings: dict[str, list[list[str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for tag in args.backend or ["embedded"]:
            name, settings = backends(Path(tmp))[tag]
            index = create_index(name, dim=extractor.dim, **settings)
            try:
                started = time.perf_counter()
                index.add(index_set.ids, index_vectors)
                add_s = time.perf_counter() - started
                started = time.perf_counter()
                ranked, _ = index.search(query_vectors, DEPTH)
                batch_s = time.perf_counter() - started
                single = []
                for query in query_vectors[:SINGLE_QUERIES]:
                    started = time.perf_counter()
                    index.search(query, DEPTH)
                    single.append(time.perf_counter() - started)
            finally:
                getattr(index, "drop", lambda: None)()
                index.close()
            retrieved = np.array([[label_of[i] for i in ids] for ids in ranked])
            metrics = mean_metrics(
                per_query_metrics(retrieved == query_labels[:, None], n_relevant, DEPTH),
                n_relevant,
            )
            rankings[tag] = ranked
            results[tag] = {
                "map_cut_100": metrics["map_cut_100"],
                "P_100": metrics["P_100"],
                "index_docs_per_s": round(len(index_set) / add_s, 1),
                "batch_search_queries_per_s": round(len(query_labels) / batch_s, 1),
                "single_query_ms_p50": round(1000 * float(np.median(single)), 2),
                "single_query_ms_p95": round(1000 * float(np.percentile(single, 95)), 2),
            }
            if "embedded" in rankings and tag != "embedded":
                same = [a == b for a, b in zip(rankings["embedded"], ranked, strict=True)]
                overlap = [
                    len(set(a) & set(b)) / DEPTH
                    for a, b in zip(rankings["embedded"], ranked, strict=True)
                ]
                results[tag]["identical_rankings"] = float(np.mean(same))
                results[tag]["recall_at_100_vs_embedded"] = float(np.mean(overlap))
                results[tag]["map_cut_100_diff"] = (
                    metrics["map_cut_100"] - results["embedded"]["map_cut_100"]
                )
            print(tag, json.dumps(results[tag]), file=sys.stderr)
    print(json.dumps(results, indent=2))
    if args.out:
        save_result(args.out, results)


if __name__ == "__main__":
    main()
