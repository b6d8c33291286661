"""The VectorIndex contract, written once and run against every backend.

Each backend is checked against a brute-force reference (numpy scores + Python `sorted` in
trec_eval's order: score descending, then id descending) on seeded data. Small integer
vectors with metric "ip" give exact float32 scores and many ties, so ids and scores must match
the reference exactly; random cosine data allow only float rounding between near-equal scores.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import tests.index.toy_backend  # noqa: F401 (registers "toy": a backend added by one file)
from cbir.errors import CbirError, DimensionMismatchError
from cbir.index import Backend, available, backend_class, create_index
from cbir.index.base import RemoteIndex, VectorIndex, l2_normalise, order_hits
from tests.servers.live import live_server  # noqa: F401 (fixture)

# Every registered backend runs the suite with its default index, and once more with each
# approximate kind it declares, searched exhaustively on this small data (<= 500 vectors) so
# that it must be exact, as the contract demands: HNSW with ef=2000 visits every vector it can
# reach; IVF probes both of its lists; IVF-PQ also rescores k_factor=1000 times k candidates
# (exact too, once it has the 156 vectors it needs to train: an exact scan before that).
EXHAUSTIVE = {
    "hnsw": {"index": "hnsw:M=8", "search": "ef=2000"},
    "ivf": {"index": "ivf:nlist=2", "search": "nprobe=2"},
    "ivfpq": {"index": "ivfpq:nlist=2,m=1,nbits=2", "search": "nprobe=2,k_factor=1000"},
}


def connections(cls: type[Backend]) -> list[str | None]:
    """Where a backend's indexes live in these tests: nowhere in particular (in-process);
    a local file when its default connection is one (Milvus Lite); its dev server."""
    if not cls.keeps_data:
        return [None]
    default = {cls.connection: cls.setting(cls.connection).default}
    local = cls.locate(default, Path("folder")) != default
    return ["local"] * local + ["server"] * (cls.dev_server is not None)


def variants() -> list:
    """(backend, settings, connection) for every registered backend: its default index on
    each of its connections, each approximate kind it builds on the last."""
    params = []
    for name in available():
        cls = backend_class(name)
        places = connections(cls)
        runs = [(None, {}, place) for place in places]
        runs += [(k, EXHAUSTIVE[k], places[-1]) for k in cls.index_kinds if k in EXHAUSTIVE]
        for kind, settings, place in runs:
            shown = "-".join([name, kind or "default", *([place] if place else [])])
            marks = [pytest.mark.server] if cls.keeps_data else []
            params.append(pytest.param((name, settings, place), id=shown, marks=marks))
    return params


@pytest.fixture(scope="session")
def local_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the session's local files (Milvus Lite starts once per file)."""
    return tmp_path_factory.mktemp("local-backends")


@pytest.fixture(params=variants())
def make_index(request: pytest.FixtureRequest) -> Iterator:
    made: list[VectorIndex] = []
    name, settings, place = request.param
    cls = backend_class(name)
    if cls.keeps_data:  # the test's connection, and an index of its own there
        if place == "server":
            address = request.getfixturevalue("live_server")(name)
        else:
            default = {cls.connection: cls.setting(cls.connection).default}
            address = cls.locate(default, request.getfixturevalue("local_folder"))[cls.connection]
        settings = {**settings, cls.connection: address}
        settings[cls.name_setting] = f"contract_{uuid.uuid4().hex}"

    def make(dim: int, metric: str = "cosine") -> VectorIndex:
        index = create_index(name, dim=dim, metric=metric, **settings)
        made.append(index)
        return index

    yield make
    for index in made:
        if cls.keeps_data:  # remove the test's index from the server
            assert isinstance(index, RemoteIndex)
            index.drop()
        index.close()


