"""ExactIndex specifics: persistence, corrupt files, the top-k selection, blocks and threads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import cbir.index.embedded as embedded
from cbir.errors import CbirError, CollectionError
from cbir.index import create_index
from cbir.index.base import VectorIndex, l2_normalise
from cbir.index.embedded import ExactIndex, find_duplicate_rows, top_k


def filled_index(n: int = 300, dim: int = 12, metric: str = "cosine", seed: int = 0) -> ExactIndex:
    rng = np.random.default_rng(seed)
    index = ExactIndex(dim, metric)
    index.add([f"doc{i}" for i in range(n)], rng.standard_normal((n, dim)).astype(np.float32))
    return index


def brute_top_k(scores: np.ndarray, k: int, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort every (score, rank) pair of each row in Python."""
    positions = [
        sorted(range(len(row)), key=lambda j: (float(row[j]), rank[j]), reverse=True)[:k]
        for row in scores
    ]
    positions = np.array(positions)
    return positions, np.take_along_axis(scores, positions, axis=1) + np.float32(0.0)


# --- the protocol and the extra accessors ---------------------------------------------------
def test_is_a_vector_index_and_registered_as_embedded() -> None:
    index = create_index("embedded", dim=3)
    assert isinstance(index, ExactIndex)
    assert isinstance(index, VectorIndex)
    assert (index.dim, index.metric) == (3, "cosine")


@pytest.mark.parametrize(("dim", "metric"), [(0, "cosine"), (-3, "ip"), (2.0, "ip"), (4, "l2")])
def test_invalid_construction(dim, metric) -> None:
    with pytest.raises(CbirError):
        ExactIndex(dim, metric)


@pytest.mark.parametrize("ids", ["abc", ["a", 3], ["a", ""], ["a\x00b"], [b"a"]])
def test_invalid_ids(ids) -> None:
    index = ExactIndex(2)
    with pytest.raises(CbirError):
        index.add(ids, np.ones((len(ids), 2), np.float32))
    assert len(index) == 0


def test_accessors_follow_storage_order() -> None:
    index = ExactIndex(2, "ip")
    ids = ["b1", "a10", "a2", "é", "B"]
    index.add(ids, np.arange(10, dtype=np.float32).reshape(5, 2))
    assert index.ids() == ids
    assert "a2" in index and "zz" not in index
    # rank in ascending string (code point) order: 'B' < 'a10' < 'a2' < 'b1' < 'é'
    assert index.tiebreak_rank.tolist() == [3, 1, 2, 4, 0]
    np.testing.assert_array_equal(index.vectors, np.arange(10).reshape(5, 2))
    with pytest.raises(ValueError):
        index.vectors[0, 0] = 1  # a read-only view
    index.delete(["a10"])
    assert index.ids() == ["b1", "a2", "é", "B"]
    assert index.tiebreak_rank.tolist() == [2, 1, 3, 0]


def test_scores_match_normalised_product() -> None:
    index = filled_index()
    queries = np.random.default_rng(9).standard_normal((5, 12)).astype(np.float32)
    expected = l2_normalise(queries) @ l2_normalise(index.vectors).T
    np.testing.assert_allclose(index.scores(queries), expected, atol=1e-6)
    assert index.scores(queries).shape == (5, 300)


def test_negative_zero_is_stored_as_zero() -> None:
    index = ExactIndex(3, "ip")
    index.add(["a", "b"], np.array([[-0.0, 1, 0], [0.0, 1, -0.0]], np.float32))
    assert not np.signbit(index.vectors).any()
    assert index.duplicates[0].tolist() == [1]


