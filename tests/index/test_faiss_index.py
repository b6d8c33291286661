"""FaissIndex specifics: structures chosen by spec, tombstones, persistence, recall, threads.

The VectorIndex contract itself (ordering, ties, errors) runs in test_contract.py."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from cbir.errors import CbirError, CollectionError, UnknownNameError
from cbir.index import create_index
from cbir.index import faiss_index as faiss_module
from cbir.index import spec as spec_module
from cbir.index.base import VectorIndex
from cbir.index.embedded import ExactIndex
from cbir.index.faiss_index import FaissIndex
from cbir.index.spec import parse_spec
from cbir.speed.data import Mixture
from cbir.speed.measure import recall

# Small structures that build in milliseconds; IVF-PQ trains from 39 * 16 = 624 vectors.
SPECS = {
    "flat": ("flat", ""),
    "hnsw": ("hnsw:M=8,ef_construction=40", "ef=64"),
    "ivfpq": ("ivfpq:nlist=4,m=4,nbits=4", "nprobe=4,k_factor=8"),
}


def clustered(n: int, dim: int = 16, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    mixture = Mixture(dim, clusters=16, seed=seed)
    return [f"id{i:05d}" for i in range(n)], mixture.sample(n, 0), mixture.sample(40, 1)


def filled(kind: str, n: int = 1000, dim: int = 16) -> tuple[FaissIndex, list[str], np.ndarray]:
    ids, vectors, queries = clustered(n, dim)
    index = FaissIndex(dim, index=SPECS[kind][0], search=SPECS[kind][1])
    index.add(ids[: n // 2], vectors[: n // 2])  # incremental adds
    index.add(ids[n // 2 :], vectors[n // 2 :])
    return index, ids, queries


def assert_same_results(a: VectorIndex, b: VectorIndex, queries: np.ndarray, k: int) -> None:
    """Same ids; same scores bit for bit, or to float rounding against ExactIndex (a BLAS
    product rounds differently from FaissIndex's row-by-row sums)."""
    got, want = a.search(queries, k), b.search(queries, k)
    assert got[0] == want[0]
    if isinstance(b, ExactIndex):
        np.testing.assert_allclose(got[1], want[1], atol=1e-6)
    else:
        np.testing.assert_array_equal(got[1], want[1])


# --- construction and the registry --------------------------------------------------------
def test_registered_as_faiss_with_auto_default() -> None:
    index = create_index("faiss", dim=8)
    assert isinstance(index, FaissIndex) and isinstance(index, VectorIndex)
    assert (index.spec, index.active) == (parse_spec("auto"), parse_spec("flat"))
    assert index.settings == {"index": "auto", "search": "ef=128"}


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"index": "annoy"}, UnknownNameError, "auto, flat, hnsw, ivfpq"),
        ({"index": "hnsw", "search": "nprobe=3"}, UnknownNameError, "valid parameters: ef"),
        ({"index": "ivfpq:m=5"}, CbirError, r"must divide the dimension 16; try one of \[1, 2"),
        ({"metric": "l2"}, CbirError, "metric"),
    ],
)
def test_invalid_settings(settings: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        FaissIndex(16, **settings)


@pytest.mark.parametrize("kind", SPECS)
def test_structure_and_exact_scores(kind: str) -> None:
    index, ids, queries = filled(kind)
    assert index.active == parse_spec(SPECS[kind][0])
    exact = ExactIndex(16)
    exact.add(ids, index._stored_vectors())
    got_ids, got_scores = index.search(queries, 10)
    # every returned score is the true cosine of that id, in trec_eval order
    true = dict(zip(ids, range(len(ids)), strict=True))
    for row_ids, row_scores, query in zip(got_ids, got_scores, queries, strict=True):
        cosines = exact.scores(query)[0][[true[i] for i in row_ids]]
        np.testing.assert_allclose(row_scores, cosines, atol=1e-6)
        assert list(row_scores) == sorted(row_scores, reverse=True)
    assert recall(got_ids, exact.search(queries, 10)[0]) >= 0.9


def test_auto_grows_from_flat_into_hnsw(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_module, "AUTO_HNSW_BYTES", 4 * 16 * 600)  # 600 vectors of 16-d
    ids, vectors, queries = clustered(1000)
    index = FaissIndex(16, search="ef=1000")  # ef >= n: exact on this data
    index.add(ids[:599], vectors[:599])
    assert index.active.kind == "flat"
    index.add(ids[599:], vectors[599:])
    assert index.active == parse_spec("hnsw")  # with the default build parameters
    exact = ExactIndex(16)
    exact.add(ids, vectors)
    assert_same_results(index, exact, queries, 20)
    # deleting below the threshold keeps the graph; only a compaction may choose again
    index.delete(ids[:450])
    assert index.active.kind == "flat" and index.tombstones == 0  # 45% gone: compacted
    index.add(ids[:10], vectors[:10])
    assert index.active.kind == "flat"


def test_ivfpq_trains_once_it_has_enough_vectors() -> None:
    ids, vectors, _ = clustered(700)
    index = FaissIndex(16, index=SPECS["ivfpq"][0])
    index.add(ids[:600], vectors[:600])
    assert index.active.kind == "flat"  # 600 < 39 * 16
    index.add(ids[600:], vectors[600:])
    assert index.active.kind == "ivfpq" and len(index) == 700


def test_search_parameters_change_without_rebuild() -> None:
    index, _, queries = filled("hnsw")
    index.set_search("ef=5")
    assert index.search_params == {"ef": 5}
    assert index.settings == {"index": "hnsw:M=8,ef_construction=40", "search": "ef=5"}
    assert len(index.search(queries, 30)[0][0]) == 30  # ef is raised to what k needs
    with pytest.raises(UnknownNameError):
        index.set_search("nprobe=2")


def test_queries_the_structure_cannot_fill_are_scanned_exactly() -> None:
    # one probed list of two cannot hold every vector: k = everything forces the exact scan
    ids, vectors, queries = clustered(700)
    index = FaissIndex(16, index=SPECS["ivfpq"][0], search="nprobe=1,k_factor=1")
    index.add(ids, vectors)
    exact = ExactIndex(16)
    exact.add(ids, index._stored_vectors())
    assert_same_results(index, exact, queries[:3], 700)


@pytest.mark.parametrize("dim", [5, 7, 64])
def test_identical_vectors_score_identically_across_blocks(
    dim: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(faiss_module, "BLOCK_FLOATS", dim * 7)  # 7 candidates per block
    rng = np.random.default_rng(dim)
    vectors = rng.standard_normal((300, dim)).astype(np.float32)
    copies = np.arange(3, 300, 11)
    vectors[copies] = vectors[0]
    index = FaissIndex(dim, index="flat")
    index.add([f"d{i:03d}" for i in range(300)], vectors)
    twins = {f"d{i:03d}" for i in [0, *copies]}
    ids, scores = index.search(rng.standard_normal((40, dim)).astype(np.float32), 300)
    for row_ids, row_scores in zip(ids, scores, strict=True):
        assert (
            len({s for i, s in zip(row_ids, row_scores.tolist(), strict=True) if i in twins}) == 1
        )
        twin_ids = [i for i in row_ids if i in twins]
        assert twin_ids == sorted(twin_ids, reverse=True)  # tied: larger id first


# --- deletes --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", SPECS)
def test_deleted_ids_are_never_returned(kind: str, tmp_path: Path) -> None:
    index, ids, queries = filled(kind)
    doomed = set(ids[::6])  # 17%: tombstones, below the compaction share
    assert index.delete([*sorted(doomed), "unknown"]) == len(doomed)
    assert index.delete(sorted(doomed)) == 0
    assert index.tombstones == len(doomed) and len(index) == 1000 - len(doomed)
    assert doomed.isdisjoint(index.ids()) and ids[1] in index and ids[0] not in index
    for k in (10, 1000):
        found = {id_ for row in index.search(queries, k)[0] for id_ in row}
        assert doomed.isdisjoint(found)
    assert index.search(queries, 1000)[1].shape == (40, 1000 - len(doomed))

    index.save(tmp_path)  # tombstones survive a save and a load
    loaded = FaissIndex.load(tmp_path)
    assert loaded.tombstones == len(doomed) and loaded.ids() == index.ids()
    assert_same_results(loaded, index, queries, 50)
    assert doomed.isdisjoint(id_ for row in loaded.search(queries, 1000)[0] for id_ in row)

    more = set(ids[1::6])  # now 33%: compaction rebuilds without them
    loaded.delete(sorted(more))
    assert loaded.tombstones == 0 and len(loaded) == 1000 - len(doomed | more)
    assert (doomed | more).isdisjoint(id_ for row in loaded.search(queries, 1000)[0] for id_ in row)
    loaded.add([ids[0]], queries[:1])  # a deleted id comes back with a new vector
    assert loaded.search(queries[0], 1)[0] == [[ids[0]]]


# --- persistence ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", SPECS)
def test_save_load_round_trip(kind: str, tmp_path: Path) -> None:
    index, ids, queries = filled(kind)
    index.save(tmp_path)
    loaded = FaissIndex.load(tmp_path)
    assert (loaded.dim, loaded.metric, len(loaded)) == (16, "cosine", 1000)
    assert (loaded.spec, loaded.active, loaded.settings) == (
        index.spec,
        index.active,
        index.settings,
    )
    assert loaded.ids() == ids
    assert_same_results(loaded, index, queries, 25)
    loaded.add(["new"], queries[:1])  # a loaded index takes changes
    assert loaded.search(queries[0], 1)[0] == [["new"]]
    assert len(FaissIndex.load(tmp_path)) == 1000  # ... and leaves the files alone
    if kind == "hnsw":
        assert FaissIndex.load(tmp_path, search="ef=300").search_params == {"ef": 300}


def test_saved_files_are_replaced_and_unchanged_structures_reused(tmp_path: Path) -> None:
    index, ids, _ = filled("hnsw")
    index.save(tmp_path)
    first = json.loads((tmp_path / "index.json").read_text())["files"]
    index.delete(ids[:3])  # tombstones only: the faiss file stands
    index.save(tmp_path)
    second = json.loads((tmp_path / "index.json").read_text())["files"]
    assert second["faiss"] == first["faiss"] and second["ids"] != first["ids"]
    index.add(["x"], np.ones((1, 16), np.float32))
    index.save(tmp_path)
    third = json.loads((tmp_path / "index.json").read_text())["files"]
    assert third["faiss"] != first["faiss"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["index.json", *third.values()])


def test_a_save_interrupted_before_its_commit_leaves_the_old_index(tmp_path: Path) -> None:
    index, ids, queries = filled("flat")
    index.save(tmp_path)
    # what a crash after writing the new files but before index.json would leave behind
    (tmp_path / "faiss-0123456789ab.index").write_bytes(b"half a faiss file")
    (tmp_path / "ids-0123456789ab.npy").write_bytes(b"\x93NUMPY")
    loaded = FaissIndex.load(tmp_path)
    assert_same_results(loaded, index, queries, 5)
    loaded.save(tmp_path)  # the next save sweeps the leftovers
    assert len(list(tmp_path.iterdir())) == 3


def test_save_load_empty_index(tmp_path: Path) -> None:
    FaissIndex(4, index="hnsw").save(tmp_path)
    loaded = FaissIndex.load(tmp_path)
    assert len(loaded) == 0 and loaded.active.kind == "hnsw"
    assert loaded.search(np.ones(4, np.float32), 3)[0] == [[]]


def rewrite_meta(**changes):
    def spoil(folder: Path) -> None:
        meta = json.loads((folder / "index.json").read_text())
        (folder / "index.json").write_text(json.dumps({**meta, **changes}))

    return spoil


def saved_file(folder: Path, key: str) -> Path:
    return folder / json.loads((folder / "index.json").read_text())["files"][key]


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda folder: (folder / "index.json").unlink(), "missing"),
        (lambda folder: (folder / "index.json").write_text("{not json"), "cannot read"),
        (rewrite_meta(count="1000"), "malformed"),
        (rewrite_meta(format_version=99), "version"),
        (rewrite_meta(files={"faiss": "../../etc/passwd", "ids": "ids-00.npy"}), "file names"),
        (rewrite_meta(spec="annoy"), "malformed"),
        (rewrite_meta(active="flat"), "inconsistent"),
        (rewrite_meta(count=999), "inconsistent"),
        (rewrite_meta(dim=8), "inconsistent"),
        (rewrite_meta(live=5), "duplicate ids or a wrong count"),
        (lambda folder: saved_file(folder, "faiss").unlink(), "cannot read"),
        (lambda folder: saved_file(folder, "faiss").write_bytes(b"IHNf" + bytes(50)), "cannot"),
        (lambda folder: np.save(saved_file(folder, "ids"), np.arange(1000)), "string ids"),
        (lambda folder: np.save(saved_file(folder, "ids"), np.array(["a"] * 1000)), "duplicate"),
    ],
)
def test_corrupt_or_inconsistent_files(tmp_path: Path, spoil, message: str) -> None:
    filled("hnsw")[0].save(tmp_path)
    spoil(tmp_path)
    with pytest.raises(CollectionError, match=message):
        FaissIndex.load(tmp_path)


# --- quality and threads --------------------------------------------------------------------
def test_recall_at_100_on_clustered_data_at_default_settings() -> None:
    # small enough to build in about a second, large enough that ef=128 visits a minority
    mixture = Mixture(24, clusters=32, seed=3)
    vectors, queries = mixture.sample(6_000, 0), mixture.sample(200, 1)
    ids = [f"v{i}" for i in range(len(vectors))]
    index = FaissIndex(24, index="hnsw")  # M=32, ef_construction=200, searched with ef=128
    index.add(ids, vectors)
    exact = ExactIndex(24)
    exact.add(ids, vectors)
    assert recall(index.search(queries, 100)[0], exact.search(queries, 100)[0]) >= 0.95


def test_faiss_threads_one_for_single_queries_all_for_batches() -> None:
    index, _, queries = filled("hnsw")
    index.search(queries[0], 5)
    assert faiss.omp_get_max_threads() == 1
    index.search(np.repeat(queries, 2, axis=0)[: faiss_module.PARALLEL_FROM], 5)
    assert faiss.omp_get_max_threads() == faiss_module.THREADS