def reference(
    ids: list[str], vectors: np.ndarray, queries: np.ndarray, k: int, metric: str
) -> tuple[list[list[str]], list[list[float]]]:
    """Brute force in float64 (exact for small integers) and Python's sort."""
    if metric == "cosine":
        vectors, queries = l2_normalise(vectors), l2_normalise(queries)
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    hits = [order_hits(ids, row.tolist())[:k] for row in scores]
    return [[id_ for id_, _ in row] for row in hits], [[s for _, s in row] for row in hits]


def integer_data(rng: np.random.Generator, n: int, dim: int = 6) -> np.ndarray:
    """Entries in -2..2: scores are small integers, exact in float32, with many ties."""
    return rng.integers(-2, 3, (n, dim)).astype(np.float32)


def make_ids(rng: np.random.Generator, n: int) -> list[str]:
    # mixed prefixes and unpadded numbers, so string order differs from numeric order
    prefixes = np.array(["a", "b", "ab", "B", "img_", "é"])
    numbers = rng.permutation(n * 3)[:n]
    return [f"{prefixes[i % len(prefixes)]}{number}" for i, number in enumerate(numbers)]


def assert_exact(got: tuple[list[list[str]], np.ndarray], want: tuple[list, list]) -> None:
    got_ids, got_scores = got
    want_ids, want_scores = want
    assert got_ids == want_ids
    assert got_scores.dtype == np.float32
    np.testing.assert_array_equal(got_scores, np.array(want_scores, dtype=np.float32))


def assert_close(
    got: tuple[list[list[str]], np.ndarray],
    want: tuple[list, list],
    full_scores: list[dict[str, float]],
    atol: float = 1e-5,
) -> None:
    """Same scores to float rounding; an id may differ from the reference only where the two
    candidates' reference scores are within rounding of each other."""
    got_ids, got_scores = got
    want_ids, want_scores = want
    np.testing.assert_allclose(got_scores, np.array(want_scores), atol=atol)
    for got_row, want_row, want_row_scores, scores in zip(
        got_ids, want_ids, want_scores, full_scores, strict=True
    ):
        assert len(got_row) == len(set(got_row)) == len(want_row)
        for got_id, want_id, want_score in zip(got_row, want_row, want_row_scores, strict=True):
            assert got_id == want_id or abs(scores[got_id] - want_score) <= atol


@pytest.mark.parametrize("k", [1, 5, 17, 300])
def test_integer_vectors_exact_order_with_ties(make_index, k: int) -> None:
    rng = np.random.default_rng(k)
    ids, vectors = make_ids(rng, 300), integer_data(rng, 300)
    queries = integer_data(rng, 40)
    index = make_index(6, metric="ip")
    index.add(ids[:120], vectors[:120])  # in two batches
    index.add(ids[120:], vectors[120:])
    assert len(index) == 300
    assert_exact(index.search(queries, k), reference(ids, vectors, queries, k, "ip"))


@pytest.mark.parametrize("k", [1, 10, 100])
def test_cosine_random_vectors(make_index, k: int) -> None:
    rng = np.random.default_rng(100 + k)
    ids = make_ids(rng, 500)
    vectors = rng.standard_normal((500, 32)).astype(np.float32) * rng.uniform(0.1, 10, (500, 1))
    queries = rng.standard_normal((60, 32)).astype(np.float32)
    index = make_index(32)
    index.add(ids, vectors)
    got = index.search(queries, k)
    want = reference(ids, vectors, queries, k, "cosine")
    full = [
        dict(zip(r_ids, r_scores, strict=True))
        for r_ids, r_scores in zip(
            *reference(ids, vectors, queries, len(ids), "cosine"), strict=True
        )
    ]
    assert_close(got, want, full)
    assert np.all(np.diff(got[1], axis=1) <= 0)  # scores never increase down a ranking
    # cosine scores are bounded by 1 whatever the vectors' norms
    assert np.all(np.abs(got[1]) <= 1 + 1e-6)


