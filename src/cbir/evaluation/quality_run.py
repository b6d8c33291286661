"""A retrieval-quality run, what `cbir benchmark` does: describe, index, search every query,
score it as trec_eval would. (Named for what it measures, apart from `cbir.speed`, the speed
measurements behind `cbir bench`, and from the scripts under benchmarks/.)

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
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cbir.batch_search import trec_id
from cbir.datasets import MIRROR_FOLDER, MIRROR_TARBALL, Dataset, load_cifar10, load_folder
from cbir.errors import CbirError
from cbir.evaluation.collection_run import search_parts
from cbir.evaluation.cross_fit import DEFAULT_FOLDS, plan_fitting
from cbir.evaluation.examples import save_examples
from cbir.evaluation.metrics import IPREC_RECALL_LEVELS, mean_metrics, per_query_metrics
from cbir.evaluation.near_duplicates import DEFAULT_THRESHOLD, NearDuplicates, find_near_duplicates
from cbir.evaluation.trec import write_run
from cbir.features import DEFAULT_EXTRACTOR, Extractor, get_extractor
from cbir.fitting import fit_extractor, load_fit_images
from cbir.manifest import load_collection_extractor, read_manifest
from cbir.pipeline import DEFAULT_SIZE, settle_input_size
from cbir.progress import progress_bar
from cbir.storage import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

N_EXAMPLES = 10
PROTOCOL_SPLIT = "index/queries"
PROTOCOL_LEAVE_ONE_OUT = "leave-one-out"


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


@dataclass(frozen=True)
class BenchmarkOptions:
    """How a run measures and what it keeps, the same on every dataset (`cbir benchmark`'s
    common options; commands/benchmark.py builds it from them)."""

    depth: int = 100  # results per query
    with_map_all: bool = True  # map_all and the precision-recall curve: a full ranking per query
    near_duplicate_threshold: float | None = DEFAULT_THRESHOLD  # cosine; None skips the check
    n_examples: int = N_EXAMPLES  # example queries saved with thumbnails under examples/
    seed: int = 0  # of the example sample and of the cross-fitting folds
    folds: int = DEFAULT_FOLDS  # cross-fitting, for an extractor that learns from labels
    collection_dir: Path | None = None  # keep the collection(s) built here (else temporary)
    # (name, settings): the top-k run comes from that backend, measured against the exact
    # embedded index (see `backend_run`)
    backend: tuple[str, dict[str, Any]] | None = None


def run_benchmark(
    index_set: Dataset,
    queries: Dataset,
    extractor: Extractor,
    out_dir: Path,
    options: BenchmarkOptions | None = None,
    *,
    dataset_name: str = "",
    timer: Timer | None = None,
    leave_one_out_queries: bool = False,
    fitted_on: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the whole protocol through the product and write the run folder `out_dir`;
    returns metrics.json's content.

    The index images go into a real collection (fitted as `cbir index` fits, indexed by the
    same pipeline; temporary, or kept in `options.collection_dir`) and every query is searched
    through the collection as `cbir search` and `cbir serve` search it.

    `leave_one_out_queries`: `queries` is `index_set` and each image is left out of its own
    ranking; an extractor that learns from labels is then cross-fitted (`options.folds`
    collections,
    each fitted without the queries it answers). `fitted_on`: the extractor arrives fitted
    (say where, for metrics.json) and is not fitted again; a run whose queries took part in
    fitting a label-using extractor is refused. `extra` is merged into metrics.json.
    """
    options = options or BenchmarkOptions()
    depth = options.depth
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
        parts, fit = plan_fitting(
            extractor, index_set, queries, leave_one_out_queries, fitted_on, options.folds,
            options.seed, dataset_name,
        )  # fmt: skip
    if options.backend is not None and len(parts) > 1:
        raise CbirError("--backend compares one collection; it cannot run a cross-fitted benchmark")
    found = search_parts(
        parts, index_set, queries, depth, leave_one_out_queries, options.collection_dir, timer,
        options.with_map_all, options.backend,
    )  # fmt: skip
    ranked_ids, scores = found.ranked_ids, found.scores
    label_of = dict(zip(index_set.ids, index_set.labels.tolist(), strict=True))
    if found.backend is not None:
        exact_ids = ranked_ids
        ranked_ids, scores, backend_note = found.backend
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
    if options.with_map_all:
        per_query["map_all"], interpolated = found.average_precision, found.interpolated
    near = None
    if options.near_duplicate_threshold is not None:
        with timer.section("near_duplicates_s"):
            near = find_near_duplicates(
                queries.images, index_set.images, index_set.ids,
                threshold=options.near_duplicate_threshold, query_ids=exclude,
            )  # fmt: skip
    with timer.section("write_s"):
        # ids are TREC-safe already (see `_subset`), and ranked in trec_eval's order
        write_run(out_dir / "run.txt", queries.ids, ranked_ids, scores, tag=extractor.run_tag)
        _write_per_query(out_dir / "per_query.tsv", queries, n_relevant, per_query, near)
        if near is not None:
            _write_near_duplicates(out_dir / "near_duplicates.tsv", queries, index_set, near)
        else:  # an earlier run's list would contradict this run's metrics.json
            (out_dir / "near_duplicates.tsv").unlink(missing_ok=True)
    with timer.section("examples_s"):
        n_saved = save_examples(
            out_dir, queries, index_set, ranked_ids, scores, n_relevant,
            near.flagged if near is not None else None, n=options.n_examples, seed=options.seed,
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
        "extractor": parts[0].extractor.describe(),
        "extractor_fit": fit.text,
        "supervised": fit.supervised,
        "n_examples": n_saved,  # example queries saved under examples/
        **({"collection": str(Path(kept).resolve())} if (kept := options.collection_dir) else {}),
        **(extra or {}),
        "timings": {name: round(value, 3) for name, value in timer.timings.items()},
    }
    if len(parts) > 1:
        metrics["folds"] = len(parts)
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
    extractor_params: dict[str, Any] | None = None,
    download: bool = True,
    *,
    options: BenchmarkOptions | None = None,
) -> dict[str, Any]:
    """50,000 training images indexed, 10,000 test images as queries."""
    timer = Timer()
    extractor = get_extractor(extractor_name, **(extractor_params or {}))
    with timer.section("load_s"), progress_bar(60_000, "load CIFAR-10") as bar:
        data = load_cifar10(data_dir, download=download, progress=bar.update)
    settle_input_size(extractor, data.train.images)  # 32x32: an auto size stays 32x32
    return run_benchmark(
        data.train, data.test, extractor, out_dir, options,
        dataset_name=dataset_label(data.source), timer=timer,
    )  # fmt: skip


