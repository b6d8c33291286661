import json
import sqlite3
import threading

import numpy as np
import pytest

from cbir.collection import MANIFEST, METADATA, Collection, ImageRecord
from cbir.errors import CbirError, CollectionError, DimensionMismatchError
from cbir.features import get_extractor
from cbir.image_store import sha256_bytes
from cbir.locking import CollectionBusyError

DIM = 256  # gch


def records(n: int, prefix: str = "img", start: int = 0) -> list[ImageRecord]:
    return [
        ImageRecord(
            f"{prefix}-{i}", f"/data/{prefix}-{i}.png", "cat" if i % 2 else "dog", f"{i:064x}"
        )
        for i in range(start, start + n)
    ]


def random_vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, DIM), dtype=np.float32)


@pytest.fixture
def folder(tmp_path):
    return tmp_path / "col"


@pytest.fixture
def collection(folder):
    created = Collection.create(folder, get_extractor("gch"))
    yield created
    created.close()


def test_add_search_and_reopen(collection, folder):
    vectors = random_vectors(6)
    assert collection.add(records(6), vectors) == 6
    hits = collection.search_vectors(vectors[2:3], k=3)[0]
    assert hits[0].id == "img-2" and hits[0].label == "dog" and hits[0].path == "/data/img-2.png"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    collection.close()
    with Collection.open(folder) as reopened:
        assert len(reopened) == 6
        assert reopened.search_vectors(vectors[2:3], k=1)[0][0].id == "img-2"
        assert reopened.stats()["labels"] == {"cat": 3, "dog": 3}
        manifest = json.loads((folder / MANIFEST).read_text())
        assert manifest["counts"]["images"] == 6 and manifest["extractor"]["name"] == "gch"
        assert manifest["generation"] == reopened.stats()["generation"] == 1


def test_duplicate_id_adds_nothing(collection):
    collection.add(records(2), np.ones((2, DIM), np.float32))
    with pytest.raises(CollectionError, match="already in the collection.*'img-0', 'img-1'"):
        collection.add(records(3), np.ones((3, DIM), np.float32))
    with pytest.raises(CollectionError, match="same id appears twice"):
        collection.add(records(1, "x") * 2, np.ones((2, DIM), np.float32))
    assert len(collection) == 2 and len(collection.index) == 2


def test_replace_swaps_an_entry_for_its_new_content(collection):
    collection.add(records(3), random_vectors(3))
    changed = [ImageRecord("img-1", "/data/img-1.png", "bird", "f" * 64)]
    new_vector = random_vectors(1, seed=5)
    assert collection.add(changed, new_vector, replace=True) == 1
    assert len(collection) == 3 and collection.get("img-1").label == "bird"
    assert collection.search_vectors(new_vector, k=1)[0][0].id == "img-1"


def test_wrong_dimension_is_refused_with_the_collections_extractor_named(collection):
    with pytest.raises(DimensionMismatchError, match="built with extractor 'gch' \\(256-d\\)"):
        collection.add(records(2), np.ones((2, 10), np.float32))
    collection.add(records(1), random_vectors(1))
    with pytest.raises(DimensionMismatchError, match="queries have shape \\(1, 324\\)"):
        collection.search_vectors(np.ones((1, 324), np.float32))
    assert len(collection) == 1


def test_delete_is_for_good_here_after_reopen_and_in_a_refreshing_reader(collection, folder):
    vectors = np.eye(4, DIM, dtype=np.float32)
    collection.add(records(4), vectors)
    reader = Collection.open(folder, read_only=True)
    assert len(reader.search_vectors(vectors, k=4)[0]) == 4  # loads its index
    assert collection.delete(["img-1", "missing"]) == 1
    found = [hit.id for hit in collection.search_vectors(vectors, k=4)[0]]
    assert "img-1" not in found and len(found) == 3
    # Before its refresh the reader's snapshot still holds the vector, yet never returns it.
    assert "img-1" not in [hit.id for hit in reader.search_vectors(vectors[1:2], k=4)[0]]
    assert reader.refresh() is True and len(reader.index) == 3
    assert "img-1" not in [hit.id for hit in reader.search_vectors(vectors, k=4)[0]]
    reader.close()
    collection.close()
    with Collection.open(folder) as reopened:
        assert "img-1" not in reopened.known_ids() and len(reopened.index) == 3


