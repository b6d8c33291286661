"""TREC run and qrels files, written exactly as trec_eval reads them.

trec_eval ignores the rank column: it re-sorts each query's documents by score descending, ties
broken by docno descending (strcmp). The order we write, the rank column and the order trec_eval
evaluates therefore agree only if we sort the same way and write scores that parse back into the
same order. Scores are float32 everywhere (that is what the indexes return), so they are compared
and written as float32.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cbir.storage import atomic_write_text, atomic_writer

# 9 significant digits round-trip any float32; trec_eval then parses the text into a double that
# orders exactly as the float32 did (equal float32 -> identical text -> equal doubles).
_SCORE_FORMAT = ".9g"
_WHITESPACE = re.compile(r"\s")
_WRITE_BUFFER = 1 << 20


def format_score(x: float) -> str:
    """The text of `x` as a run file holds it: float32-exact, so parsing recovers the order."""
    value = float(np.float32(x))
    if math.isnan(value):
        raise ValueError("a NaN score has no place in a TREC ranking")
    return format(value, _SCORE_FORMAT)


def trec_order(ids: Sequence[str], scores: Sequence[float]) -> list[int]:
    """Indices of `ids` in trec_eval's order: score descending, ties by id descending.

    Scores are compared as the float32 values a run file holds, so scores that differ only beyond
    float32 precision tie here exactly as they will in trec_eval. Python's str comparison (code
    points) is strcmp on UTF-8.
    """
    if len(ids) != len(scores):
        raise ValueError(f"{len(ids)} ids but {len(scores)} scores")
    keys = _float32_scores(scores).astype(np.float64).tolist()
    return sorted(range(len(ids)), key=lambda i: (keys[i], ids[i]), reverse=True)


def tiebreak_ranks(ids: Sequence[str]) -> np.ndarray:
    """Rank of each id in ascending string order: the `tiebreak_rank` of `average_precision_full`.

    A higher rank wins a score tie, as a higher docno does in trec_eval.
    """
    order = sorted(range(len(ids)), key=ids.__getitem__)
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[order] = np.arange(len(ids))
    return ranks


def write_run(
    path: Path | str,
    query_ids: Sequence[str],
    ranked_ids: Sequence[Sequence[str]],
    scores: np.ndarray | Sequence[Sequence[float]],
    tag: str = "cbir",
) -> None:
    """Write `qid Q0 docid rank score tag` lines, rank from 1, atomically.

    Each ranked list must already be in trec order (see `trec_order`); this is checked, because a
    rank column that disagrees with the order trec_eval computes would silently mislead readers.
    `scores` holds one row per list, as lists or a 2-D array (rows may be padded past a shorter
    list). A query with an empty list writes no lines.
    """
    if len(query_ids) != len(ranked_ids) or len(ranked_ids) != len(scores):
        raise ValueError(
            f"{len(query_ids)} query ids, {len(ranked_ids)} ranked lists, {len(scores)} score rows"
        )
    lengths = [len(row) for row in ranked_ids]
    flat_scores = _flatten_scores(scores, lengths)
    flat_ids = [doc for row in ranked_ids for doc in row]
    _check_tokens("query id", query_ids)
    _check_tokens("document id", flat_ids)
    _check_tokens("run tag", [tag])
    if len(set(query_ids)) != len(query_ids):
        raise ValueError("query ids repeat; trec_eval would merge their rankings")
    _check_in_trec_order(query_ids, ranked_ids, flat_ids, flat_scores, lengths)

    score_text = [format(x, _SCORE_FORMAT) for x in flat_scores.astype(np.float64).tolist()]
    rank_text = [str(rank) for rank in range(1, max(lengths, default=0) + 1)]
    blocks = []
    start = 0
    for qid, row in zip(query_ids, ranked_ids, strict=True):
        stop = start + len(row)
        lines = zip(row, rank_text, score_text[start:stop], strict=False)
        blocks.append("".join([f"{qid} Q0 {doc} {r} {score} {tag}\n" for doc, r, score in lines]))
        start = stop
    atomic_write_text(Path(path), "".join(blocks))


def read_run(path: Path | str) -> dict[str, dict[str, float]]:
    """A run file as pytrec_eval takes it: {qid: {docid: score}}."""
    run: dict[str, dict[str, float]] = {}
    for where, (qid, _q0, docid, _rank, score, _tag) in _records(path, 6):
        try:
            value = float(score)
        except ValueError:
            raise ValueError(f"{where}: score {score!r} is not a number") from None
        _insert(run, qid, docid, value, where)
    return run


def write_qrels(
    path: Path | str,
    query_ids: Sequence[str],
    query_labels: Sequence[Any] | np.ndarray,
    index_ids: Sequence[str],
    index_labels: Sequence[Any] | np.ndarray,
) -> int:
    """Write `qid 0 docid 1` for every index document sharing the query's label; lines written.

    Labels None or -1 mean unlabelled: such a query gets no lines, such a document is relevant to
    nothing. On CIFAR-10 this is 50 million lines, so it streams one query at a time to a temporary
    file that replaces `path` only once complete.
    """
    query_labels = _as_list(query_labels)
    index_labels = _as_list(index_labels)
    if len(query_ids) != len(query_labels) or len(index_ids) != len(index_labels):
        raise ValueError(
            f"{len(query_ids)} query ids for {len(query_labels)} labels, "
            f"{len(index_ids)} index ids for {len(index_labels)} labels"
        )
    _check_tokens("query id", query_ids)
    _check_tokens("document id", index_ids)

    # One " 0 docid 1\n" tail per document; joining the tails with the query id as separator
    # writes a whole query's lines in one C-level call.
    tails_by_label: dict[Any, list[str]] = {}
    for doc, label in zip(index_ids, index_labels, strict=True):
        if not _unlabelled(label):
            tails_by_label.setdefault(label, []).append(f" 0 {doc} 1\n")

    lines = 0
    with atomic_writer(Path(path), "w", buffering=_WRITE_BUFFER) as handle:
        for qid, label in zip(query_ids, query_labels, strict=True):
            tails = None if _unlabelled(label) else tails_by_label.get(label)
            if tails:
                handle.write(qid + qid.join(tails))
                lines += len(tails)
    return lines


def read_qrels(path: Path | str) -> dict[str, dict[str, int]]:
    """A qrels file as pytrec_eval takes it: {qid: {docid: relevance}}."""
    qrels: dict[str, dict[str, int]] = {}
    for where, (qid, _iteration, docid, relevance) in _records(path, 4):
        try:
            value = int(relevance)
        except ValueError:
            raise ValueError(f"{where}: relevance {relevance!r} is not an integer") from None
        _insert(qrels, qid, docid, value, where)
    return qrels


def _float32_scores(scores: Any) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float32)
    if np.isnan(values).any():
        raise ValueError("a NaN score has no place in a TREC ranking")
    return values


def _flatten_scores(
    scores: np.ndarray | Sequence[Sequence[float]], lengths: list[int]
) -> np.ndarray:
    """All written scores, row after row; a 2-D array may be padded past a shorter list."""
    if isinstance(scores, np.ndarray) and scores.ndim == 2:
        if all(length == scores.shape[1] for length in lengths):
            return _float32_scores(scores).ravel()
        scores = [row[:length] for row, length in zip(scores, lengths, strict=True)]
    rows = [_float32_scores(row).ravel() for row in scores]
    for i, (row, length) in enumerate(zip(rows, lengths, strict=True)):
        if row.size != length:
            raise ValueError(f"ranked list {i} has {length} ids but {row.size} scores")
    return np.concatenate(rows) if rows else np.empty(0, dtype=np.float32)


def _check_in_trec_order(
    query_ids: Sequence[str],
    ranked_ids: Sequence[Sequence[str]],
    flat_ids: list[str],
    flat_scores: np.ndarray,
    lengths: list[int],
) -> None:
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    same_row = row_of[1:] == row_of[:-1]
    rising = np.flatnonzero(same_row & (flat_scores[1:] > flat_scores[:-1]))
    if rising.size:
        raise ValueError(f"query {query_ids[row_of[rising[0]]]!r}: scores are not descending")
    for i in np.flatnonzero(same_row & (flat_scores[1:] == flat_scores[:-1])).tolist():
        if flat_ids[i] <= flat_ids[i + 1]:
            raise ValueError(
                f"query {query_ids[row_of[i]]!r}: tied documents {flat_ids[i]!r}, "
                f"{flat_ids[i + 1]!r} are not in descending id order (trec_eval's tie-break)"
            )
    for qid, row in zip(query_ids, ranked_ids, strict=True):
        if len(set(row)) != len(row):
            raise ValueError(f"query {qid!r}: a document appears twice in its ranking")


def _check_tokens(kind: str, tokens: Sequence[str]) -> None:
    """TREC files are whitespace-separated: an id that is empty or holds a space breaks them."""
    if tokens and min(map(len, tokens)) == 0:
        raise ValueError(f"an empty {kind} cannot be written to a TREC file")
    if _WHITESPACE.search("".join(tokens)):
        bad = next(token for token in tokens if _WHITESPACE.search(token))
        raise ValueError(f"{kind} {bad!r} contains whitespace; TREC files cannot hold it")


def _unlabelled(label: Any) -> bool:
    return label is None or label == -1


def _as_list(values: Sequence[Any] | np.ndarray) -> list[Any]:
    # Python scalars hash faster than numpy ones, and compare equal to them.
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _records(path: Path | str, n_fields: int) -> Iterator[tuple[str, list[str]]]:
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{path}:{line_number}"
            if len(fields) != n_fields:
                raise ValueError(f"{where}: expected {n_fields} fields, found {len(fields)}")
            yield where, fields


def _insert(table: dict[str, dict[str, Any]], qid: str, docid: str, value: Any, where: str) -> None:
    docs = table.setdefault(qid, {})
    if docid in docs:
        raise ValueError(f"{where}: document {docid!r} repeats for query {qid!r}")
    docs[docid] = value
