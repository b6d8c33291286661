"""A benchmark run folder read back: what a report compares.

    metrics.json            every benchmark writes it (the one required file)
    per_query.tsv           one row per query: query_id, label, n_relevant, measures, flags
    examples/examples.json  a sample of queries with thumbnails (see `examples.py`)
    classification.json     optional: classifier accuracies, written by classifier training
    vocabulary_sweep.json   optional: the visual-vocabulary size sweep

classification.json, one entry per (features, classifier) pair; accuracies and precision are
fractions in [0, 1], macro precision is the unweighted mean of the per-class precisions on the
test images, `params` the chosen hyper-parameters, `selection` how they were chosen:

    {"dataset": "CIFAR-10 (JPEG mirror)",
     "selection": "3-fold grid search on the training images",
     "results": [{"features": "hog+gch", "classifier": "linear_svm", "train_accuracy": 0.62,
                  "test_accuracy": 0.55, "test_macro_precision": 0.55, "params": {"C": 0.1}}]}

vocabulary_sweep.json, one entry per vocabulary size tried (k-means on local descriptors),
lower Davies-Bouldin is better:

    [{"size": 64, "davies_bouldin": 2.31, "inertia": 1.2e7}, ...]

`write_classification` and `write_vocabulary_sweep` write these files, validated the same way
they are read back, so a writer cannot produce a file the report refuses.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbir.errors import CbirError
from cbir.evaluation.examples import EXAMPLES_DIR, EXAMPLES_FILE
from cbir.storage import atomic_write_json

METRICS_FILE = "metrics.json"
PER_QUERY_FILE = "per_query.tsv"
CLASSIFICATION_FILE = "classification.json"
VOCABULARY_SWEEP_FILE = "vocabulary_sweep.json"
_FRACTIONS = ("train_accuracy", "test_accuracy", "test_macro_precision")
_THUMBNAIL = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*\.png")  # a plain name in examples/


@dataclass
class RunResult:
    """Everything a report reads from one run folder; optional parts are None when absent."""

    folder: Path
    metrics: dict[str, Any]
    per_query: dict[str, list[str]] | None  # column name -> values, as text
    examples: dict[str, Any] | None
    classification: dict[str, Any] | None
    vocabulary_sweep: list[dict[str, float]] | None

    @property
    def examples_dir(self) -> Path:
        return self.folder / EXAMPLES_DIR


def read_run_folder(folder: str | Path) -> RunResult:
    """Read a run folder; a missing or malformed file is a CbirError that names it."""
    folder = Path(folder)
    if not (folder / METRICS_FILE).is_file():
        raise CbirError(f"{folder} is not a benchmark run: it has no {METRICS_FILE}")
    metrics = _read_json(folder / METRICS_FILE)
    for key in ("dataset", "depth", "extractor", "n_queries", "n_index"):
        if key not in metrics:
            raise CbirError(f"{folder / METRICS_FILE} lacks {key!r}; rerun the benchmark")
    per_query = folder / PER_QUERY_FILE
    examples = folder / EXAMPLES_DIR / EXAMPLES_FILE
    classification = folder / CLASSIFICATION_FILE
    sweep = folder / VOCABULARY_SWEEP_FILE
    return RunResult(
        folder=folder,
        metrics=metrics,
        per_query=_read_tsv(per_query) if per_query.is_file() else None,
        examples=_check_examples(_read_json(examples), examples) if examples.is_file() else None,
        classification=read_classification(classification) if classification.is_file() else None,
        vocabulary_sweep=read_vocabulary_sweep(sweep) if sweep.is_file() else None,
    )


def write_classification(
    folder: str | Path,
    results: list[dict[str, Any]],
    dataset: str = "",
    selection: str = "",
) -> Path:
    """Write `classification.json` into a run folder (format in the module docstring)."""
    payload = {"dataset": dataset, "selection": selection, "results": results}
    path = Path(folder) / CLASSIFICATION_FILE
    _check_classification(payload, path)
    atomic_write_json(path, payload)
    return path


def read_classification(path: str | Path) -> dict[str, Any]:
    return _check_classification(_read_json(Path(path)), Path(path))


def write_vocabulary_sweep(folder: str | Path, rows: list[dict[str, float]]) -> Path:
    """Write `vocabulary_sweep.json` into a run folder (format in the module docstring)."""
    path = Path(folder) / VOCABULARY_SWEEP_FILE
    _check_vocabulary_sweep(rows, path)
    atomic_write_json(path, rows)
    return path


def read_vocabulary_sweep(path: str | Path) -> list[dict[str, float]]:
    return _check_vocabulary_sweep(_read_json(Path(path)), Path(path))


def _check_classification(payload: Any, path: Path) -> dict[str, Any]:
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, list):
        raise CbirError(f"{path}: expected an object with a 'results' list")
    for i, row in enumerate(results):
        where = f"{path}: results[{i}]"
        if not isinstance(row, dict):
            raise CbirError(f"{where} is not an object")
        for key in ("features", "classifier"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise CbirError(f"{where} needs a non-empty string {key!r}")
        for key in _FRACTIONS:
            if not _is_number(row.get(key)) or not 0.0 <= row[key] <= 1.0:
                raise CbirError(f"{where}: {key!r} must be a fraction in [0, 1]")
        if not isinstance(row.get("params", {}), dict):
            raise CbirError(f"{where}: 'params' must be an object")
    return payload


def _check_vocabulary_sweep(rows: Any, path: Path) -> list[dict[str, float]]:
    if not isinstance(rows, list) or not rows:
        raise CbirError(f"{path}: expected a non-empty list of {{size, davies_bouldin, inertia}}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not all(
            _is_number(row.get(key)) for key in ("size", "davies_bouldin", "inertia")
        ):
            raise CbirError(f"{path}: entry {i} needs numbers size, davies_bouldin, inertia")
    return sorted(rows, key=lambda row: row["size"])


def _check_examples(payload: Any, path: Path) -> dict[str, Any]:
    """The thumbnails a report copies must be plain names inside examples/: a run folder may
    come from someone else, and '../..' must not reach outside it."""
    queries = payload.get("queries") if isinstance(payload, dict) else None
    if not isinstance(queries, list):
        raise CbirError(f"{path}: expected an object with a 'queries' list")
    for query in queries:
        results = query.get("results") if isinstance(query, dict) else None
        if not isinstance(results, list):
            raise CbirError(f"{path}: every query needs a 'results' list")
        for item in [query, *results]:
            if not isinstance(item, dict) or not _THUMBNAIL.fullmatch(str(item.get("thumbnail"))):
                raise CbirError(f"{path}: thumbnails must be plain .png names inside examples/")
    return payload


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CbirError(f"{path} is unreadable: {error}") from None


def _read_tsv(path: Path) -> dict[str, list[str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CbirError(f"{path} is unreadable: {error}") from None
    if not lines:
        raise CbirError(f"{path} is empty")
    header = lines[0].split("\t")
    columns: dict[str, list[str]] = {name: [] for name in header}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise CbirError(f"{path}:{number}: {len(fields)} fields, the header has {len(header)}")
        for name, value in zip(header, fields, strict=True):
            columns[name].append(value)
    return columns


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
