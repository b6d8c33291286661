"""The retrieval benchmark: describe, index, search every query, score it as trec_eval would.

Two protocols share one driver:
- index/queries (CIFAR-10, DESIGN.md section 5): the index images are searched with a separate
  set of queries; an extractor that needs fitting is fitted on the index images only;
- leave-one-out (any labelled folder): every image is a query against all the others, and is
  left out of its own results and of its own relevant set (R = its class size - 1).

A result is relevant when it shares the query's label, runs are ordered as trec_eval orders them,
and the metrics are computed in process (the CIFAR-10 qrels would be 50 million lines). Beside
run.txt, per_query.tsv and metrics.json a run folder gets near_duplicates.tsv (queries that are
near-copies of an index image, with the metrics recomputed without them) and examples/ (a seeded
sample of queries with thumbnails of their top results), so a report needs nothing else.
"""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cbir.collection import EXTRACTOR_DIR, read_manifest
from cbir.datasets import MIRROR_FOLDER, MIRROR_TARBALL, Dataset, load_cifar10, load_folder
from cbir.errors import CbirError, CollectionError
from cbir.evaluation import leave_one_out
from cbir.evaluation.backend_run import search_with_backend
from cbir.evaluation.examples import save_examples
from cbir.evaluation.metrics import (
    IPREC_RECALL_LEVELS,
    full_ranking_metrics,
    mean_metrics,
    per_query_metrics,
)
from cbir.evaluation.near_duplicates import DEFAULT_THRESHOLD, NearDuplicates, find_near_duplicates
from cbir.evaluation.trec import write_run
from cbir.features import DEFAULT_EXTRACTOR, Extractor, get_extractor, load_extractor
from cbir.index.embedded import ExactIndex
from cbir.pipeline import describe
from cbir.progress import progress_bar
from cbir.storage import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