# --- top-k selection ----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 7, 33, 100, 257, 1000])
def test_top_k_equals_brute_force_with_heavy_ties(n: int) -> None:
    rng = np.random.default_rng(n)
    scores = rng.integers(-3, 4, (6, n)).astype(np.float32) / 4
    scores[scores == 0] = rng.choice(np.array([0.0, -0.0], np.float32), (scores == 0).sum())
    rank = rng.permutation(n)
    for k in sorted({1, 2, 5, n // 3, n // 2, n - 1, n, n + 3} - {0}):
        positions, values = top_k(scores, k, rank)  # k > n gives all n
        want_positions, want_values = brute_top_k(scores, k, rank)
        np.testing.assert_array_equal(positions, want_positions)
        np.testing.assert_array_equal(values, want_values)
        assert not np.signbit(values[values == 0]).any()  # -0.0 reported as 0.0


@pytest.mark.parametrize("n", [39, 50, 63])
def test_top_k_of_few_columns_with_a_long_tail(n: int) -> None:
    # 39 columns, k = 1: groups of 8 leave 4 groups and 7 columns over (it raised once)
    rng = np.random.default_rng(n)
    scores = rng.standard_normal((3, n)).astype(np.float32)
    rank = np.arange(n)
    for k in (1, 2, 3):
        positions, values = top_k(scores, k, rank)
        expected = brute_top_k(scores, k, rank)
        np.testing.assert_array_equal(positions, expected[0])
        np.testing.assert_array_equal(values, expected[1])


def test_top_k_on_distinct_scores() -> None:
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((4, 5003)).astype(np.float32)
    rank = rng.permutation(5003)
    for k in (1, 100, 1250):  # groups of 8, 6, and 1 score
        positions, values = top_k(scores, k, rank)
        want = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(positions, want)
        np.testing.assert_array_equal(values, np.take_along_axis(scores, want, axis=1))


def test_blocks_and_threads_give_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    # Integer data: exact scores, so blocks may not change them (with real-valued data BLAS
    # rounds a query's scores differently in different rows of a block, by an ulp or so).
    rng = np.random.default_rng(3)
    index = ExactIndex(8, "ip")
    index.add([f"d{i}" for i in range(500)], rng.integers(-2, 3, (500, 8)).astype(np.float32))
    queries = rng.integers(-2, 3, (90, 8)).astype(np.float32)
    one_block = index.search(queries, 40)
    monkeypatch.setattr(embedded, "BLOCK_BYTES", 4 * len(index) * 7)  # 7 queries per block
    for threads in (1, 2, 3):
        monkeypatch.setattr(embedded, "THREADS", threads)
        ids, scores = index.search(queries, 40)
        assert ids == one_block[0]
        np.testing.assert_array_equal(scores, one_block[1])
    rank = index.tiebreak_rank
    positions, values = brute_top_k(index.scores(queries), 40, rank)
    assert ids == np.array(index.ids())[positions].tolist()
    np.testing.assert_array_equal(scores, values)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_small_batches_scored_by_row_blocks_give_the_same_results(
    monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    # A server's few concurrent queries go through blocks of stored rows on THREADS threads
    # (`_product`); 500 rows in blocks of 16 leave a ragged tail. Integer data: exact scores.
    rng = np.random.default_rng(5)
    index = ExactIndex(8, "ip")
    index.add([f"d{i}" for i in range(500)], rng.integers(-2, 3, (500, 8)).astype(np.float32))
    queries = rng.integers(-2, 3, (embedded.SMALL_BATCH + 1, 8)).astype(np.float32)
    alone = [index.search(query[None], 30) for query in queries]  # one query: one product
    monkeypatch.setattr(embedded, "ROW_BLOCK", 16)
    monkeypatch.setattr(embedded, "THREADS", threads)
    for batch in (queries[:2], queries[:9], queries):  # the last is past SMALL_BATCH
        ids, scores = index.search(batch, 30)
        assert ids == [alone[i][0][0] for i in range(len(batch))]
        np.testing.assert_array_equal(scores, np.concatenate([a[1] for a in alone[: len(batch)]]))


def test_find_duplicate_rows() -> None:
    rng = np.random.default_rng(6)
    vectors = rng.standard_normal((50, 5)).astype(np.float32)
    vectors[[10, 30, 49]] = vectors[3]
    vectors[[20, 21]] = vectors[15]
    vectors[40, 0] = np.nextafter(vectors[3, 0], np.float32(9))  # one ulp away: not a copy
    vectors[40, 1:] = vectors[3, 1:]
    rows, originals = find_duplicate_rows(vectors)
    assert dict(zip(rows.tolist(), originals.tolist(), strict=True)) == {
        10: 3,
        30: 3,
        49: 3,
        20: 15,
        21: 15,
    }
    assert find_duplicate_rows(vectors[:3])[0].size == 0
    assert find_duplicate_rows(np.zeros((0, 5), np.float32))[0].size == 0


# --- persistence --------------------------------------------------------------------------------
def test_duplicates_stay_exact_as_rows_come_and_go() -> None:
    """The row hashes kept across adds and deletes (a server catching up hashes only the new
    rows) find the same duplicates as hashing every row afresh."""
    rng = np.random.default_rng(3)
    pool = rng.integers(-2, 3, size=(6, 4)).astype(np.float32)  # few distinct rows: many copies
    index = ExactIndex(4, metric="ip")
    assert index.duplicates[0].size == 0  # hashes made now, then kept up to date
    for step in range(12):
        ids = [f"s{step}-{i}" for i in range(5)]
        index.add(ids, pool[rng.integers(0, len(pool), size=5)])
        if step % 3 == 2:
            index.delete(rng.choice(index.ids(), size=4, replace=False).tolist())
        expected = find_duplicate_rows(np.array(index.vectors))
        for got, want in zip(index.duplicates, expected, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mmap", [False, True])
def test_save_load_round_trip(tmp_path: Path, mmap: bool) -> None:
    index = filled_index(metric="ip")
    index.delete([f"doc{i}" for i in range(0, 300, 7)])
    index.add(["late"], np.ones((1, 12), np.float32))
    index.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.npy", "index.json", "vectors.npy"]
    meta = json.loads((tmp_path / "index.json").read_text())
    assert (meta["dim"], meta["metric"], meta["count"]) == (12, "ip", len(index))

    loaded = ExactIndex.load(tmp_path, mmap=mmap)
    assert (loaded.dim, loaded.metric, len(loaded)) == (12, "ip", len(index))
    assert loaded.ids() == index.ids()
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    queries = np.random.default_rng(1).standard_normal((20, 12)).astype(np.float32)
    got, want = loaded.search(queries, 15), index.search(queries, 15)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    # a loaded (even memory-mapped) index takes changes and leaves the files alone
    loaded.add(["new"], np.full((1, 12), 2, np.float32))
    assert loaded.delete(["late", "doc1"]) == 2
    assert len(ExactIndex.load(tmp_path)) == len(index)
    loaded.close()


def test_save_load_empty_index(tmp_path: Path) -> None:
    ExactIndex(4).save(tmp_path)
    loaded = ExactIndex.load(tmp_path)
    assert len(loaded) == 0 and loaded.dim == 4
    assert loaded.search(np.ones(4, np.float32), 3)[0] == [[]]


def save_then(tmp_path: Path, spoil) -> Path:
    """Save a small index, then damage it with `spoil(folder)`."""
    filled_index(n=10, dim=3).save(tmp_path)
    spoil(tmp_path)
    return tmp_path


def rewrite_meta(**changes):
    def spoil(folder: Path) -> None:
        meta = json.loads((folder / "index.json").read_text())
        (folder / "index.json").write_text(json.dumps({**meta, **changes}))

    return spoil


def save_npy(name: str, array: np.ndarray, allow_pickle: bool = False):
    return lambda folder: np.save(folder / name, array, allow_pickle=allow_pickle)


def truncate(name: str):
    def spoil(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])

    return spoil


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda folder: (folder / "index.json").unlink(), "missing"),
        (lambda folder: (folder / "vectors.npy").unlink(), "cannot read"),
        (lambda folder: (folder / "index.json").write_text("{not json"), "cannot read"),
        (lambda folder: (folder / "index.json").write_text("[1, 2]"), "malformed"),
        (rewrite_meta(count=11), "inconsistent"),
        (rewrite_meta(dim=4), "inconsistent"),
        (rewrite_meta(dim="3"), "malformed"),
        (rewrite_meta(metric="l2"), "malformed"),
        (rewrite_meta(format_version=99), "version"),
        (truncate("vectors.npy"), "cannot read"),
        (save_npy("vectors.npy", np.zeros((10, 3))), "float64"),
        (save_npy("ids.npy", np.arange(10)), "string ids"),
        (save_npy("ids.npy", np.array(["a", "b"])), "string ids"),
        (save_npy("ids.npy", np.array(["a"] * 10)), "duplicate"),
        (save_npy("ids.npy", np.array(list("abcdefghij"), object), allow_pickle=True), "pickle"),
    ],
)
def test_corrupt_or_inconsistent_files(tmp_path: Path, spoil, message: str) -> None:
    folder = save_then(tmp_path, spoil)
    with pytest.raises(CollectionError, match=message):
        ExactIndex.load(folder)


def test_load_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="no saved index"):
        ExactIndex.load(tmp_path / "nowhere")
