"""The retrieval benchmark: describe, index, search every query, score it as trec_eval would.

Protocol (DESIGN.md section 5): the extractor is fitted on the index images only, a result is
relevant when it shares the query's label, runs are ordered as trec_eval orders them, and the
metrics are computed in process (the CIFAR-10 qrels would be 50 million lines).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cbir.datasets import MIRROR_FOLDER, MIRROR_TARBALL, Dataset, load_cifar10
from cbir.errors import CbirError
from cbir.evaluation.metrics import average_precision_full, mean_metrics, per_query_metrics
from cbir.evaluation.trec import write_run
from cbir.features import Extractor, get_extractor
from cbir.index.embedded import ExactIndex
from cbir.pipeline import describe
from cbir.progress import progress_bar
from cbir.storage import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

MAP_ALL_CHUNK = 256  # queries per score matrix: 256 x 50,000 float32 = 51 MB


@dataclass
class Timer:
    timings: dict[str, float] = field(default_factory=dict)

    def section(self, name: str) -> _Section:
        return _Section(self, name)


class _Section:
    def __init__(self, timer: Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc_info) -> None:
        elapsed = time.perf_counter() - self.start
        self.timer.timings[self.name] = self.timer.timings.get(self.name, 0.0) + elapsed


def run_benchmark(
    index_set: Dataset,
    queries: Dataset,
    extractor: Extractor,
    out_dir: Path,
    depth: int = 100,
    dataset_name: str = "",
    with_map_all: bool = True,
    timer: Timer | None = None,
) -> dict[str, Any]:
    """Run the whole protocol and write run.txt, per_query.tsv and metrics.json to `out_dir`."""
    if not index_set.labelled or not queries.labelled:
        raise CbirError("a benchmark needs labelled images (one subfolder per class)")
    timer = timer or Timer()
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    with timer.section("extract_s"):
        if extractor.needs_fit:
            extractor.fit(index_set.images, index_set.labels)  # index images only, never queries
        index_vectors = describe(extractor, index_set.images, label="index")
        query_vectors = describe(extractor, queries.images, label="queries")
    with timer.section("index_s"):
        index = ExactIndex(dim=extractor.dim, metric="cosine")
        index.add(index_set.ids, index_vectors)
    with timer.section("search_s"):
        ranked_ids, scores = index.search(query_vectors, depth)

    label_of = dict(zip(index_set.ids, index_set.labels.tolist(), strict=True))
    n_relevant = _count_relevant(index_set.labels, queries.labels)
    with timer.section("evaluate_s"):
        relevance, n_retrieved = _relevance_matrix(ranked_ids, queries.labels, label_of, depth)
        per_query = per_query_metrics(relevance, n_relevant, depth, n_retrieved=n_retrieved)
        summary = mean_metrics(per_query, n_relevant)
    if with_map_all:
        with timer.section("map_all_s"):
            per_query["map_all"] = _map_all(index, index_set, queries, query_vectors)
        summary["map_all"] = float(per_query["map_all"][n_relevant > 0].mean())
    with timer.section("write_s"):
        write_run(out_dir / "run.txt", queries.ids, ranked_ids, scores, tag=extractor.name)
        _write_per_query(out_dir / "per_query.tsv", queries, n_relevant, per_query)
    timer.timings["total_s"] = time.perf_counter() - started + timer.timings.get("load_s", 0.0)

    metrics = {
        **summary,
        "n_queries": len(queries),
        "n_index": len(index_set),
        "depth": depth,
        # trec_eval's map_cut_k divides by R, so it cannot exceed k / R (0.02 on CIFAR-10).
        "map_cut_ceiling": float(
            np.mean(np.minimum(n_relevant, depth) / np.maximum(n_relevant, 1))
        ),
        "dataset": dataset_name,
        "extractor": extractor.describe(),
        "timings": {name: round(value, 3) for name, value in timer.timings.items()},
    }
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


def _count_relevant(index_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    per_label = np.bincount(index_labels, minlength=int(query_labels.max()) + 1)
    return per_label[query_labels].astype(np.int64)


def _relevance_matrix(
    ranked_ids: list[list[str]], query_labels: np.ndarray, label_of: dict[str, int], depth: int
) -> tuple[np.ndarray, np.ndarray]:
    retrieved_labels = np.full((len(ranked_ids), depth), -1, dtype=np.int64)
    n_retrieved = np.zeros(len(ranked_ids), dtype=np.int64)
    for row, ids in enumerate(ranked_ids):
        retrieved_labels[row, : len(ids)] = [label_of[i] for i in ids]
        n_retrieved[row] = len(ids)
    return retrieved_labels == query_labels[:, None], n_retrieved


def _map_all(
    index: ExactIndex, index_set: Dataset, queries: Dataset, query_vectors: np.ndarray
) -> np.ndarray:
    """Average precision over the full ranking of the whole index, chunk by chunk."""
    position = {image_id: i for i, image_id in enumerate(index.ids)}
    stored_labels = np.empty_like(index_set.labels)
    stored_labels[[position[i] for i in index_set.ids]] = index_set.labels
    tiebreak = index.tiebreak_rank
    out = np.zeros(len(queries), dtype=np.float64)
    starts = range(0, len(queries), MAP_ALL_CHUNK)

    def one_chunk(start: int) -> int:
        stop = start + MAP_ALL_CHUNK
        scores = index.scores(query_vectors[start:stop])
        relevant = stored_labels[None, :] == queries.labels[start:stop, None]
        out[start:stop] = average_precision_full(scores, relevant, tiebreak)
        return len(scores)

    with progress_bar(len(queries), "map_all", unit="q") as bar, ThreadPoolExecutor(2) as pool:
        for done in pool.map(one_chunk, starts):
            bar.update(done)
    return out


def _write_per_query(
    path: Path, queries: Dataset, n_relevant: np.ndarray, per_query: dict[str, np.ndarray]
) -> None:
    """One row per query, like `trec_eval -q`, as a table that spreadsheets open."""
    names = list(per_query)
    lines = ["\t".join(["query_id", "label", "n_relevant", *names])]
    label_names = queries.label_names()
    columns = [per_query[name] for name in names]
    for row, query_id in enumerate(queries.ids):
        values = [f"{column[row]:.10g}" for column in columns]
        lines.append("\t".join([query_id, str(label_names[row]), str(n_relevant[row]), *values]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def dataset_label(source: str) -> str:
    name = Path(source).name
    if name in (MIRROR_TARBALL, MIRROR_FOLDER):
        return "CIFAR-10 (JPEG mirror)"
    return "CIFAR-10 (official)"


def run_cifar10_benchmark(
    extractor_name: str,
    out_dir: Path,
    data_dir: str | Path | None = None,
    depth: int = 100,
    extractor_params: dict[str, Any] | None = None,
    with_map_all: bool = True,
    download: bool = True,
) -> dict[str, Any]:
    """50,000 training images indexed, 10,000 test images as queries."""
    timer = Timer()
    extractor = get_extractor(extractor_name, **(extractor_params or {}))
    with timer.section("load_s"), progress_bar(60_000, "load CIFAR-10") as bar:
        data = load_cifar10(data_dir, download=download, progress=bar.update)
    return run_benchmark(
        data.train, data.test, extractor, out_dir, depth=depth,
        dataset_name=dataset_label(data.source), with_map_all=with_map_all, timer=timer,
    )  # fmt: skip
