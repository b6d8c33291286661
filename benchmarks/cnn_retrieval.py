"""CIFAR-10 retrieval with the `cnn` extractor, scored as `cbir benchmark` scores it (50,000
training images indexed, 10,000 test queries, depth 100), with the two description speeds
timed apart: index images (`transform_index`: the true label fills the class block when
class fusion is on) and queries (`transform_query`: the predicted class, and `query_tta`'s
extra views when set; a query's label is never used).

    CBIR_DATA_DIR=../shared/data .venv/bin/python benchmarks/cnn_retrieval.py \
        -p class_fusion=true -p query_tta=2 --out benchmarks/results/cnn-class-fusion-qtta2.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from cbir.commands import parse_param
from cbir.datasets import load_cifar10
from cbir.evaluation.metrics import average_precision_full, mean_metrics, per_query_metrics
from cbir.evaluation.quality_run import dataset_label
from cbir.features import get_extractor
from cbir.index.embedded import ExactIndex
from cbir.speed.measure import save_result

DEPTH = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-p", "--param", action="append", type=parse_param, default=[])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-map-all", action="store_true")
    args = parser.parse_args()

    data = load_cifar10(args.data, download=False)
    index_set, queries = data.train, data.test
    extractor = get_extractor("cnn", **dict(args.param))
    print(f"cnn: {extractor.dim} dimensions", file=sys.stderr)  # loads the network first
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if extractor.needs_fit:
        extractor.fit(index_set.images, index_set.labels)  # index images only
    index_vectors = extractor.transform_index(index_set.images, index_set.labels)
    timings["extract_index_s"] = time.perf_counter() - started
    started = time.perf_counter()
    query_vectors = extractor.transform_query(queries.images)
    timings["extract_queries_s"] = time.perf_counter() - started
    timings["extract_s"] = timings["extract_index_s"] + timings["extract_queries_s"]
    speeds = {
        "extract_images_per_s": (len(index_set) + len(queries)) / timings["extract_s"],
        "index_images_per_s": len(index_set) / timings["extract_index_s"],
        "query_images_per_s": len(queries) / timings["extract_queries_s"],
    }

    started = time.perf_counter()
    index = ExactIndex(dim=extractor.dim, metric="cosine")
    index.add(index_set.ids, index_vectors)
    ranked_ids, _ = index.search(query_vectors, DEPTH)
    timings["search_s"] = time.perf_counter() - started

    label_of = dict(zip(index_set.ids, index_set.labels.tolist(), strict=True))
    retrieved = np.array([[label_of[i] for i in ids] for ids in ranked_ids])
    n_relevant = np.bincount(index_set.labels, minlength=10)[queries.labels]
    per_query = per_query_metrics(retrieved == queries.labels[:, None], n_relevant, DEPTH)
    metrics = mean_metrics(per_query, n_relevant)
    if not args.no_map_all:
        started = time.perf_counter()
        stored_labels = np.array([label_of[i] for i in index.ids()])
        ap = [
            average_precision_full(
                index.scores(query_vectors[s : s + 256]),
                stored_labels[None, :] == queries.labels[s : s + 256, None],
                index.tiebreak_rank,
            )
            for s in range(0, len(queries), 256)
        ]
        metrics["map_all"] = float(np.concatenate(ap).mean())
        timings["map_all_s"] = time.perf_counter() - started
    if extractor.params["class_fusion"]:
        predicted = query_vectors[:, -10:].argmax(1)
        metrics["query_class_accuracy"] = float((predicted == queries.labels).mean())
    result = {
        "dataset": dataset_label(data.source),
        "extractor": extractor.describe(),
        "run_tag": extractor.run_tag,
        **metrics,
        **{name: round(value, 1) for name, value in speeds.items()},
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        save_result(args.out, result)


if __name__ == "__main__":
    main()
