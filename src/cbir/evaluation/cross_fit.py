"""How a benchmark fits its extractor, so that no query's label ever helps rank it.

- An extractor that learns nothing: one collection, nothing to fit.
- Index images apart from the queries (CIFAR-10's split, a folder with --queries): fitted on
  the index images, as `cbir index` fits a new collection.
- Leave-one-out (each image of a folder queries the others) with an extractor that learns
  from labels: cross-fitted. The queries are split into k folds stratified by class; each fold
  gets its own collection, fitted on the other folds, and answers only its own fold's
  queries, so no query's label took part in the model that describes it.
- Leave-one-out with an extractor that learns without labels (PCA): fitted on every image;
  no label is used, the run says so.
- An extractor that arrives fitted (from a collection, or --fit-on DIR): used as it is, and
  refused when any query is among the images it learnt labels from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbir.datasets import Dataset
from cbir.errors import CbirError
from cbir.features import Extractor
from cbir.fitting import fit_extractor

DEFAULT_FOLDS = 5


@dataclass
class Part:
    """One collection of a benchmark: its extractor and the query rows it answers."""

    extractor: Extractor
    rows: np.ndarray


@dataclass
class FitNote:
    text: str  # for the console, metrics.json and the report
    supervised: bool  # the extractor learnt from class labels


def plan_fitting(
    extractor: Extractor,
    index_set: Dataset,
    queries: Dataset,
    leave_one_out: bool,
    fitted_on: str | None,
    folds: int,
    seed: int,
    dataset_name: str,
) -> tuple[list[Part], FitNote]:
    """The benchmark's collections, their extractors fitted as the module docstring says."""
    everyone = np.arange(len(queries))
    supervised = extractor.fit_uses_labels
    if fitted_on is not None or extractor.fit_record_ is not None:
        refuse_leaks(extractor, queries)
        text = fitted_on or extractor.fit_record_.describe()
        return [Part(extractor, everyone)], FitNote(_say_supervised(text, supervised), supervised)
    if not extractor.needs_fit:
        return [Part(extractor, everyone)], FitNote("not needed", False)
    name = dataset_name or "the benchmark"
    if not leave_one_out:
        fitted = fit_extractor(extractor, index_set, f"the index images of {name}")
        refuse_leaks(fitted, queries)  # a query that is also an index image
        return [Part(fitted, everyone)], FitNote(fitted.fit_record_.describe(), supervised)
    if not supervised:
        fitted = fit_extractor(extractor, index_set, f"{name}, queries included")
        text = f"{fitted.fit_record_.describe()} (no label used)"
        return [Part(fitted, everyone)], FitNote(text, False)
    assignment = stratified_folds(index_set.labels, folds, seed)
    n_folds = int(assignment.max()) + 1
    if n_folds < 2:
        raise CbirError("cross-fitting needs at least two folds (--folds 2 or more)")
    parts = []
    for fold in range(n_folds):
        others = index_set.take(np.flatnonzero(assignment != fold))
        unfitted = extractor.clone()
        source = f"{name} without fold {fold + 1} of {n_folds}"
        parts.append(
            Part(fit_extractor(unfitted, others, source), np.flatnonzero(assignment == fold))
        )
    per_model = len(queries) * (n_folds - 1) // n_folds
    text = (
        f"supervised, cross-fitted in {n_folds} folds: each query was described by a model "
        f"fitted on the other {n_folds - 1} folds of {name} (~{per_model:,} images)"
    )
    return parts, FitNote(text, True)


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """(N,) fold number of each image: every class spread evenly over `folds` folds (fewer
    when there are fewer images), in a seeded order."""
    if folds < 2:
        raise CbirError(f"--folds must be at least 2, got {folds}")
    folds = min(folds, len(labels))
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    offset = 0  # where the next class starts dealing, so fold sizes stay even
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        assignment[rows] = (offset + np.arange(len(rows))) % folds
        offset += len(rows)
    return assignment


def refuse_leaks(extractor: Extractor, queries: Dataset) -> None:
    """A CbirError when a query is among the images a label-using extractor was fitted on:
    its own label would help rank it, and the figures would flatter it."""
    record = extractor.fit_record_
    if not extractor.fit_uses_labels or record is None:
        return
    leaked = int(record.overlap(queries.images).sum())
    if leaked:
        raise CbirError(
            f"{leaked:,} of the {len(queries):,} queries took part in fitting extractor "
            f"{extractor.name!r} ({record.describe()}): their own labels would rank them. "
            "Fit it on other images (--fit-on DIR), or let the benchmark cross-fit it"
        )


def _say_supervised(text: str, supervised: bool) -> str:
    if supervised and not text.startswith("supervised"):
        return f"supervised, {text}"
    return text
