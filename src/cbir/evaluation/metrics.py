"""Retrieval metrics computed exactly as trec_eval computes them, vectorised over queries.

Relevance is binary (a qrels line with relevance >= 1). A query with no relevant document (R = 0)
scores 0 on every measure and is left out of the means, as trec_eval leaves out queries absent from
the qrels. The tests prove agreement with pytrec_eval (trec_eval itself) to 1e-6.
"""

from __future__ import annotations

import numpy as np

# trec_eval's ndcg_cut discount: the document at rank r (from 1) gains 1 / log2(r + 1).
_NDCG_CUT = 10
_DISCOUNTS = 1.0 / np.log2(np.arange(2, _NDCG_CUT + 2, dtype=np.float64))
# Ideal DCG of a query with R relevant documents: the first min(R, 10) discounts summed.
_IDEAL_DCG = np.concatenate([[0.0], np.cumsum(_DISCOUNTS)])
# trec_eval's default iprec_at_recall levels (m_iprec_at_recall.c), as the same doubles.
IPREC_RECALL_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
_LEVELS = np.array(IPREC_RECALL_LEVELS, dtype=np.float64)


def per_query_metrics(
    relevance: np.ndarray,
    n_relevant: np.ndarray,
    depth: int = 100,
    n_retrieved: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-query measures of runs given as relevance in trec order.

    `relevance` (Q, D) bool: whether each retrieved document is relevant, in trec order. Row q
    holds `n_retrieved[q]` documents (default: all D); columns beyond are ignored. `n_relevant`
    (Q,) is R from the qrels. Each measure uses its own cut, so D may exceed `depth`.

    Returns float64 (Q,) arrays under trec_eval's names: `map_cut_{depth}` (sum of precision at
    each relevant rank <= depth, / R), `map_at_{depth}_normalised` (same sum / min(R, depth)),
    `P_10`, `P_{depth}` (divided by the cut even when fewer were retrieved), `ndcg_cut_10` and
    `recip_rank`. With depth 10, `P_10` appears once.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    relevance = np.asarray(relevance, dtype=bool)
    if relevance.ndim != 2:
        raise ValueError(f"relevance must be (queries, retrieved), got shape {relevance.shape}")
    n_queries, width = relevance.shape
    n_rel = _per_query_counts("n_relevant", n_relevant, n_queries, upper=None)
    if n_retrieved is not None:
        n_ret = _per_query_counts("n_retrieved", n_retrieved, n_queries, upper=width)
        relevance = relevance & (np.arange(width) < n_ret[:, None])
    if width == 0:  # one never-relevant column keeps every formula below valid
        relevance = np.zeros((n_queries, 1), dtype=bool)
        width = 1

    hits = np.cumsum(relevance, axis=1, dtype=np.int64)  # relevant retrieved so far, by rank
    if (hits[:, -1] > n_rel).any():
        raise ValueError("a query retrieved more relevant documents than n_relevant says exist")
    ranks = np.arange(1, width + 1, dtype=np.float64)
    precision_sum = np.where(relevance, hits / ranks, 0.0)[:, :depth].sum(axis=1)

    def precision_at(cut: int) -> np.ndarray:
        return hits[:, min(cut, width) - 1] / cut

    top = min(_NDCG_CUT, width)
    dcg = relevance[:, :top] @ _DISCOUNTS[:top]
    ideal = _IDEAL_DCG[np.minimum(n_rel, _NDCG_CUT)]
    first = relevance.argmax(axis=1)
    return {
        f"map_cut_{depth}": _divide(precision_sum, n_rel),
        f"map_at_{depth}_normalised": _divide(precision_sum, np.minimum(n_rel, depth)),
        "P_10": precision_at(10),
        f"P_{depth}": precision_at(depth),
        "ndcg_cut_10": _divide(dcg, ideal),
        "recip_rank": np.where(relevance.any(axis=1), 1.0 / (first + 1), 0.0),
    }


def mean_metrics(per_query: dict[str, np.ndarray], n_relevant: np.ndarray) -> dict[str, float]:
    """Mean of each per-query measure over the queries with R > 0, plus `n_queries_evaluated`.

    trec_eval averages over the queries present in both qrels and run; a query with relevant
    documents but an empty ranking counts here as zeros, as with `trec_eval -c`.
    """
    n_rel = np.asarray(n_relevant)
    evaluated = n_rel > 0
    count = int(evaluated.sum())
    if count == 0:
        raise ValueError("no query has a relevant document: there is nothing to average")
    means: dict[str, float] = {}
    for name, values in per_query.items():
        values = np.asarray(values, dtype=np.float64)
        if values.shape != n_rel.shape:
            raise ValueError(f"{name} has shape {values.shape}, n_relevant {n_rel.shape}")
        means[name] = float(values[evaluated].mean())
    means["n_queries_evaluated"] = count
    return means


def average_precision_full(
    scores: np.ndarray, relevant: np.ndarray, tiebreak_rank: np.ndarray
) -> np.ndarray:
    """Average precision over the full ranking of every index document, per query: the first
    half of `full_ranking_metrics` (see there)."""
    return full_ranking_metrics(scores, relevant, tiebreak_rank)[0]


