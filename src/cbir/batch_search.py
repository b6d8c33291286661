"""Many queries against a collection at once: the ranked lists of a TREC run.

`cbir search --batch` and the benchmark both rank through here, and through the collection's
own `search_vectors`, the call behind `cbir search` and `cbir serve`: a figure the benchmark
prints is one a user gets. A query may leave its own image out of its results (a
leave-one-out run over the indexed images themselves).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cbir.collection import Collection
from cbir.datasets import scan_folder
from cbir.errors import DataNotFoundError
from cbir.evaluation import leave_one_out
from cbir.evaluation.trec import trec_order, write_run
from cbir.images import decode_many
from cbir.pipeline import DEFAULT_SIZE, describe
from cbir.progress import progress_bar

QUERY_BATCH = 1024  # query images decoded and described at a time

_TREC_UNSAFE = re.compile(r"[\s%]")  # whitespace breaks a TREC line; % is our escape


class _CollectionRanking:
    """A collection seen as the index `leave_one_out.search` takes: ids and scores only."""

    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    def __len__(self) -> int:
        return len(self._collection.index)

    def search(self, vectors: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        ids, rows = self._collection.rank_vectors(vectors, k)
        scores = np.zeros((len(rows), max(map(len, rows), default=0)), dtype=np.float32)
        for row, found in enumerate(rows):
            scores[row, : len(found)] = found
        return ids, scores


def rank(
    collection: Collection,
    query_vectors: np.ndarray,
    depth: int,
    exclude_ids: Sequence[str] | None = None,
) -> tuple[list[list[str]], np.ndarray]:
    """Top `depth` ids and scores per query vector, in trec_eval's order; with
    `exclude_ids`, query i never retrieves `exclude_ids[i]` (its own image)."""
    return leave_one_out.search(_CollectionRanking(collection), query_vectors, depth, exclude_ids)


def trec_id(image_id: str) -> str:
    """An id as a TREC file can hold it: whitespace and % percent-encoded ('my cat.jpg'
    becomes 'my%20cat.jpg'; distinct ids stay distinct)."""
    return _TREC_UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", image_id)


def write_trec_run(
    path: Path,
    query_ids: Sequence[str],
    ranked_ids: list[list[str]],
    scores: np.ndarray | list[np.ndarray],
    tag: str,
) -> None:
    """Write a run with TREC-safe ids; a list whose ids changed is put back in trec_eval's
    order, which ties break by the (encoded) id."""
    safe_ranked, safe_scores = [], []
    for row, ids in enumerate(ranked_ids):
        safe = [trec_id(i) for i in ids]
        row_scores = np.asarray(scores[row][: len(ids)])
        if safe != ids:
            order = trec_order(safe, row_scores)
            safe, row_scores = [safe[i] for i in order], row_scores[order]
        safe_ranked.append(safe)
        safe_scores.append(row_scores)
    write_run(path, [trec_id(q) for q in query_ids], safe_ranked, safe_scores, tag=tag)


@dataclass
class FolderRun:
    """A folder of queries searched against a collection."""

    query_ids: list[str] = field(default_factory=list)
    query_labels: list[str | None] = field(default_factory=list)
    ranked_ids: list[list[str]] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file, why)


def search_folder(
    collection: Collection,
    folder: Path,
    depth: int,
    exclude_self: bool = False,
    batch_size: int = QUERY_BATCH,
) -> FolderRun:
    """Every image of `folder` (class subfolders are labels) as a query, `batch_size` at a
    time so a large folder never sits in memory whole; unreadable files are skipped and
    listed. `exclude_self`: a query never retrieves the indexed image with its own id (the
    same relative path), for a leave-one-out run over the indexed folder itself."""
    entries = scan_folder(folder)
    if not entries:
        raise DataNotFoundError(f"{folder} holds no images to search with")
    size = collection.extractor.input_size or DEFAULT_SIZE
    run = FolderRun()
    with progress_bar(len(entries), "search", unit="q") as bar:
        for start in range(0, len(entries), batch_size):
            part = entries[start : start + batch_size]
            decoded = decode_many([entry.path for entry in part], size=size)
            run.failures += [(str(part[p].path), why) for p, why in decoded.failures]
            found = [part[p] for p in decoded.ok]
            if found:
                ids = [entry.id for entry in found]
                vectors = describe(collection.extractor, decoded.images, queries=True)
                ranked, scores = rank(collection, vectors, depth, ids if exclude_self else None)
                run.query_ids += ids
                run.query_labels += [entry.label for entry in found]
                run.ranked_ids += ranked
                run.scores += list(scores)
            bar.update(len(part))
    return run
