import json

import numpy as np
import pytest

from cbir.collection import MANIFEST, Collection, ImageRecord
from cbir.errors import CollectionError, DimensionMismatchError
from cbir.features import get_extractor


def records(n: int, prefix: str = "img") -> list[ImageRecord]:
    return [
        ImageRecord(
            f"{prefix}-{i}", f"/data/{prefix}-{i}.png", "cat" if i % 2 else "dog", f"{i:064x}"
        )
        for i in range(n)
    ]


@pytest.fixture
def collection(tmp_path):
    created = Collection.create(tmp_path / "col", get_extractor("gch"))
    yield created
    created.close()


def test_add_search_and_reopen(collection, tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.random((6, 256), dtype=np.float32)
    assert collection.add(records(6), vectors) == 6
    hits = collection.search_vectors(vectors[2:3], k=3)[0]
    assert hits[0].id == "img-2" and hits[0].label == "dog" and hits[0].path == "/data/img-2.png"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    collection.close()
    with Collection.open(tmp_path / "col") as reopened:
        assert len(reopened) == 6
        assert reopened.search_vectors(vectors[2:3], k=1)[0][0].id == "img-2"
        assert reopened.stats()["labels"] == {"cat": 3, "dog": 3}
        manifest = json.loads((tmp_path / "col" / MANIFEST).read_text())
        assert manifest["counts"]["images"] == 6 and manifest["extractor"]["name"] == "gch"


def test_duplicate_id_adds_nothing(collection):
    vectors = np.ones((2, 256), np.float32)
    collection.add(records(2), vectors)
    with pytest.raises(CollectionError, match="already in the collection"):
        collection.add(records(3), np.ones((3, 256), np.float32))
    assert len(collection) == 2 and len(collection.index) == 2


def test_wrong_dimension_is_refused(collection):
    with pytest.raises(DimensionMismatchError):
        collection.add(records(2), np.ones((2, 10), np.float32))
    assert len(collection) == 0


def test_delete_removes_from_results(collection):
    vectors = np.eye(4, 256, dtype=np.float32)
    collection.add(records(4), vectors)
    assert collection.delete(["img-1", "missing"]) == 1
    found = [hit.id for hit in collection.search_vectors(vectors, k=4)[0]]
    assert "img-1" not in found and len(found) == 3


def test_vectors_without_committed_metadata_are_dropped_on_open(collection, tmp_path):
    collection.add(records(2), np.ones((2, 256), np.float32))
    # What a crash between the vector write and the metadata commit leaves behind:
    collection.index.add(["ghost"], np.ones((1, 256), np.float32))
    collection._save_index()
    collection.close()
    with Collection.open(tmp_path / "col") as reopened:
        assert len(reopened.index) == 2 and "ghost" not in reopened.index.ids


def test_create_refuses_an_existing_collection(collection, tmp_path):
    with pytest.raises(CollectionError, match="already holds a collection"):
        Collection.create(tmp_path / "col", get_extractor("gch"))


def test_newer_schema_is_refused(collection, tmp_path):
    manifest_path = tmp_path / "col" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CollectionError, match="schema version 99.*Upgrade cbir"):
        Collection.open(tmp_path / "col")


def test_not_a_collection(tmp_path):
    with pytest.raises(CollectionError, match="not a collection"):
        Collection.open(tmp_path)