def test_identical_vectors_tie_and_break_by_id_descending(make_index) -> None:
    rng = np.random.default_rng(1)
    tied = ["a2", "a10", "b1", "a1", "b10", "B3", "a", "b", "a20", "zz", "é1", "Z"]
    others = [f"other{i}" for i in range(40)]
    shared = rng.standard_normal(16).astype(np.float32)
    vectors = np.concatenate([np.tile(shared, (len(tied), 1)), np.zeros((40, 16), np.float32)])
    vectors[len(tied) :, 0] = -1.0  # clearly worse than the tied group for the query below
    order = rng.permutation(len(vectors))  # store in a shuffled order
    index = make_index(16)
    index.add([(tied + others)[i] for i in order], vectors[order])
    by_id_descending = sorted(tied, reverse=True)  # 'é1', 'zz', 'b10', 'b1', 'b', ...
    for k in range(1, len(tied) + 1):  # the boundary picks the largest ids, in order
        ids, scores = index.search(shared, k)
        assert ids == [by_id_descending[:k]]
        assert len(set(scores[0].tolist())) == 1
    # stored in any position, identical vectors score identically in a batch of queries too
    queries = rng.standard_normal((300, 16)).astype(np.float32)
    ids, scores = index.search(queries, len(tied) + 40)
    for row_ids, row_scores in zip(ids, scores, strict=True):
        tied_scores = {
            s for id_, s in zip(row_ids, row_scores.tolist(), strict=True) if id_ in tied
        }
        assert len(tied_scores) == 1
        positions = [row_ids.index(id_) for id_ in by_id_descending]
        assert positions == sorted(positions)


def test_zero_vectors_and_zero_query_score_zero(make_index) -> None:
    index = make_index(4)
    ids = ["a2", "a10", "b1", "c"]
    vectors = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [-1, 0, 0, 0]], np.float32)
    index.add(ids, vectors)
    got_ids, scores = index.search(np.array([1, 0, 0, 0], np.float32), 4)
    assert got_ids == [["b1", "a2", "a10", "c"]]
    np.testing.assert_array_equal(scores, [[1, 0, 0, -1]])
    got_ids, scores = index.search(np.zeros(4, np.float32), 3)  # everything ties at 0
    assert got_ids == [["c", "b1", "a2"]]
    np.testing.assert_array_equal(scores, np.zeros((1, 3)))


def test_batched_queries_equal_single_queries(make_index) -> None:
    rng = np.random.default_rng(2)
    ids, vectors = make_ids(rng, 400), integer_data(rng, 400, dim=8)
    queries = integer_data(rng, 700, dim=8)
    index = make_index(8, metric="ip")
    index.add(ids, vectors)
    batch_ids, batch_scores = index.search(queries, 25)
    assert len(batch_ids) == 700 and batch_scores.shape == (700, 25)
    for i in range(0, 700, 70):
        single_ids, single_scores = index.search(queries[i], 25)
        assert single_ids == [batch_ids[i]]
        np.testing.assert_array_equal(single_scores[0], batch_scores[i])
    assert_exact((batch_ids, batch_scores), reference(ids, vectors, queries, 25, "ip"))


def test_k_larger_than_index_returns_everything(make_index) -> None:
    rng = np.random.default_rng(3)
    ids, vectors = make_ids(rng, 7), integer_data(rng, 7)
    queries = integer_data(rng, 3)
    index = make_index(6, metric="ip")
    index.add(ids, vectors)
    got = index.search(queries, 1000)
    assert got[1].shape == (3, 7)
    assert_exact(got, reference(ids, vectors, queries, 7, "ip"))


def test_empty_index(make_index) -> None:
    index = make_index(5)
    assert len(index) == 0
    ids, scores = index.search(np.ones((3, 5), np.float32), 10)
    assert ids == [[], [], []]
    assert scores.shape == (3, 0) and scores.dtype == np.float32
    index.add(["x"], np.ones((1, 5), np.float32))
    index.delete(["x"])
    assert index.search(np.ones(5, np.float32), 1)[0] == [[]]


