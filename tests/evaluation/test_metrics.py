"""Metric functions on hand-worked cases; agreement with trec_eval is in its own module."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from cbir.evaluation.metrics import average_precision_full, mean_metrics, per_query_metrics
from cbir.evaluation.trec import tiebreak_ranks, trec_order


def test_per_query_metrics_on_a_worked_example():
    # Relevant at ranks 1 and 3 of 5 retrieved; R = 4.
    relevance = np.array([[1, 0, 1, 0, 0]], dtype=bool)
    got = per_query_metrics(relevance, np.array([4]), depth=5)

    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, 5))
    expected = {
        "map_cut_5": (1 + 2 / 3) / 4,
        "map_at_5_normalised": (1 + 2 / 3) / 4,
        "P_10": 2 / 10,  # divided by the cut although only 5 were retrieved
        "P_5": 2 / 5,
        "ndcg_cut_10": (1 + 1 / math.log2(4)) / ideal,
        "recip_rank": 1.0,
    }
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name].dtype == np.float64
        assert got[name][0] == pytest.approx(value, abs=1e-12), name


def test_normalised_map_divides_by_the_depth_when_r_exceeds_it():
    relevance = np.ones((1, 3), dtype=bool)
    got = per_query_metrics(relevance, np.array([50]), depth=3)
    assert got["map_cut_3"][0] == pytest.approx(3 / 50)
    assert got["map_at_3_normalised"][0] == pytest.approx(1.0)


def test_depth_ten_gives_one_p_10():
    got = per_query_metrics(np.zeros((2, 10), dtype=bool), np.array([1, 1]), depth=10)
    assert list(got) == [
        "map_cut_10",
        "map_at_10_normalised",
        "P_10",
        "ndcg_cut_10",
        "recip_rank",
    ]


def test_n_retrieved_hides_the_columns_past_each_ranking():
    relevance = np.array([[0, 1, 1], [0, 1, 1]], dtype=bool)
    got = per_query_metrics(relevance, np.array([2, 2]), depth=3, n_retrieved=np.array([3, 1]))
    assert got["P_3"].tolist() == pytest.approx([2 / 3, 0.0])
    assert got["recip_rank"].tolist() == pytest.approx([0.5, 0.0])


def test_queries_without_relevant_documents_score_zero_and_are_not_averaged():
    relevance = np.array([[1, 0], [0, 0], [0, 0]], dtype=bool)
    n_relevant = np.array([1, 0, 3])
    per_query = per_query_metrics(relevance, n_relevant, depth=2)
    assert all(values[1] == 0.0 for values in per_query.values())

    means = mean_metrics(per_query, n_relevant)
    assert means["n_queries_evaluated"] == 2
    assert means["recip_rank"] == pytest.approx(0.5)
    assert means["P_2"] == pytest.approx(0.25)


def test_empty_rankings_score_zero():
    got = per_query_metrics(np.zeros((2, 0), dtype=bool), np.array([3, 0]), depth=5)
    assert all(values.tolist() == [0.0, 0.0] for values in got.values())


@pytest.mark.parametrize(
    ("relevance", "n_relevant", "kwargs", "message"),
    [
        (np.ones((1, 3), bool), [2], {}, "more relevant documents"),
        (np.ones(3, bool), [2], {}, "shape"),
        (np.ones((1, 3), bool), [2, 2], {}, "n_relevant must be"),
        (np.ones((1, 3), bool), [-1], {}, r"\[0, inf\]"),
        (np.ones((1, 3), bool), [3], {"n_retrieved": np.array([4])}, r"\[0, 3\]"),
        (np.ones((1, 3), bool), [3], {"depth": 0}, "depth"),
    ],
)
def test_per_query_metrics_rejects_inconsistent_input(relevance, n_relevant, kwargs, message):
    with pytest.raises(ValueError, match=message):
        per_query_metrics(relevance, np.array(n_relevant), **kwargs)


def test_mean_metrics_needs_a_query_with_relevant_documents():
    with pytest.raises(ValueError, match="nothing to average"):
        mean_metrics({"P_10": np.zeros(2)}, np.array([0, 0]))


def reference_average_precision(ids, scores, relevant) -> float:
    """Textbook AP over trec_eval's ordering, one document at a time."""
    hits, total = 0, 0.0
    for rank, i in enumerate(trec_order(ids, scores), start=1):
        if relevant[i]:
            hits += 1
            total += hits / rank
    return total / hits if hits else 0.0


def tied_scores(rng: np.random.Generator, shape) -> np.ndarray:
    values = np.array([-np.inf, -2.5, -1e-40, -0.0, 0.0, 1e-40, 1 / 3, 0.75, 3e38, np.inf])
    return rng.choice(values, size=shape).astype(np.float32)


def test_average_precision_full_matches_a_reference_ranking():
    rng = np.random.default_rng(3)
    n_docs = 120
    ids = [f"d{j}" for j in rng.permutation(n_docs)]
    scores = tied_scores(rng, (8, n_docs))
    relevant = rng.random((8, n_docs)) < rng.random((8, 1)) * 0.5
    relevant[0] = False  # R = 0
    relevant[1] = True

    got = average_precision_full(scores, relevant, tiebreak_ranks(ids))
    expected = [
        reference_average_precision(ids, s, r) for s, r in zip(scores, relevant, strict=True)
    ]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert got[0] == 0.0
    assert got[1] == pytest.approx(1.0)


def test_average_precision_full_chunks_agree_across_threads():
    rng = np.random.default_rng(4)
    ids = [f"img{j}" for j in range(500)]
    scores = tied_scores(rng, (16, 500))
    relevant = rng.random((16, 500)) < 0.2
    tiebreak = tiebreak_ranks(ids)
    whole = average_precision_full(scores, relevant, tiebreak)
    with ThreadPoolExecutor(2) as pool:
        parts = pool.map(
            lambda s: average_precision_full(scores[s : s + 4], relevant[s : s + 4], tiebreak),
            range(0, 16, 4),
        )
        assert np.array_equal(np.concatenate(list(parts)), whole)


@pytest.mark.parametrize(
    ("scores", "relevant", "tiebreak", "message"),
    [
        (np.zeros((1, 3)), np.zeros((1, 3), bool), np.array([0, 1, 1]), "permutation"),
        (np.zeros((1, 3)), np.zeros((1, 3), bool), np.array([0, 1, 3]), "permutation"),
        (np.zeros((1, 3)), np.zeros((1, 2), bool), np.array([0, 1, 2]), "need equal"),
        (np.full((1, 3), np.nan), np.zeros((1, 3), bool), np.array([0, 1, 2]), "NaN"),
    ],
)
def test_average_precision_full_rejects_bad_input(scores, relevant, tiebreak, message):
    with pytest.raises(ValueError, match=message):
        average_precision_full(scores, relevant, tiebreak)
