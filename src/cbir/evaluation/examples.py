"""Example queries: a fixed, seeded sample of queries with their top results, saved as small
thumbnails beside the run, so that a report can show them with no access to the images.

    examples/examples.json    {"seed", "k", "queries": [{"id", "label", "n_relevant",
                                "near_duplicate", "thumbnail", "results": [{"id", "label",
                                "score", "relevant", "thumbnail"}, ...]}, ...]}
    examples/q00.png          the first query's thumbnail; q00-r01.png .. its results in rank order

Thumbnail names are relative to `examples/`. The sample takes one query per class in turn (class
order shuffled by the seed), so a few examples already span the classes, and only queries with at
least one relevant image (R > 0).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cbir.datasets import Dataset
from cbir.errors import ImageDecodeError
from cbir.images import read_image_file
from cbir.storage import atomic_write_json

log = logging.getLogger(__name__)

EXAMPLES_DIR = "examples"
EXAMPLES_FILE = "examples.json"
THUMBNAIL_SIZE = 96  # longest side, pixels; smaller images (CIFAR-10's 32x32) stay as they are


def sample_queries(labels: np.ndarray, eligible: np.ndarray, n: int, seed: int) -> list[int]:
    """Up to `n` query positions among `eligible` ones: the classes in a seeded random order,
    one seeded-random query of each in turn, until `n` are taken."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels[eligible]))
    queues = [rng.permutation(np.flatnonzero(eligible & (labels == c))).tolist() for c in classes]
    chosen: list[int] = []
    while len(chosen) < n and any(queues):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop())
    return chosen


def save_examples(
    out_dir: Path,
    queries: Dataset,
    index_set: Dataset,
    ranked_ids: Sequence[Sequence[str]],
    scores: np.ndarray,
    n_relevant: np.ndarray,
    near_duplicate: np.ndarray | None = None,
    n: int = 10,
    k: int = 10,
    seed: int = 0,
) -> int:
    """Write `examples/` into `out_dir` (replacing an earlier one); returns how many queries."""
    folder = Path(out_dir) / EXAMPLES_DIR
    shutil.rmtree(folder, ignore_errors=True)
    if n <= 0:
        return 0
    folder.mkdir(parents=True)
    position = {image_id: i for i, image_id in enumerate(index_set.ids)}
    query_labels = queries.label_names()
    index_labels = index_set.label_names()
    entries = []
    chosen = sample_queries(queries.labels, np.asarray(n_relevant) > 0, n, seed)
    for number, q in enumerate(chosen):
        stem = f"q{number:02d}"
        _save_thumbnail(queries, q, folder / f"{stem}.png")
        results = []
        for rank, (doc, score) in enumerate(zip(ranked_ids[q][:k], scores[q], strict=False), 1):
            name = f"{stem}-r{rank:02d}.png"
            _save_thumbnail(index_set, position[doc], folder / name)
            label = index_labels[position[doc]]
            results.append({
                "id": doc, "label": label, "score": float(score),
                "relevant": label == query_labels[q], "thumbnail": name,
            })  # fmt: skip
        entries.append({
            "id": queries.ids[q], "label": query_labels[q], "n_relevant": int(n_relevant[q]),
            "near_duplicate": bool(near_duplicate[q]) if near_duplicate is not None else None,
            "thumbnail": f"{stem}.png", "results": results,
        })  # fmt: skip
    atomic_write_json(folder / EXAMPLES_FILE, {"seed": seed, "k": k, "queries": entries})
    return len(entries)


def _save_thumbnail(dataset: Dataset, position: int, path: Path) -> None:
    """From the original file when there is one (a folder's photo keeps its shape and detail),
    else from the decoded array."""
    pixels = dataset.images[position]
    if dataset.paths:
        try:
            pixels = read_image_file(Path(dataset.paths[position]))
        except ImageDecodeError as error:  # changed since the run read it: keep what we have
            log.warning("thumbnail from the decoded image instead: %s", error)
    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    # A plain write: examples.json, written atomically after every thumbnail, vouches for them.
    image.save(path, "PNG")
