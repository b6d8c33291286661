"""Milvus backend over Milvus Lite (a local .db file, no server): what the contract suite
does not cover. The same code serves a Milvus server through an http:// uri."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from cbir.errors import CbirError, DimensionMismatchError
from cbir.index import create_index
from cbir.index.milvus import MAX_NQ
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


@pytest.mark.parametrize("settings", [{"index": "IVF_FLAT", "nlist": 4, "nprobe": 4},
                                      {"index": "HNSW", "M": 8, "ef": 200}])  # fmt: skip
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
    with pytest.raises(CbirError, match="IVF_PQ"):
        _open(tmp_path, index="IVF_PQ")
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
