"""Collections whose vectors live on a server (Elasticsearch 8.12.2, a Milvus 2.3.5 server,
Milvus Lite): the same answers as the embedded backend, kept in step across reopenings,
interrupted syncs and writes by other processes, and no secret ever in the manifest."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cbir.collection import MANIFEST, METADATA, Collection, ImageRecord
from cbir.errors import CbirError
from cbir.features import get_extractor
from tests.servers.live import elasticsearch_url, milvus_server_uri  # noqa: F401 (fixtures)

pytestmark = pytest.mark.server

DIM = 256  # gch
N = 120


def records(ids: range, prefix: str = "img") -> list[ImageRecord]:
    return [
        ImageRecord(f"{prefix}-{i}", f"/gone/{prefix}-{i}.png", str(i % 3), f"{i:064x}")
        for i in ids
    ]


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, DIM), dtype=np.float32)


@pytest.fixture(params=["elasticsearch", "milvus-server", "milvus-lite"])
def server_backend(request) -> tuple[str, dict]:
    """(backend, settings for a new collection) of one live backend."""
    if request.param == "elasticsearch":
        return "elasticsearch", {"url": request.getfixturevalue("elasticsearch_url")}
    if request.param == "milvus-server":
        return "milvus", {"uri": request.getfixturevalue("milvus_server_uri")}
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed")
    return "milvus", {}  # Milvus Lite, its file in the collection folder


@pytest.fixture
def make_collection(tmp_path, server_backend):
    made: list[Path] = []

    def make(name: str = "col") -> Collection:
        backend, settings = server_backend
        folder = tmp_path / name
        made.append(folder)
        return Collection.create(
            folder, get_extractor("gch"), backend=backend, backend_settings=settings
        )

    yield make
    for folder in made:
        with Collection.open(folder) as collection:
            collection.drop_server_index()


def embedded_answers(tmp_path: Path, ids: range, data: np.ndarray, queries: np.ndarray):
    with Collection.create(tmp_path / "embedded", get_extractor("gch")) as reference:
        reference.add(records(ids), data)
        return ids_of(reference.search_vectors(queries, k=10))


def ids_of(rows) -> list[list[str]]:
    return [[hit.id for hit in row] for row in rows]


def test_same_answers_as_embedded_and_nothing_sent_twice(make_collection, tmp_path):
    data, queries = vectors(N), vectors(5, seed=1)
    collection = make_collection()
    collection.add(records(range(0, 70)), data[:70])
    collection.add(records(range(70, N)), data[70:])
    want = embedded_answers(tmp_path, range(N), data, queries)
    assert ids_of(collection.search_vectors(queries, k=10)) == want
    folder = collection.folder
    collection.close()

    with Collection.open(folder, read_only=True) as reader:
        assert ids_of(reader.search_vectors(queries, k=10)) == want
    with Collection.open(folder, writer=True) as writer:
        report = writer.sync_server_index()
        assert (report.sent, report.removed, report.compared_ids) == (0, 0, False)
        assert len(writer.index) == N


def test_deletes_and_replacements_reach_the_server(make_collection, tmp_path):
    data = vectors(N)
    collection = make_collection()
    collection.add(records(range(N)), data)
    assert collection.delete(["img-0", "img-1", "img-5"]) == 3
    moved = vectors(1, seed=7)
    collection.add(records(range(7, 8)), moved, replace=True)
    assert len(collection.index) == N - 3
    hits = collection.search_vectors(data[:2], k=N)
    assert all(hit.id not in {"img-0", "img-1", "img-5"} for row in hits for hit in row)
    top = collection.search_vectors(moved, k=1)[0][0]
    assert top.id == "img-7" and top.score == pytest.approx(1.0, abs=1e-5)


def test_a_server_that_drifted_is_repaired_by_the_next_writer(make_collection):
    """Documents lost on the server (a sync killed before it sent them) and documents it should
    no longer hold (a delete that never reached it) are found by comparing id lists."""
    data = vectors(N)
    collection = make_collection()
    collection.add(records(range(N)), data)
    server = collection.index  # the backend's own index object, for tampering
    server.delete([f"img-{i}" for i in range(10)])
    server.add(["ghost-1", "ghost-2"], vectors(2, seed=3))
    with sqlite3.connect(collection.folder / METADATA) as conn:  # as if a delete never synced
        conn.execute("UPDATE backend_sync SET deletions = deletions + 1")
    report = collection.sync_server_index()
    assert report.compared_ids and report.sent == 10 and report.removed == 2
    assert len(collection.index) == N
    assert collection.search_vectors(data[3:4], k=1)[0][0].id == "img-3"
    collection.close()


def test_a_sync_killed_before_it_recorded_is_finished_without_duplicates(make_collection):
    data = vectors(N)
    collection = make_collection()
    collection.add(records(range(N)), data)
    folder = collection.folder
    collection.close()
    with sqlite3.connect(folder / METADATA) as conn:  # everything sent, nothing recorded
        conn.execute("UPDATE backend_sync SET seq = 0")
    with Collection.open(folder, writer=True) as writer:
        report = writer.sync_server_index()
        assert report.sent == N  # sent again, each id removed first
        assert len(writer.index) == N


def test_a_second_process_sees_what_a_writer_sends(make_collection):
    """Two on-demand writers, like `cbir serve` next to a `cbir index` run: each sends its own
    commits, and each searches what the other sent."""
    data = vectors(N)
    with make_collection() as created:
        created.add(records(range(60)), data[:60])
        folder = created.folder
    with Collection.open(folder) as indexer, Collection.open(folder) as web:
        assert len(web.search_vectors(data[:1], k=200)[0]) == 60
        indexer.add(records(range(60, N)), data[60:])
        web.refresh()
        assert len(web.search_vectors(data[:1], k=200)[0]) == N
        web.add(records(range(500, 501), prefix="upload"), vectors(1, seed=9))
        assert len(indexer.index) == N + 1


def test_the_database_records_when_the_server_last_changed(make_collection):
    """A reader learns from it whether its first search must wait for the server to apply
    every change (Milvus's Strong reads) or may read at once; databases made before the
    record existed get it from their next writer, as unknown until something changes."""
    data = vectors(N)
    collection = make_collection()
    folder = collection.folder

    def changed_at() -> float | None:
        with sqlite3.connect(folder / METADATA) as conn:
            return conn.execute("SELECT changed_at FROM backend_sync").fetchone()[0]

    before = time.time()
    collection.add(records(range(60)), data[:60])
    sent_at = changed_at()
    assert before <= sent_at <= time.time()
    assert not collection.sync_server_index().sent and changed_at() == sent_at  # no change
    collection.delete(["img-1"])
    assert changed_at() > sent_at
    collection.close()
    with sqlite3.connect(folder / METADATA) as conn:  # as a cbir before the record made it
        conn.execute("ALTER TABLE backend_sync DROP COLUMN changed_at")
    with Collection.open(folder, read_only=True) as reader:
        assert len(reader.search_vectors(data[:1], k=5)[0]) == 5  # unknown: reads as before
    with Collection.open(folder) as writer:
        writer.sync_server_index()
        assert changed_at() is None
        writer.add(records(range(60, N)), data[60:])
        assert changed_at() is not None


def test_compaction_after_a_bulk_load_keeps_every_answer(make_collection, server_backend):
    """What `cbir index` does after a bulk load: the server seals and indexes what it was
    sent; searches give the same answers, and a Milvus server serves every row from sealed
    segments (growing ones are searched by brute force, slower)."""
    data = vectors(N)
    collection = make_collection()
    collection.add(records(range(N)), data)
    before = ids_of(collection.search_vectors(data[:5], k=10))
    collection.compact_server_index()
    assert ids_of(collection.search_vectors(data[:5], k=10)) == before
    index = collection.index
    if server_backend[0] == "milvus" and "://" in index.uri:
        sealed = index._client.list_loaded_segments(index.collection)
        assert sum(segment.num_rows for segment in sealed) == N
    collection.close()


def test_the_manifest_holds_the_connection_but_never_a_secret(make_collection, monkeypatch):
    monkeypatch.setenv("CBIR_ELASTICSEARCH_USER", "elastic")
    monkeypatch.setenv("CBIR_ELASTICSEARCH_PASSWORD", "s3cret-password")
    monkeypatch.setenv("CBIR_MILVUS_TOKEN", "s3cret-token")
    collection = make_collection()
    collection.add(records(range(5)), vectors(5))
    text = (collection.folder / MANIFEST).read_text()
    assert "s3cret" not in text
    settings = json.loads(text)["backend"]["settings"]
    name_key = (
        "index_name"
        if collection.manifest["backend"]["name"] == "elasticsearch"
        else ("collection")
    )
    assert settings[name_key].startswith("cbir_")  # a name of its own on the server
    if settings.get("uri") == "milvus.db":
        assert (collection.folder / "milvus.db").exists()  # Milvus Lite: inside the collection
    collection.close()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"password": "x"}, "looks like a secret"),
        ({"api_key": "x"}, "looks like a secret"),
        ({"url": "http://elastic:pw@127.0.0.1:9200"}, "credentials in its URL"),
    ],
)
def test_secrets_in_settings_are_refused_before_anything_is_written(tmp_path, settings, message):
    with pytest.raises(CbirError, match=message):
        Collection.create(
            tmp_path / "c", get_extractor("gch"), backend="elasticsearch",
            backend_settings=settings,
        )  # fmt: skip
    assert not (tmp_path / "c" / MANIFEST).exists()


def test_an_unreachable_server_is_a_clear_error_and_no_collection(tmp_path, monkeypatch):
    monkeypatch.delenv("CBIR_ELASTICSEARCH_URL", raising=False)
    with pytest.raises(CbirError, match="not reachable"):
        Collection.create(
            tmp_path / "c", get_extractor("gch"), backend="elasticsearch",
            backend_settings={"url": "http://127.0.0.1:9"},
        )  # fmt: skip
    assert not (tmp_path / "c" / MANIFEST).exists()


def test_the_environment_points_a_collection_at_another_server(
    elasticsearch_url,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    with Collection.create(
        tmp_path / "c", get_extractor("gch"), backend="elasticsearch",
        backend_settings={"url": elasticsearch_url},
    ) as collection:  # fmt: skip
        collection.add(records(range(3)), vectors(3))
    try:
        with Collection.open(tmp_path / "c", read_only=True) as reader:
            assert len(reader.search_vectors(vectors(1), k=5)[0]) == 3
        monkeypatch.setenv("CBIR_ELASTICSEARCH_URL", "http://127.0.0.1:9")
        with (
            Collection.open(tmp_path / "c", read_only=True) as moved,
            pytest.raises(CbirError, match="127.0.0.1:9"),
        ):
            moved.search_vectors(vectors(1), k=5)
        override = {"url": elasticsearch_url}  # a flag beats the environment
        with Collection.open(tmp_path / "c", read_only=True, backend_options=override) as back:
            assert len(back.search_vectors(vectors(1), k=5)[0]) == 3
    finally:
        monkeypatch.delenv("CBIR_ELASTICSEARCH_URL")
        with Collection.open(tmp_path / "c", backend_options={"url": elasticsearch_url}) as c:
            c.drop_server_index()


def test_cli_index_search_and_benchmark_through_elasticsearch(
    elasticsearch_url,  # noqa: F811
    labelled_folder,
    tmp_path,
):
    cbir = [sys.executable, "-m", "cbir.cli"]
    collection = tmp_path / "es-col"
    option = ["--backend-option", f"url={elasticsearch_url}"]
    run = subprocess.run(
        [*cbir, "index", str(labelled_folder), "-c", str(collection), "-e", "gch",
         "--backend", "elasticsearch", *option],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads((collection / MANIFEST).read_text())["backend"]["name"] == "elasticsearch"
    query = next(labelled_folder.glob("red/*.png"))
    found = subprocess.run(
        [*cbir, "search", str(query), "-c", str(collection), "-k", "3", "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["results"][0]["label"] == "red"

    out = tmp_path / "bench"
    bench = subprocess.run(
        [*cbir, "benchmark", "folder", str(labelled_folder), "-e", "gch", "--out", str(out),
         "--backend", "elasticsearch", *option, "--examples", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backend"]["name"] == "elasticsearch"
    assert metrics["backend"]["recall_at_100_vs_exact"] == pytest.approx(1.0)
    assert {"backend_index_s", "backend_search_s", "index_s", "search_s"} <= set(metrics["timings"])
    with Collection.open(collection) as opened:
        opened.drop_server_index()


def test_verify_finds_a_drifted_server_and_repair_fixes_it(make_collection):
    data = vectors(N)
    collection = make_collection()
    collection.add(records(range(N)), data)
    collection.index.delete(["img-3", "img-4"])  # lost on the server
    folder = collection.folder
    collection.close()
    cbir = [sys.executable, "-m", "cbir.cli"]
    damaged = subprocess.run(
        [*cbir, "verify", "-c", str(folder), "--json"], capture_output=True, text=True, timeout=120
    )
    assert damaged.returncode == 1, damaged.stderr
    report = json.loads(damaged.stdout)
    assert report["counts"]["server_vectors"] == N - 2
    assert any("2 ids missing from the server index" in p for p in report["problems"])
    repaired = subprocess.run(
        [*cbir, "verify", "-c", str(folder), "--repair"], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "sent 2 vectors" in repaired.stdout
