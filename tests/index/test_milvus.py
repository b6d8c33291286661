"""Milvus backend over Milvus Lite (a local .db file, no server): what the contract suite
does not cover. The same code serves a Milvus server through an http:// uri."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from cbir.errors import CbirError, DimensionMismatchError
from cbir.index import create_index
from cbir.index.milvus import LITE_FLUSH_ROWS, MAX_NQ, MilvusIndex
from tests.index.batching import check_batches_match_the_exact_index
from tests.servers.live import milvus_server_uri  # noqa: F401 (fixture)

pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")


def _open(path: Path, dim: int = 8, **settings):
    return create_index("milvus", dim=dim, uri=str(path / "test.db"), **settings)


def test_collection_persists_and_a_wrong_dimension_is_refused(tmp_path: Path) -> None:
    index = _open(tmp_path, collection="kept")
    index.add(["a", "b"], np.eye(8, dtype=np.float32)[:2])
    index.close()
    again = _open(tmp_path, collection="kept")
    assert len(again) == 2
    assert again.search(np.eye(8, dtype=np.float32)[1], 1)[0] == [["b"]]
    again.close()
    with pytest.raises(DimensionMismatchError, match="kept"):
        _open(tmp_path, dim=4, collection="kept")


@pytest.mark.parametrize("settings", [{"index": "ivf:nlist=4", "search": "nprobe=4"},
                                      {"index": "hnsw:M=8", "search": "ef=200"}])  # fmt: skip
def test_approximate_indexes_find_the_true_neighbours(tmp_path: Path, settings) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    ids = [f"v{i}" for i in range(300)]
    index = _open(tmp_path, collection="approx", **settings)
    index.add(ids, vectors)
    got, scores = index.search(vectors[:20], 5)
    assert [row[0] for row in got] == ids[:20]  # each vector finds itself first
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert index.delete(ids[:10] + ["unknown"]) == 10
    assert len(index) == 290
    index.close()


def test_invalid_settings_and_ids_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CbirError, match="'ivfpq'; choose one of: flat, ivf, hnsw"):
        _open(tmp_path, index="ivfpq")
    index = _open(tmp_path, collection="ids")
    with pytest.raises(CbirError, match="512 bytes"):
        index.add(["x" * 513], np.ones((1, 8), np.float32))
    index.close()


# --- batched, lean searches ------------------------------------------------------------------
def test_batches_answer_as_one_request_and_as_the_exact_index(tmp_path: Path) -> None:
    batched = _open(tmp_path, metric="ip", collection="batched", batch=7)
    check_batches_match_the_exact_index(batched, seed=5)
    batched.close()


def test_invalid_batch_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CbirError, match="batch"):
        _open(tmp_path, batch=0)


@pytest.mark.server
def test_a_batch_the_server_refuses_is_one_clear_error(milvus_server_uri: str) -> None:  # noqa: F811
    index = create_index(
        "milvus", dim=4, uri=milvus_server_uri, collection=f"refused_{uuid.uuid4().hex}",
        batch=MAX_NQ + 1,
    )  # fmt: skip
    try:
        index.add(["a"], np.ones((1, 4), np.float32))
        with pytest.raises(CbirError, match=f"refused a search of {MAX_NQ + 1} queries"):
            index.search(np.ones((MAX_NQ + 1, 4), np.float32), 1)
        index.batch = MAX_NQ  # the same queries, in batches it takes
        assert index.search(np.ones((MAX_NQ + 1, 4), np.float32), 1)[0][-1] == ["a"]
    finally:
        index.drop()
        index.close()


def test_a_large_add_to_milvus_lite_is_sealed_in_parts_and_stays_whole(tmp_path: Path) -> None:
    """Lite seals every LITE_FLUSH_ROWS rows as they are added (bounding its memory): every
    row stays searchable and deletable across the parts."""
    rows = 2 * LITE_FLUSH_ROWS + 500
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((rows, 4)).astype(np.float32)
    ids = [f"r{i}" for i in range(rows)]
    index = _open(tmp_path, dim=4, collection="parts")
    index.add(ids, vectors)
    assert len(index) == rows
    probe = [0, LITE_FLUSH_ROWS - 1, LITE_FLUSH_ROWS, rows - 1]  # either side of each seal
    found, scores = index.search(vectors[probe], 1)
    assert found == [[ids[i]] for i in probe]
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert index.delete([ids[i] for i in probe]) == len(probe)
    assert len(index) == rows - len(probe)
    index.close()


@pytest.mark.server
def test_compact_returns_once_the_server_serves_the_indexed_segments(
    milvus_server_uri: str,  # noqa: F811
) -> None:
    index = create_index(
        "milvus", dim=8, uri=milvus_server_uri, collection=f"compact_{uuid.uuid4().hex}",
        index="hnsw:M=8", search="ef=64",
    )  # fmt: skip
    try:
        vectors = np.random.default_rng(4).standard_normal((2_000, 8)).astype(np.float32)
        ids = [f"c{i}" for i in range(2_000)]
        index.add(ids, vectors)
        index.compact(timeout=120)
        # every row in a sealed segment the query node searches through its HNSW index,
        # none left in the growing segment
        loaded = index._client.list_loaded_segments(index.collection)
        assert sum(segment.num_rows for segment in loaded if segment.index_id) == 2_000
        found, _ = index.search(vectors[:50], 1)
        assert [row[0] for row in found] == ids[:50]
    finally:
        index.drop()
        index.close()


@pytest.mark.parametrize(
    ("stored", "today"),
    [
        ({"uri": "milvus.db", "collection": "c"}, {"uri": "milvus.db", "collection": "c"}),
        ({"index": "FLAT", "nprobe": 4}, {"index": "flat", "search": ""}),
        ({"index": "IVF_FLAT"}, {"index": "ivf:nlist=128", "search": "nprobe=16"}),
        (
            {"index": "HNSW", "M": 8, "ef": 64},
            {"index": "hnsw:M=8,ef_construction=200", "search": "ef=64"},
        ),
        ({"index": "hnsw:M=8"}, {"index": "hnsw:M=8"}),
    ],
)
def test_old_settings_read_as_specs_with_the_old_defaults(stored: dict, today: dict) -> None:
    assert MilvusIndex.upgrade(stored) == today


def test_a_collection_written_with_old_settings_searches_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HNSW collection made with the old vocabulary opens, through settings resolution,
    on the same Lite file and collection, with the same index and search parameters."""
    from cbir.index.settings import settings_at_open

    monkeypatch.delenv("CBIR_MILVUS_URI", raising=False)  # it would beat the stored file

    old = {"uri": "milvus.db", "collection": "old", "index": "HNSW", "M": 8, "ef": 64}
    settings, location = settings_at_open("milvus", old, tmp_path)
    assert location == "milvus milvus.db old" and settings["uri"] == str(tmp_path / "milvus.db")
    index = create_index("milvus", dim=8, **settings)
    assert index.index_type == "HNSW" and index._search_params["params"] == {"ef": 64}
    vectors = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    index.add([f"v{i}" for i in range(50)], vectors)
    assert [row[0] for row in index.search(vectors[:5], 3)[0]] == ["v0", "v1", "v2", "v3", "v4"]
    index.close()
