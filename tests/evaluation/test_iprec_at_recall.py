"""11-point interpolated precision over the full ranking agrees with trec_eval's iprec_at_recall.

The runs list every document (as the benchmark's map_all pass ranks the whole index), with scores
drawn from a handful of values so ties decide many ranks, and R from 1 up to most of the index,
including counts where trec_eval's level * R + 0.9 lands a hair below an integer in doubles.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytrec_eval

from cbir.evaluation.metrics import (
    IPREC_RECALL_LEVELS,
    average_precision_full,
    full_ranking_metrics,
)
from cbir.evaluation.trec import tiebreak_ranks

SCORE_VALUES = np.array([-np.inf, -1.5, -0.0, 0.0, 1 / 3, 0.5, 2.0], dtype=np.float32)
TREC_NAMES = [f"iprec_at_recall_{level:.2f}" for level in IPREC_RECALL_LEVELS]


def trec_eval_full(ids, scores, relevant, measures):
    qrels = {
        f"q{q}": {ids[j]: 1 for j in np.flatnonzero(row)}
        for q, row in enumerate(relevant)
        if row.any()
    }
    run = {f"q{q}": dict(zip(ids, map(float, row), strict=True)) for q, row in enumerate(scores)}
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iprec_at_recall_agrees_with_trec_eval_on_full_rankings(seed):
    rng = np.random.default_rng(seed)
    n_docs = 300
    ids = [f"d{j}" for j in rng.permutation(n_docs)]
    counts = [0, 1, 2, 3, 7, 10, 13, 17, 30, 33, 70, 150, 299]
    scores = rng.choice(SCORE_VALUES, size=(len(counts), n_docs))
    scores[-1] = rng.standard_normal(n_docs)  # one ranking without ties
    relevant = np.zeros((len(counts), n_docs), dtype=bool)
    for q, r in enumerate(counts):
        relevant[q, rng.choice(n_docs, size=r, replace=False)] = True

    average_precision, interpolated = full_ranking_metrics(scores, relevant, tiebreak_ranks(ids))
    theirs = trec_eval_full(ids, scores, relevant, {"iprec_at_recall", "map"})

    assert interpolated.shape == (len(counts), 11)
    assert (interpolated[0] == 0).all() and "q0" not in theirs
    for q in range(1, len(counts)):
        expected = [theirs[f"q{q}"][name] for name in TREC_NAMES]
        assert interpolated[q] == pytest.approx(expected, abs=1e-6), (q, counts[q])
        assert average_precision[q] == pytest.approx(theirs[f"q{q}"]["map"], abs=1e-6)
    # Interpolated precision never rises with recall, and a perfect ranking reaches 1 throughout.
    assert (np.diff(interpolated, axis=1) <= 0).all()


def test_perfect_and_worst_rankings():
    ids = [f"d{j}" for j in range(10)]
    relevant = np.array([[True] * 3 + [False] * 7])
    best = np.arange(10, 0, -1, dtype=np.float32)[None, :]
    _, interpolated = full_ranking_metrics(best, relevant, tiebreak_ranks(ids))
    assert interpolated[0].tolist() == [1.0] * 11
    # Relevant documents last: ranks 8, 9, 10 give precision 1/8, 2/9, 3/10.
    _, interpolated = full_ranking_metrics(best[:, ::-1].copy(), relevant, tiebreak_ranks(ids))
    assert interpolated[0] == pytest.approx([0.3] * 11)


def test_a_document_scored_minus_infinity_drops_out_of_both_measures():
    """How a leave-one-out run removes the query itself: ranked last, it changes nothing."""
    rng = np.random.default_rng(4)
    ids = [f"d{j}" for j in range(50)]
    scores = rng.choice(SCORE_VALUES[1:], size=(1, 50))
    relevant = rng.random((1, 50)) < 0.3
    relevant[0, 7] = False
    without = np.delete(scores, 7, axis=1), np.delete(relevant, 7, axis=1)
    expected = full_ranking_metrics(*without, tiebreak_ranks(ids[:7] + ids[8:]))
    scores[0, 7] = -np.inf
    got = full_ranking_metrics(scores, relevant, tiebreak_ranks(ids))
    assert got[0] == pytest.approx(expected[0], abs=1e-12)
    assert got[1] == pytest.approx(expected[1], abs=1e-12)
    assert average_precision_full(scores, relevant, tiebreak_ranks(ids)) == pytest.approx(got[0])