MAP_ALL_CHUNK = 256  # queries per score matrix: 256 x 50,000 float32 = 51 MB
DEFAULT_INPUT_SIZE = (32, 32)  # for extractors that take any size (a batch shares one)
N_EXAMPLES = 10
PROTOCOL_SPLIT = "index/queries"
PROTOCOL_LEAVE_ONE_OUT = "leave-one-out"
_TREC_UNSAFE = re.compile(r"[\s%]")  # whitespace breaks a TREC line; % is our escape


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
    *,
    leave_one_out_queries: bool = False,
    fitted_on: str | None = None,
    near_duplicate_threshold: float | None = DEFAULT_THRESHOLD,
    n_examples: int = N_EXAMPLES,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    backend: tuple[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the whole protocol and write the run folder `out_dir`; returns metrics.json's content.

    `leave_one_out_queries`: `queries` is `index_set` and each image is left out of its own
    ranking. `fitted_on`: the extractor arrives fitted (say where, for metrics.json) and is not
    fitted again. `near_duplicate_threshold`: None skips the near-duplicate check. `extra` is
    merged into metrics.json. `backend` (name, settings): the top-k run comes from that backend,
    measured against the exact embedded index (see `backend_run`).
    """
    if not index_set.labelled or not queries.labelled:
        raise CbirError("a benchmark needs labelled images (one subfolder per class)")
    if leave_one_out_queries and queries is not index_set:
        raise ValueError("a leave-one-out run searches the index images themselves")
    if depth < 1:
        raise CbirError(f"the depth must be at least 1, got {depth}")
    timer = timer or Timer()
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exclude = queries.ids if leave_one_out_queries else None
    n_relevant = _count_relevant(index_set.labels, queries.labels) - int(leave_one_out_queries)
    if not (n_relevant > 0).any():
        raise CbirError(
            "no query has another image of its class, so there is nothing to measure; "
            "every class needs at least two images"
        )

    with timer.section("fit_s"):  # 0 for extractors that learn nothing
        fit_note = _fit(extractor, index_set, leave_one_out_queries, fitted_on)
    with timer.section("extract_s"):
        # Class fusion: index vectors carry the TRUE class, queries only the predicted one, so
        # leave-one-out queries must be described apart (else their own labels leak in).
        fused = getattr(extractor, "uses_index_labels", False)
        if fused:
            index_vectors = extractor.transform_index(index_set.images, index_set.labels)
        else:
            index_vectors = describe(extractor, index_set.images, label="index")
        if leave_one_out_queries and not fused and not extractor.distinct_queries:
            query_vectors = index_vectors
        else:  # timed apart too: queries may take another route (`transform_query`)
            with timer.section("extract_queries_s"):
                query_vectors = describe(extractor, queries.images, label="queries", queries=True)
    with timer.section("index_s"):
        index = ExactIndex(dim=extractor.dim, metric="cosine")
        index.add(index_set.ids, index_vectors)
    with timer.section("search_s"):
        ranked_ids, scores = leave_one_out.search(index, query_vectors, depth, exclude)
    label_of = dict(zip(index_set.ids, index_set.labels.tolist(), strict=True))
    if backend is not None:
        exact_ids = ranked_ids
        ranked_ids, scores, backend_note = search_with_backend(
            *backend, index_set.ids, index_vectors, query_vectors, depth, exclude, exact_ids,
            timer.timings,
        )  # fmt: skip
        # the exact embedded run scored too, so the two sit side by side in metrics.json
        exact_relevance, exact_retrieved = _relevance_matrix(
            exact_ids, queries.labels, label_of, depth
        )
        exact = per_query_metrics(exact_relevance, n_relevant, depth, n_retrieved=exact_retrieved)
        backend_note["embedded"] = mean_metrics(exact, n_relevant)
        extra = {**(extra or {}), "backend": backend_note}

    with timer.section("evaluate_s"):
        relevance, n_retrieved = _relevance_matrix(ranked_ids, queries.labels, label_of, depth)
        per_query = per_query_metrics(relevance, n_relevant, depth, n_retrieved=n_retrieved)
    interpolated = None
    if with_map_all:
        with timer.section("map_all_s"):
            per_query["map_all"], interpolated = _full_ranking(
                index, index_set, queries, query_vectors, leave_one_out_queries
            )
    near = None
    if near_duplicate_threshold is not None:
        with timer.section("near_duplicates_s"):
            near = find_near_duplicates(
                queries.images, index_set.images, index_set.ids,
                threshold=near_duplicate_threshold, query_ids=exclude,
            )  # fmt: skip
    with timer.section("write_s"):
        tag = getattr(extractor, "run_tag", extractor.name)  # e.g. cnn+class_fusion
        write_run(out_dir / "run.txt", queries.ids, ranked_ids, scores, tag=tag)
        _write_per_query(out_dir / "per_query.tsv", queries, n_relevant, per_query, near)
        if near is not None:
            _write_near_duplicates(out_dir / "near_duplicates.tsv", queries, index_set, near)
        else:  # an earlier run's list would contradict this run's metrics.json
            (out_dir / "near_duplicates.tsv").unlink(missing_ok=True)
    with timer.section("examples_s"):
        n_saved = save_examples(
            out_dir, queries, index_set, ranked_ids, scores, n_relevant,
            near.flagged if near is not None else None, n=n_examples, seed=seed,
        )  # fmt: skip
    timer.timings["total_s"] = time.perf_counter() - started + timer.timings.get("load_s", 0.0)

    everyone = np.ones(len(queries), dtype=bool)
    metrics = {
        **_summary(per_query, interpolated, n_relevant, everyone),
        "n_queries": len(queries),
        "n_index": len(index_set),
        # trec_eval leaves out queries absent from the qrels; here, those with R = 0.
        "n_queries_without_relevant": int((n_relevant == 0).sum()),
        "depth": depth,
        # trec_eval's map_cut_k divides by R, so it cannot exceed k / R (0.02 on CIFAR-10).
        "map_cut_ceiling": _map_cut_ceiling(n_relevant, depth),
        "dataset": dataset_name,
        "protocol": PROTOCOL_LEAVE_ONE_OUT if leave_one_out_queries else PROTOCOL_SPLIT,
        "extractor": extractor.describe(),
        "extractor_fit": fit_note,
        "n_examples": n_saved,  # example queries saved under examples/
        **(extra or {}),
        "timings": {name: round(value, 3) for name, value in timer.timings.items()},
    }
    if near is not None:
        metrics["near_duplicates"] = near.describe()
        keep = ~near.flagged
        if (n_relevant[keep] > 0).any():
            metrics["without_near_duplicates"] = {
                **_summary(per_query, interpolated, n_relevant, keep),
                "map_cut_ceiling": _map_cut_ceiling(n_relevant[keep], depth),
            }
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


def _fit(
    extractor: Extractor, index_set: Dataset, leave_one_out_queries: bool, fitted_on: str | None
) -> str:
    """Fit when needed; returns how the extractor was fitted, in words, for metrics.json."""
    if fitted_on is not None:
        return fitted_on
    if not extractor.needs_fit:
        return "not needed"
    extractor.fit(index_set.images, index_set.labels)  # never the queries of a split
    if leave_one_out_queries:
        return (
            f"fitted on the benchmark folder itself ({len(index_set):,} images, labels "
            "included): every query took part in fitting; --collection uses one fitted elsewhere"
        )
    return f"fitted on the {len(index_set):,} index images only"


def _summary(
    per_query: dict[str, np.ndarray],
    interpolated: np.ndarray | None,
    n_relevant: np.ndarray,
    keep: np.ndarray,
) -> dict[str, Any]:
    """Means over the kept queries with R > 0, the precision-recall curve among them."""
    summary: dict[str, Any] = mean_metrics(
        {name: values[keep] for name, values in per_query.items()}, n_relevant[keep]
    )
    if interpolated is not None:
        evaluated = keep & (n_relevant > 0)
        summary["iprec_at_recall"] = {
            "ranking": "full",  # every index image, as for map_all: recall reaches 1
            "recall": list(IPREC_RECALL_LEVELS),
            "precision": interpolated[evaluated].mean(axis=0).tolist(),
        }
    return summary


def _map_cut_ceiling(n_relevant: np.ndarray, depth: int) -> float:
    evaluated = n_relevant[n_relevant > 0]
    return float(np.mean(np.minimum(evaluated, depth) / evaluated))


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
    position = {image_id: i for i, image_id in enumerate(index.ids)}
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


def _write_per_query(
    path: Path,
    queries: Dataset,
    n_relevant: np.ndarray,
    per_query: dict[str, np.ndarray],
    near: NearDuplicates | None,
) -> None:
    """One row per query, like `trec_eval -q`, as a table that spreadsheets open; the last
    column flags near-duplicate queries (1) when that check ran."""
    names = list(per_query)
    flags = ["near_duplicate"] if near is not None else []
    lines = ["\t".join(["query_id", "label", "n_relevant", *names, *flags])]
    label_names = queries.label_names()
    columns = [per_query[name] for name in names]
    for row, query_id in enumerate(queries.ids):
        values = [f"{column[row]:.10g}" for column in columns]
        values += [str(int(near.flagged[row]))] if near is not None else []
        lines.append("\t".join([query_id, str(label_names[row]), str(n_relevant[row]), *values]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _write_near_duplicates(
    path: Path, queries: Dataset, index_set: Dataset, near: NearDuplicates
) -> None:
    """The flagged queries, most similar first, with their nearest index image."""
    label_of = dict(zip(index_set.ids, index_set.label_names(), strict=True))
    query_labels = queries.label_names()
    lines = ["query_id\tquery_label\tnearest_id\tnearest_label\tcosine"]
    for row in sorted(np.flatnonzero(near.flagged), key=lambda r: -near.similarity[r]):
        nearest = near.nearest[row]
        lines.append(
            f"{queries.ids[row]}\t{query_labels[row]}\t{nearest}\t{label_of[nearest]}\t"
            f"{near.similarity[row]:.6f}"
        )
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
    **options: Any,
) -> dict[str, Any]:
    """50,000 training images indexed, 10,000 test images as queries. `options` go to
    `run_benchmark` (near_duplicate_threshold, n_examples, seed)."""
    timer = Timer()
    extractor = get_extractor(extractor_name, **(extractor_params or {}))
    with timer.section("load_s"), progress_bar(60_000, "load CIFAR-10") as bar:
        data = load_cifar10(data_dir, download=download, progress=bar.update)
    return run_benchmark(
        data.train, data.test, extractor, out_dir, depth=depth,
        dataset_name=dataset_label(data.source), with_map_all=with_map_all, timer=timer,
        **options,
    )  # fmt: skip


def run_folder_benchmark(
    folder: str | Path,
    out_dir: Path,
    extractor_name: str | None = None,
    extractor_params: dict[str, Any] | None = None,
    collection: str | Path | None = None,
    depth: int = 100,
    with_map_all: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Leave-one-out over a labelled folder (one subfolder per class): every image a query
    against all the others. Images at the top level (no class) and unreadable files are left
    out and counted in metrics.json under `skipped`. The extractor comes from `extractor_name`
    (fitted on the folder itself when it needs fitting) or from a `collection`'s saved state.
    `options` go to `run_benchmark` (near_duplicate_threshold, n_examples, seed)."""
    timer = Timer()
    extractor, fitted_on = _folder_extractor(extractor_name, extractor_params, collection)
    with timer.section("load_s"), progress_bar(None, "load folder") as bar:
        data = load_folder(folder, extractor.input_size or DEFAULT_INPUT_SIZE, bar.update)
    labelled = data.labels >= 0
    if not labelled.any():
        raise CbirError(
            f"{folder} has no class subfolders: a benchmark needs one subfolder per class"
        )
    if not labelled.all():
        log.warning("leaving out %d images outside any class subfolder", (~labelled).sum())
    images = _subset(data, labelled)
    extra = {
        "source": str(Path(folder).resolve()),
        "skipped": {"unlabelled": int((~labelled).sum()), "unreadable": len(data.failures)},
    }
    return run_benchmark(
        images, images, extractor, out_dir, depth=depth,
        dataset_name=f"folder {Path(folder).resolve().name}", with_map_all=with_map_all,
        timer=timer, leave_one_out_queries=True, fitted_on=fitted_on, extra=extra, **options,
    )  # fmt: skip


def _folder_extractor(
    name: str | None, params: dict[str, Any] | None, collection: str | Path | None
) -> tuple[Extractor, str | None]:
    """The extractor, and where it was fitted when it comes from a collection."""
    if collection is None:
        return get_extractor(name or DEFAULT_EXTRACTOR, **(params or {})), None
    if params:
        raise CbirError("extractor parameters come from the collection; drop --param")
    read_manifest(Path(collection))  # a clear error when it is not a collection
    try:
        extractor = load_extractor(Path(collection) / EXTRACTOR_DIR)
    except (OSError, ValueError, KeyError) as error:
        raise CollectionError(f"cannot load the extractor of {collection}: {error}") from None
    if name and name != extractor.name:
        raise CbirError(f"{collection} was built with extractor {extractor.name!r}, not {name!r}")
    return extractor, f"loaded from collection {Path(collection).resolve()} (not refitted)"


def _subset(data: Dataset, keep: np.ndarray) -> Dataset:
    """The kept images, with ids made safe for TREC files: whitespace and % percent-encoded
    (a file named 'my cat.jpg' becomes 'my%20cat.jpg'; distinct ids stay distinct)."""
    rows = np.flatnonzero(keep).tolist()
    ids = [_TREC_UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", data.ids[i]) for i in rows]
    paths = [data.paths[i] for i in rows] if data.paths else None
    return replace(data, ids=ids, images=data.images[rows], labels=data.labels[rows], paths=paths)
