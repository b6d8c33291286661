"""A benchmark's searches, through real collections.

Each part of a benchmark (one, or one per cross-fitting fold) is a collection made as
`cbir index` makes one: created with its fitted extractor, filled by the indexing pipeline
(index images described with their true labels where the method says so), then searched with
`batch_search.rank`, the collection's own search. A part answers only its own queries; the
full-ranking measures (map_all, the precision-recall curve) are read from the same index.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cbir.batch_search import rank
from cbir.collection import Collection
from cbir.datasets import Dataset
from cbir.errors import CbirError
from cbir.evaluation.backend_run import search_with_backend
from cbir.evaluation.cross_fit import Part
from cbir.evaluation.metrics import IPREC_RECALL_LEVELS, full_ranking_metrics
from cbir.index.embedded import ExactIndex
from cbir.pipeline import describe, index_dataset
from cbir.progress import progress_bar

MAP_ALL_CHUNK = 256  # queries per score matrix: 256 x 50,000 float32 = 51 MB


@dataclass
class Found:
    """Every query's ranking, gathered from the parts that answered them."""

    ranked_ids: list[list[str]]
    scores: np.ndarray
    average_precision: np.ndarray | None = None  # map_all per query
    interpolated: np.ndarray | None = None  # 11-point precision-recall per query
    backend: tuple[list[list[str]], np.ndarray, dict[str, Any]] | None = None


def search_parts(
    parts: list[Part],
    index_set: Dataset,
    queries: Dataset,
    depth: int,
    leave_one_out: bool,
    collection_dir: Path | None,
    timer: Any,
    with_map_all: bool,
    backend: tuple[str, dict[str, Any]] | None,
) -> Found:
    """Index `index_set` into each part's collection (kept under `collection_dir`, else
    temporary) and search each part's queries there."""
    ranked: list[list[str]] = [[] for _ in range(len(queries))]
    scores: np.ndarray | None = None
    average_precision = np.zeros(len(queries), dtype=np.float64)
    interpolated = np.zeros((len(queries), len(IPREC_RECALL_LEVELS)), dtype=np.float64)
    found_by_backend = None
    with _collections_root(collection_dir) as root:
        for number, part in enumerate(parts):
            folder = root if len(parts) == 1 else root / f"fold-{number + 1}"
            with Collection.create(folder, part.extractor) as collection:
                with timer.section("index_s"):  # describing included, and timed apart
                    report = index_dataset(
                        index_set, collection, store_images=collection_dir is not None
                    )
                timer.timings["extract_s"] = (
                    timer.timings.get("extract_s", 0.0) + report.describe_seconds
                )
                asked = queries.take(part.rows)
                exclude = asked.ids if leave_one_out else None
                with timer.section("extract_queries_s"):
                    vectors = query_vectors(collection, asked, leave_one_out)
                with timer.section("search_s"):
                    ids, part_scores = rank(collection, vectors, depth, exclude)
                if scores is None:
                    scores = np.zeros((len(queries), part_scores.shape[1]), dtype=np.float32)
                scores[part.rows] = part_scores
                for row, row_ids in zip(part.rows.tolist(), ids, strict=True):
                    ranked[row] = row_ids
                if with_map_all:
                    with timer.section("map_all_s"):
                        average_precision[part.rows], interpolated[part.rows] = _full_ranking(
                            collection.index, index_set, asked, vectors, leave_one_out
                        )
                if backend is not None:
                    index = collection.index
                    found_by_backend = search_with_backend(
                        *backend, index.ids(), index.vectors, vectors, depth, exclude, ranked,
                        timer.timings,
                    )  # fmt: skip
    assert scores is not None
    if not with_map_all:
        return Found(ranked, scores, backend=found_by_backend)
    return Found(ranked, scores, average_precision, interpolated, found_by_backend)


def query_vectors(collection: Collection, queries: Dataset, leave_one_out: bool) -> np.ndarray:
    """Query vectors as `cbir search` makes them (`transform_query`). A leave-one-out query
    is an indexed image: when its query vector is its index vector (no query-only route, no
    label in the index vector) the stored one serves, as "more like this" does."""
    extractor = collection.extractor
    if leave_one_out and not extractor.distinct_queries and not extractor.uses_index_labels:
        return collection.vectors_of(queries.ids)
    return describe(extractor, queries.images, label="queries", queries=True)


@contextmanager
def _collections_root(collection_dir: Path | None) -> Iterator[Path]:
    if collection_dir is not None:
        collection_dir = Path(collection_dir)
        if collection_dir.exists() and any(collection_dir.iterdir()):
            raise CbirError(
                f"{collection_dir} is not empty: --collection keeps the benchmark's collection "
                "in a new folder"
            )
        yield collection_dir
        return
    with tempfile.TemporaryDirectory(prefix="cbir-benchmark-") as tmp:
        yield Path(tmp) / "collection"


def _full_ranking(
    index: ExactIndex,
    index_set: Dataset,
    queries: Dataset,
    query_vectors: np.ndarray,
    exclude_self: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """map_all and the 11-point interpolated precision over the full ranking of the whole
    index, chunk by chunk; a leave-one-out query's own image is made non-relevant and scores
    -inf, which takes it out of both measures."""
    position = {image_id: i for i, image_id in enumerate(index.ids())}
    stored_labels = np.empty_like(index_set.labels)
    stored_labels[[position[i] for i in index_set.ids]] = index_set.labels
    own = np.array([position[i] for i in queries.ids]) if exclude_self else None
    tiebreak = index.tiebreak_rank
    average_precision = np.zeros(len(queries), dtype=np.float64)
    interpolated = np.zeros((len(queries), len(IPREC_RECALL_LEVELS)), dtype=np.float64)

    def one_chunk(start: int) -> int:
        stop = start + MAP_ALL_CHUNK
        scores = index.scores(query_vectors[start:stop])
        relevant = stored_labels[None, :] == queries.labels[start:stop, None]
        if own is not None:
            rows = np.arange(len(scores)), own[start:stop]
            scores[rows], relevant[rows] = -np.inf, False
        average_precision[start:stop], interpolated[start:stop] = full_ranking_metrics(
            scores, relevant, tiebreak
        )
        return len(scores)

    starts = range(0, len(queries), MAP_ALL_CHUNK)
    with progress_bar(len(queries), "map_all", unit="q") as bar, ThreadPoolExecutor(2) as pool:
        for done in pool.map(one_chunk, starts):
            bar.update(done)
    return average_precision, interpolated