@pytest.mark.parametrize("k", [0, -1, 2.5, None, True])
def test_invalid_k(make_index, k) -> None:
    index = make_index(3)
    index.add(["a"], np.ones((1, 3), np.float32))
    with pytest.raises(CbirError):
        index.search(np.ones(3, np.float32), k)


def test_duplicate_ids_are_refused_and_nothing_is_added(make_index) -> None:
    index = make_index(2)
    index.add(["a", "b"], np.eye(2, dtype=np.float32))
    with pytest.raises(CbirError, match="'c'"):  # twice in one batch
        index.add(["c", "d", "c"], np.ones((3, 2), np.float32))
    with pytest.raises(CbirError, match="'b'"):  # already present
        index.add(["e", "b"], np.ones((2, 2), np.float32))
    assert len(index) == 2
    assert sorted(index.search(np.ones(2, np.float32), 10)[0][0]) == ["a", "b"]


def test_dimension_mismatch_is_a_clear_error(make_index) -> None:
    index = make_index(4)
    with pytest.raises(DimensionMismatchError, match="4-d"):
        index.add(["a"], np.ones((1, 5), np.float32))
    index.add(["a"], np.ones((1, 4), np.float32))
    with pytest.raises(DimensionMismatchError, match="4-d"):
        index.search(np.ones((2, 3), np.float32), 1)
    with pytest.raises(DimensionMismatchError):
        index.add(["b"], np.full((1, 4), np.nan, np.float32))
    with pytest.raises(CbirError):  # as many ids as vectors
        index.add(["b", "c"], np.ones((1, 4), np.float32))
    assert len(index) == 1


def test_delete_removes_and_ignores_unknown_ids(make_index) -> None:
    rng = np.random.default_rng(4)
    ids, vectors = make_ids(rng, 200), integer_data(rng, 200)
    queries = integer_data(rng, 30)
    index = make_index(6, metric="ip")
    index.add(ids, vectors)
    doomed = set(ids[::3])
    assert index.delete([*sorted(doomed), "not-there"]) == len(doomed)
    assert index.delete(sorted(doomed)) == 0  # already gone
    assert len(index) == 200 - len(doomed)
    kept = [i for i, id_ in enumerate(ids) if id_ not in doomed]
    got = index.search(queries, 200)
    assert not doomed & {id_ for row in got[0] for id_ in row}
    want = reference([ids[i] for i in kept], vectors[kept], queries, 200, "ip")
    assert_exact(got, want)
    # a deleted id can be added again, with a new vector
    index.add([ids[0]], vectors[1:2])
    assert len(index) == 200 - len(doomed) + 1
    assert ids[0] in index.search(vectors[1], 200)[0][0]


def test_ids_lists_what_the_index_holds(make_index) -> None:
    index = make_index(3)
    index.add(["a", "b", "c"], np.eye(3, dtype=np.float32))
    index.delete(["b"])
    assert sorted(index.ids()) == ["a", "c"]


def test_a_local_index_copy_is_independent_and_searches_alike(make_index) -> None:
    index = make_index(6)
    if index.keeps_data:
        pytest.skip("a server's index is shared, never copied")
    rng = np.random.default_rng(7)
    vectors, queries = rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=(3, 6))
    ids = [f"v{i:02d}" for i in range(40)]
    index.add(ids, vectors)
    twin = index.copy()
    assert (
        twin.search(queries.astype(np.float32), 5)[0]
        == index.search(queries.astype(np.float32), 5)[0]
    )
    twin.add(["extra"], queries[:1].astype(np.float32))
    twin.delete(["v00", "v01"])
    assert sorted(index.ids()) == ids  # the original is untouched
    assert index.search(queries[:1].astype(np.float32), 1)[0] != [["extra"]]
    assert twin.search(queries[:1].astype(np.float32), 1)[0] == [["extra"]]
    assert "v00" not in twin.ids() and len(twin) == 39
