"""The seeded sample of example queries."""

from __future__ import annotations

import numpy as np

from cbir.evaluation.examples import sample_queries


def test_sample_is_seeded_spread_over_classes_and_skips_queries_without_relevant():
    labels = np.repeat(np.arange(5), 20)
    eligible = np.ones(100, dtype=bool)
    eligible[labels == 4] = False  # a class whose queries have R = 0
    first = sample_queries(labels, eligible, n=8, seed=7)
    assert first == sample_queries(labels, eligible, n=8, seed=7)
    assert first != sample_queries(labels, eligible, n=8, seed=8)
    assert len(set(first)) == 8 and all(eligible[q] for q in first)
    # Four eligible classes: the first four picks cover them all, the next four again.
    assert set(labels[first[:4]]) == {0, 1, 2, 3} == set(labels[first[4:]])
    assert len(sample_queries(labels, eligible, n=500, seed=0)) == 80  # all there are