def full_ranking_metrics(
    scores: np.ndarray, relevant: np.ndarray, tiebreak_rank: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """trec_eval's `map` and `iprec_at_recall` on a run that ranks every index document.

    `scores` (q, N) (compared as float32, as a run file holds them), `relevant` (q, N) bool,
    `tiebreak_rank` (N,): each document's rank in ascending id order (`trec.tiebreak_ranks`), a
    higher one winning a score tie. Returns (average precision (q,), interpolated precision at
    the recall levels of `IPREC_RECALL_LEVELS` (q, 11)), float64; zeros where a query has no
    relevant document. A document to leave out of a query's ranking (the query itself, in a
    leave-one-out run) can be given the score -inf: ranked last and not relevant, it changes
    neither measure.

    One uint64 key per document sorts into trec order in a single pass: the high word is the
    float32 score mapped to an unsigned integer that orders descending, the low word the tiebreak
    rank, reversed, shifted left one bit, with the document's relevance in bit 0. Tiebreak ranks
    are distinct, so bit 0 never decides an order, and after the sort it reads back the relevance
    of each rank with no gather. Rows go one at a time: a 50,000-document row of keys stays in
    cache, and that measured faster than sorting a block of rows at once. numpy releases the GIL
    in these calls, so callers may run chunks in threads.
    """
    scores = np.asarray(scores, dtype=np.float32)
    relevant = np.asarray(relevant, dtype=bool)
    tiebreak_rank = np.asarray(tiebreak_rank)
    if scores.ndim != 2 or relevant.shape != scores.shape:
        raise ValueError(f"scores {scores.shape} and relevant {relevant.shape}: need equal (q, N)")
    n_queries, n_docs = scores.shape
    if n_docs >= 2**31:
        raise ValueError("at most 2**31 - 1 documents: the tiebreak rank shares 32 bits")
    if tiebreak_rank.shape != (n_docs,) or not _is_permutation(tiebreak_rank):
        raise ValueError(f"tiebreak_rank must be a permutation of 0..{n_docs - 1}")
    if np.isnan(scores).any():
        raise ValueError("a NaN score has no place in a TREC ranking")

    low_words = (n_docs - 1 - tiebreak_rank).astype(np.uint32) << np.uint32(1)
    keys = np.empty(n_docs, dtype=np.uint64)
    halves = keys.view(np.uint32).reshape(n_docs, 2)
    high, low = (1, 0) if np.little_endian else (0, 1)
    score = np.empty(n_docs, dtype=np.float32)
    sign = np.empty(n_docs, dtype=np.int32)
    relevance_bytes = keys.view(np.uint8)[(0 if np.little_endian else 7) :: 8]
    ranks = np.arange(1, n_docs + 1, dtype=np.float64)
    average_precision = np.zeros(n_queries, dtype=np.float64)
    interpolated = np.zeros((n_queries, len(IPREC_RECALL_LEVELS)), dtype=np.float64)
    for q in range(n_queries):
        _descending_score_words(scores[q], score, sign, out=halves[:, high])
        np.bitwise_or(low_words, relevant[q], out=halves[:, low])
        keys.sort()
        positions = np.flatnonzero(relevance_bytes & np.uint8(1))  # ranks - 1 of relevant docs
        if positions.size:
            # Precision at the i-th relevant document (rank p_i + 1) is i / (p_i + 1); AP is
            # their mean over the R relevant documents, all of them ranked here.
            precision = ranks[: positions.size] / ranks[positions]
            average_precision[q] = precision.mean()
            interpolated[q] = _interpolated_precision(precision)
    return average_precision, interpolated


def _interpolated_precision(precision: np.ndarray) -> np.ndarray:
    """trec_eval's iprec_at_recall for one query whose R relevant documents are all ranked,
    from the precision at each of them in rank order.

    trec_eval turns each recall level into a count of relevant documents, (long)(level * R +
    0.9) (so 0.7 of R = 3 is 2, not 3: 0.7 * 3 + 0.9 falls just short of 3.0 in doubles), and
    reports the highest precision at or below the rank where that many were found (at the first
    relevant document for a count of 0). Precision only falls between relevant documents, so the
    highest over those ranks is the highest at the relevant documents from that one on.
    """
    best_from = np.maximum.accumulate(precision[::-1])[::-1]
    counts = (_LEVELS * len(precision) + 0.9).astype(np.int64)  # truncation, as C's (long)
    return best_from[np.maximum(counts, 1) - 1]


def _descending_score_words(
    scores: np.ndarray, work: np.ndarray, sign: np.ndarray, out: np.ndarray
) -> None:
    """uint32 words whose ascending order is float32 score descending; equal floats, equal words.

    The usual order-preserving map (negative: ~bits; else: bits | 0x80000000), complemented so
    that it sorts descending: negative -> bits, non-negative -> bits ^ 0x7FFFFFFF.
    """
    np.add(scores, np.float32(0.0), out=work)  # -0.0 + 0.0 == +0.0: trec_eval ties them
    bits = work.view(np.uint32)
    np.right_shift(work.view(np.int32), 31, out=sign)  # -1 where negative, else 0
    flip = sign.view(np.uint32)
    np.invert(flip, out=flip)
    flip &= np.uint32(0x7FFFFFFF)
    np.bitwise_xor(bits, flip, out=out)


def _is_permutation(values: np.ndarray) -> bool:
    if values.size == 0:
        return True
    if not np.issubdtype(values.dtype, np.integer) or values.min() < 0:
        return False
    return bool(values.max() < values.size and (np.bincount(values) == 1).all())


def _per_query_counts(
    name: str, values: np.ndarray, n_queries: int, upper: int | None
) -> np.ndarray:
    counts = np.asarray(values)
    if counts.shape != (n_queries,) or (
        counts.size and not np.issubdtype(counts.dtype, np.integer)
    ):
        raise ValueError(
            f"{name} must be ({n_queries},) integers, got {counts.dtype} {counts.shape}"
        )
    if (counts < 0).any() or (upper is not None and (counts > upper).any()):
        raise ValueError(f"{name} must lie in [0, {upper if upper is not None else 'inf'}]")
    return counts.astype(np.int64)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (a query with no relevant document)."""
    out = np.zeros(np.shape(numerator), dtype=np.float64)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)