def test_refresh_picks_up_adds_from_another_writer(collection, folder):
    collection.add(records(2), random_vectors(2))
    reader = Collection.open(folder, read_only=True)
    assert reader.refresh() is False
    assert len(reader.index) == 2
    collection.add(records(3, start=2), random_vectors(3, seed=1))
    assert reader.refresh() is True and reader.refresh() is False
    assert len(reader.index) == 5 and reader.generation == collection.generation
    replaced = [ImageRecord("img-0", None, "new", "e" * 64)]
    collection.add(replaced, random_vectors(1, seed=9), replace=True)
    assert reader.refresh() is True
    assert reader.search_vectors(random_vectors(1, seed=9), k=1)[0][0].id == "img-0"
    assert sorted(reader.index.ids()) == sorted(collection.known_ids())
    reader.close()


def test_a_reader_started_from_another_catches_up_from_its_copy(collection, folder):
    """A server's second snapshot starts from a copy of the first's index (no reload from the
    database) and catches up with later commits, adds and deletes alike, on its own."""
    collection.add(records(4), random_vectors(4))
    first = Collection.open(folder, read_only=True)
    assert len(first.index) == 4
    collection.add(records(2, start=4), random_vectors(2, seed=1))
    collection.delete(["img-0"])
    second = Collection.open(folder, read_only=True)
    second.start_from(first)
    assert sorted(second.index.ids()) == sorted(first.index.ids())  # the copy, as first was
    assert second.refresh() is True
    assert sorted(second.index.ids()) == sorted(collection.known_ids())
    assert len(first.index) == 4  # the original is untouched
    queries = random_vectors(3, seed=1)
    with Collection.open(folder, read_only=True) as fresh:
        assert second.search_vectors(queries, k=5) == fresh.search_vectors(queries, k=5)
    first.close()
    second.close()


def test_a_readers_lookups_never_wait_for_its_search_mutex(collection, folder):
    """A read-only collection reads rows through each thread's own connection: a lookup
    goes through while a search holds the collection's mutex."""
    collection.add(records(2), random_vectors(2))
    reader = Collection.open(folder, read_only=True)
    found: list = []
    with reader._store.mutex:  # as a search's pass over the index holds it
        thread = threading.Thread(target=lambda: found.append(reader.get("img-1")))
        thread.start()
        thread.join(timeout=10)
        assert not thread.is_alive() and found[0].id == "img-1"
    reader.close()


def test_stored_bytes_commit_with_their_rows_and_go_with_the_last_one(collection):
    data = b"\x89PNG not really"
    digest = sha256_bytes(data)
    record = ImageRecord("up", None, None, digest)
    collection.add([record], random_vectors(1), blobs=[data])
    assert collection.image_bytes("up") == data and collection.images.get(digest) == data
    collection.delete(["up"])
    assert collection.images.get(digest) is None and collection.image_bytes("up") is None
    assert collection.images.put(data) == digest and collection.images.get(digest) == data
    collection.images.discard(digest)
    assert collection.images.get(digest) is None


def test_read_only_never_writes_nor_locks(collection, folder):
    with Collection.open(folder, read_only=True) as reader:
        with pytest.raises(CollectionError, match="opened read-only"):
            reader.add(records(1), random_vectors(1))
        with pytest.raises(CollectionError, match="opened read-only"):
            reader.delete(["img-0"])
        with pytest.raises(CollectionError, match="opened read-only"):
            reader.images.put(b"x")
    with pytest.raises(CbirError, match="both read-only and as the writer"):
        Collection.open(folder, read_only=True, writer=True)


def test_a_second_writer_waits_then_gets_a_clear_error(collection, folder):
    with pytest.raises(CollectionBusyError, match=r"being written by process \d+.*0.2 s"):
        Collection.open(folder, writer=True, lock_timeout=0.2)
    casual = Collection.open(folder, lock_timeout=0.1)  # opens: it locks only to write
    with pytest.raises(CollectionBusyError):
        casual.add(records(1), random_vectors(1))
    collection.close()  # the writer leaves: the lock is free
    assert casual.add(records(1), random_vectors(1)) == 1
    casual.close()
    with Collection.open(folder, writer=True, lock_timeout=0) as writer:
        assert len(writer) == 1


