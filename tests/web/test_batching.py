"""Searches that arrive together share one pass over the index (cbir.web.batching): each
still gets its own results, its own depth and its own error."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cbir.collection import Collection
from cbir.index.base import DimensionMismatchError
from cbir.web.batching import SHALLOW_DEPTH, SearchBatcher

WAIT_S = 30.0  # a bound on waiting for threads to queue, never a measured time


@pytest.fixture
def collection(collection_dir):
    with Collection.open(collection_dir, read_only=True) as collection:
        yield collection


class Gate:
    """The batcher's collection getter, holding the first batch until `expected` more
    searches have queued behind it, so that they go together in the next one."""

    def __init__(self, collection: Collection, expected: int) -> None:
        self.collection, self.expected = collection, expected
        self.batcher: SearchBatcher | None = None
        self.calls = 0

    def __call__(self) -> Collection:
        self.calls += 1
        if self.calls == 1:
            assert self.batcher is not None
            stop = threading.Event()
            for _ in range(int(WAIT_S / 0.01)):
                if self.batcher.waiting >= self.expected:
                    break
                stop.wait(0.01)
        return self.collection


def search_together(collection, asks: list[tuple[np.ndarray, int]]):
    """Run every (vector, depth) in a thread of its own, the first one leading and held
    until the others queue; (answers or errors, batcher)."""
    gate = Gate(collection, len(asks) - 1)
    batcher = gate.batcher = SearchBatcher(gate)
    answers: list = [None] * len(asks)

    def ask(i: int) -> None:
        try:
            answers[i] = batcher.search(*asks[i])[0]
        except Exception as error:
            answers[i] = error

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    while gate.calls == 0:  # the first search leads, and waits in the gate
        threading.Event().wait(0.001)
    others = [threading.Thread(target=ask, args=(i,)) for i in range(1, len(asks))]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(WAIT_S)
    return answers, batcher


def test_searches_queued_together_go_in_one_batch_and_each_gets_its_own_results(collection):
    vectors = collection.vectors_of(sorted(collection.known_ids()))
    rng = np.random.default_rng(5)
    queries = vectors[rng.choice(len(vectors), 8)] + rng.normal(0, 0.05, (8, vectors.shape[1]))
    queries = queries.astype(np.float32)
    depths = [3, 5, 1, 7, 2, 4, 6, 3]
    answers, batcher = search_together(
        collection, [(q[None], d) for q, d in zip(queries, depths, strict=True)]
    )
    assert (batcher.batches, batcher.queries) == (2, 8)  # the leader's, then the 7 queued
    for query, depth, hits in zip(queries, depths, answers, strict=True):
        alone = collection.search_vectors(query[None], depth)[0]
        assert [hit.id for hit in hits] == [hit.id for hit in alone]
        assert [hit.label for hit in hits] == [hit.label for hit in alone]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in alone], atol=1e-6)


def test_a_query_that_fails_gets_its_own_error_and_the_others_their_results(collection):
    good = collection.vectors_of(["img-dark-0", "img-light-0"])
    bad = np.full((1, good.shape[1]), np.nan, np.float32)
    answers, batcher = search_together(
        collection, [(good[:1], 3), (good[1:], 3), (bad, 3), (good[:1], 2)]
    )
    assert isinstance(answers[2], DimensionMismatchError)
    assert answers[1][0].id == "img-light-0"
    assert [hit.id for hit in answers[3]] == [hit.id for hit in answers[0]][:2]
    assert batcher.waiting == 0


def test_deep_pages_go_in_batches_of_their_own(collection):
    vector = collection.vectors_of(["img-mid-0"])
    deep = SHALLOW_DEPTH + 1
    asks = [(vector, 2), (vector, deep), (vector, 3), (vector, deep), (vector, 1)]
    answers, batcher = search_together(collection, asks)
    # the leader's batch, the first pages queued behind it, then the deep pages
    assert (batcher.batches, batcher.queries) == (3, 5)
    assert [len(hits) for hits in answers] == [2, len(collection), 3, len(collection), 1]
    assert all(hits[0].id == "img-mid-0" for hits in answers)
