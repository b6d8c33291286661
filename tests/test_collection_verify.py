"""`verify_collection` on sound collections and on each kind of damage, made by hand."""

import json
import sqlite3

import numpy as np
import pytest

from cbir.collection import MANIFEST, METADATA, Collection, ImageRecord
from cbir.errors import CollectionError
from cbir.features import get_extractor
from cbir.image_store import sha256_bytes
from cbir.integrity import verify_collection


@pytest.fixture
def folder(tmp_path, labelled_folder):
    folder = tmp_path / "col"
    with Collection.create(folder, get_extractor("gch")) as collection:
        vectors = np.random.default_rng(0).random((4, 256), dtype=np.float32)
        blob = b"stored bytes"
        rows = [ImageRecord(f"a{i}", None, "x", sha256_bytes(blob)) for i in range(3)]
        rows.append(ImageRecord("file", str(labelled_folder / "red" / "red-0.png"), "y", "0" * 64))
        collection.add(rows, vectors, blobs=[blob])
    return folder


def tamper(folder, *statements, params=()):
    conn = sqlite3.connect(folder / METADATA)
    with conn:
        for statement in statements:
            conn.execute(statement, params)
    conn.close()


def test_a_sound_collection_passes(folder):
    report = verify_collection(folder)
    assert report.ok, report.problems
    assert report.counts == {"images": 4, "vectors": 4, "stored_images": 1, "generation": 1}
    assert report.notes == []


@pytest.mark.parametrize(
    "statements, params, problem",
    [
        (["DELETE FROM vectors WHERE id = 'a1'"], (), "1 image rows without a vector: 'a1'"),
        (
            ["INSERT INTO vectors (id, vector) VALUES ('ghost', ?)"],
            (np.ones(256, "<f4").tobytes(),),
            "1 vectors without an image row: 'ghost'",
        ),
        (
            ["UPDATE vectors SET vector = ? WHERE id = 'a0'"],
            (np.ones(10, "<f4").tobytes(),),
            "1 vectors that are not 256-d: 'a0'",
        ),
        (
            ["UPDATE vectors SET vector = ? WHERE id = 'a2'"],
            (np.full(256, np.nan, "<f4").tobytes(),),
            "1 vectors holding NaN or infinity: 'a2'",
        ),
        (["DELETE FROM blobs"], (), "3 images whose stored bytes are missing: 'a0', 'a1', 'a2'"),
        (["UPDATE blobs SET data = x'00'"], (), "1 stored images whose bytes do not match"),
        (
            ["DELETE FROM images WHERE id = 'a0'", "DELETE FROM vectors WHERE id = 'a0'"],
            (),
            "the manifest counts 4 images at generation 1, the database holds 3",
        ),
    ],
)
def test_each_kind_of_damage_is_reported(folder, statements, params, problem):
    tamper(folder, *statements, params=params)
    report = verify_collection(folder)
    assert not report.ok
    assert any(problem in found for found in report.problems), report.problems


def test_a_manifest_behind_the_database_is_a_note_not_a_problem(folder):
    tamper(folder, "UPDATE state SET value = value + 1 WHERE key = 'generation'")
    report = verify_collection(folder)
    assert report.ok and "a writer stopped before updating it" in report.notes[0]
    tamper(folder, "UPDATE state SET value = 0 WHERE key = 'generation'")
    assert (
        "the manifest names generation 1, the database is at 0"
        in (verify_collection(folder).problems[0])
    )


def test_extractor_and_manifest_damage(folder):
    (folder / "extractor" / "params.json").write_text("{}")
    assert "extractor state in extractor/" in verify_collection(folder).problems[0]
    (folder / MANIFEST).write_text("{broken")
    assert "is unreadable" in verify_collection(folder).problems[0]
    (folder / MANIFEST).write_text(json.dumps({"schema_version": 7}))
    assert "schema version 7" in verify_collection(folder).problems[0]


def test_gone_originals_are_a_note(folder, labelled_folder):
    (labelled_folder / "red" / "red-0.png").unlink()
    report = verify_collection(folder)
    assert report.ok and "1 images whose original file has gone: 'file'" in report.notes[0]


def test_no_collection_is_an_error(tmp_path):
    with pytest.raises(CollectionError, match="not a collection"):
        verify_collection(tmp_path)