def run_folder_benchmark(
    folder: str | Path,
    out_dir: Path,
    extractor_name: str | None = None,
    extractor_params: dict[str, Any] | None = None,
    extractor_from: str | Path | None = None,
    *,
    options: BenchmarkOptions | None = None,
    queries_folder: str | Path | None = None,
    fit_on: str | Path | None = None,
) -> dict[str, Any]:
    """A labelled folder (one subfolder per class). Leave-one-out by default: every image a
    query against all the others; with `queries_folder`, the folder is indexed and that
    folder's images are the queries. Images at the top level (no class) and unreadable files
    are left out and counted in metrics.json under `skipped`.

    The extractor comes from `extractor_name` or from a collection (`extractor_from`, its
    saved, fitted state); one that learns is fitted on `fit_on` when given, else as
    `cross_fit` says."""
    timer = Timer()
    extractor, fitted_on = _folder_extractor(extractor_name, extractor_params, extractor_from)
    settle_input_size(extractor, Path(folder))  # before fitting or decoding anything
    if fit_on is not None:
        if fitted_on is not None:
            raise CbirError("--fit-on fits a new extractor; --extractor-from brings a fitted one")
        if extractor.needs_fit:
            with timer.section("fit_s"):
                data, source = load_fit_images(fit_on, extractor)
                extractor = fit_extractor(extractor, data, source)
    with timer.section("load_s"):
        images, skipped = _labelled_folder(folder, extractor)
        queries = images
        if queries_folder is not None:
            queries, skipped_queries = _labelled_folder(queries_folder, extractor)
            skipped = {"index": skipped, "queries": skipped_queries}
    extra = {"source": str(Path(folder).resolve()), "skipped": skipped}
    if queries_folder is not None:
        extra["queries_source"] = str(Path(queries_folder).resolve())
    return run_benchmark(
        images, queries, extractor, out_dir, options,
        dataset_name=f"folder {Path(folder).resolve().name}", timer=timer,
        leave_one_out_queries=queries_folder is None, fitted_on=fitted_on, extra=extra,
    )  # fmt: skip


def _labelled_folder(folder: str | Path, extractor: Extractor) -> tuple[Dataset, dict[str, int]]:
    """The labelled images of a folder, decoded at the extractor's size, with TREC-safe ids;
    and how many were left out."""
    with progress_bar(None, f"load {Path(folder).name}") as bar:
        data = load_folder(folder, extractor.input_size or DEFAULT_SIZE, bar.update)
    labelled = data.labels >= 0
    if not labelled.any():
        raise CbirError(
            f"{folder} has no class subfolders: a benchmark needs one subfolder per class"
        )
    if not labelled.all():
        log.warning("leaving out %d images outside any class subfolder", (~labelled).sum())
    skipped = {"unlabelled": int((~labelled).sum()), "unreadable": len(data.failures)}
    return _subset(data, labelled), skipped


def _folder_extractor(
    name: str | None, params: dict[str, Any] | None, collection: str | Path | None
) -> tuple[Extractor, str | None]:
    """The extractor, and where it was fitted when it comes from a collection."""
    if collection is None:
        return get_extractor(name or DEFAULT_EXTRACTOR, **(params or {})), None
    if params:
        raise CbirError("extractor parameters come from the collection; drop --param")
    # a clear error when it is not a collection, or its fitted state does not check out
    extractor = load_collection_extractor(Path(collection), read_manifest(Path(collection)))
    if name and name != extractor.name:
        raise CbirError(f"{collection} was built with extractor {extractor.name!r}, not {name!r}")
    where = f"loaded from collection {Path(collection).resolve()} (not refitted)"
    if extractor.fit_record_ is not None:
        where = f"{extractor.fit_record_.describe()}; {where}"
    return extractor, where


def _subset(data: Dataset, keep: np.ndarray) -> Dataset:
    """The kept images, with ids made safe for TREC files: whitespace and % percent-encoded
    (a file named 'my cat.jpg' becomes 'my%20cat.jpg'; distinct ids stay distinct)."""
    rows = np.flatnonzero(keep).tolist()
    ids = [trec_id(data.ids[i]) for i in rows]
    paths = [data.paths[i] for i in rows] if data.paths else None
    return replace(data, ids=ids, images=data.images[rows], labels=data.labels[rows], paths=paths)
