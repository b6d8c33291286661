"""One check for every server backend's batched search (tests/index/test_elasticsearch.py,
test_milvus.py): batches answer as one request each, and exactly as the embedded index."""

from __future__ import annotations

import numpy as np

from cbir.index import create_index


def check_batches_match_the_exact_index(index, seed: int) -> None:
    """`index`: empty, 8-d, metric "ip", searching 7 queries per request."""
    rng = np.random.default_rng(seed)
    ids = [f"v{i}" for i in rng.permutation(300)]
    vectors = rng.integers(-2, 3, (300, 8)).astype(np.float32)  # small integers: many ties
    queries = rng.integers(-2, 3, (40, 8)).astype(np.float32)
    exact = create_index("embedded", dim=8, metric="ip")
    exact.add(ids, vectors)
    index.add(ids, vectors)
    got_ids, got_scores = index.search(queries, 25)
    want_ids, want_scores = exact.search(queries, 25)
    assert got_ids == want_ids
    np.testing.assert_array_equal(got_scores, want_scores)
    assert index.search(queries[5], 25)[0] == [want_ids[5]]
    # one request per batch of 7 (ties at the boundary may add more: none without ties)
    separated = rng.standard_normal((40, 8)).astype(np.float32)
    index.search(separated, 5)
    assert index.last_search.round_trips == 6  # ceil(40 / 7)
    index.search(separated[0], 5)
    assert index.last_search.round_trips == 1