def test_manifest_behind_the_database_is_repaired_by_the_next_writer(collection, folder):
    collection.add(records(3), random_vectors(3))
    collection.close()
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["counts"]["images"], manifest["generation"] = 0, 0  # as a crash can leave it
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with Collection.open(folder, writer=True):
        pass
    repaired = json.loads((folder / MANIFEST).read_text())
    assert repaired["counts"]["images"] == 3 and repaired["generation"] == 1


def test_create_refuses_an_existing_collection(collection, folder):
    with pytest.raises(CollectionError, match="already holds a collection"):
        Collection.create(folder, get_extractor("gch"))


def test_open_or_create_opens_what_exists(collection, folder):
    collection.close()
    with Collection.open_or_create(folder, lambda: get_extractor("hog")) as again:
        assert again.manifest["extractor"]["name"] == "gch"


def test_extractor_state_that_disagrees_with_the_manifest_is_refused(collection, folder):
    collection.close()
    params = folder / "extractor" / "params.json"
    state = json.loads(params.read_text())
    state["params"]["bins"] = 64
    params.write_text(json.dumps(state))
    with pytest.raises(CollectionError, match="params.json missing, added or changed"):
        Collection.open(folder)  # the manifest pins every file of the fitted state
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["extractor_files"]  # as a collection made before checksums were kept
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CollectionError, match="the collection is damaged"):
        Collection.open(folder)
    params.write_text("{not json")
    with pytest.raises(CollectionError, match="extractor state in extractor/ is unreadable"):
        Collection.open(folder)


def test_a_collection_made_before_a_parameter_existed_still_opens(collection, folder):
    collection.close()
    old = {"name": "gch", "params": {"bins": 256, "image_size": 32}}  # gch before `space`
    (folder / "extractor" / "params.json").write_text(json.dumps(old))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["extractor"] = old
    del manifest["extractor_files"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with Collection.open(folder) as reopened:  # the old gray histogram, as it was made
        assert reopened.extractor.params["space"] == "gray"
    manifest["extractor"]["params"]["bins"] = 64  # a parameter the manifest does name, changed
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CollectionError, match="the collection is damaged"):
        Collection.open(folder)


@pytest.mark.parametrize("saved_size", [{"image_size": 0}, {}])
def test_a_gch_collection_made_before_auto_image_sizes_stays_at_32x32(
    collection, folder, saved_size
):
    # an HSV gch saved with image_size 0 (then: "whatever size the pipeline decodes to",
    # 32x32) or with no image_size at all keeps describing queries as its vectors were made
    collection.close()
    old = {"name": "gch", "params": {**get_extractor("gch").params, **saved_size}}
    old["params"] = {key: value for key, value in old["params"].items() if key != "image_size"}
    old["params"].update(saved_size)
    (folder / "extractor" / "params.json").write_text(json.dumps(old))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["extractor"] = old
    del manifest["extractor_files"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with Collection.open(folder) as reopened:
        assert reopened.extractor.input_size == (32, 32)


def test_newer_schema_is_refused(collection, folder):
    manifest_path = folder / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CollectionError, match="schema version 99.*Upgrade cbir"):
        Collection.open(folder)
    manifest["schema_version"] = 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CollectionError, match="schema version 1, from an older cbir"):
        Collection.open(folder)


def test_not_a_collection(tmp_path):
    with pytest.raises(CollectionError, match="not a collection"):
        Collection.open(tmp_path)


def test_database_is_wal_and_fully_synced(collection, folder):
    conn = sqlite3.connect(folder / METADATA)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert collection._store.db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_missing_or_corrupt_database_is_a_clear_error(collection, folder):
    collection.close()
    (folder / METADATA).rename(folder / "elsewhere.sqlite")
    with pytest.raises(CollectionError, match="metadata.sqlite is missing"):
        Collection.open(folder)
    for leftover in folder.glob(f"{METADATA}-*"):
        leftover.unlink()
    (folder / METADATA).write_bytes(b"not a database " * 1000)
    for read_only in (False, True):
        with pytest.raises(CollectionError, match="metadata.sqlite"):
            Collection.open(folder, read_only=read_only)


def test_backend_settings_are_kept_in_the_manifest(tmp_path):
    with Collection.create(
        tmp_path / "c", get_extractor("gch"), backend_settings={}, metric="ip"
    ) as created:
        assert created.manifest["backend"] == {"name": "embedded", "settings": {}}
    with pytest.raises(CbirError, match="unknown index backend"):
        Collection.create(tmp_path / "d", get_extractor("gch"), backend="nope")
    assert not (tmp_path / "d").exists()
