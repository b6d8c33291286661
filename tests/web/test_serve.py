"""`cbir serve`: clear one-line errors, and a real server that starts, serves and stops."""

from __future__ import annotations

import socket

from cbir.cli import main
from tests.support.http_client import Client
from tests.support.server_process import ServerProcess


def test_serve_needs_a_collection(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("CBIR_COLLECTION", raising=False)
    assert main(["serve"]) == 2
    assert "--collection" in capsys.readouterr().err
    assert main(["serve", "--collection", str(tmp_path / "nothing")]) == 2
    assert "not a collection" in capsys.readouterr().err


def test_bad_limits_in_the_environment_are_clear_errors(capsys, monkeypatch, collection_dir):
    monkeypatch.setenv("CBIR_MAX_UPLOAD_BYTES", "lots")
    assert main(["serve", "-c", str(collection_dir), "--port", "0"]) == 2
    assert "CBIR_MAX_UPLOAD_BYTES must be a positive whole number" in capsys.readouterr().err


def test_port_in_use_is_a_clear_error(capsys, collection_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "-c", str(collection_dir), "--port", str(port)]) == 2
    assert "choose another --port" in capsys.readouterr().err


def test_real_server_serves_pages_and_api_then_stops_cleanly(collection_dir):
    server = ServerProcess(collection_dir).start()
    try:
        with Client(server.url) as http:
            page = http.request("GET", "/")
            assert page.status == 200 and b"Drop an image here" in page.body
            assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
            found = http.request("GET", "/api/search?id=img-mid-0&k=3").json()
            assert found["precision_at_k"] == 1.0
            image = http.request("GET", "/images/img-mid-0")
            assert image.status == 200 and image.headers["Content-Type"] == "image/png"
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode == 0


def test_concurrent_searches_agree(live_server):
    """Four client threads at once against the server's request threads: every answer is the
    one a lone request gets."""
    from concurrent.futures import ThreadPoolExecutor

    def searches(image_id: str) -> list[list[str]]:
        with Client(live_server.url) as http:
            replies = [http.request("GET", f"/api/search?id={image_id}&k=5") for _ in range(15)]
        return [[r["id"] for r in reply.json()["results"]] for reply in replies]

    ids = ["img-dark-0", "img-mid-1", "img-light-2", "img-dark-3"]
    with ThreadPoolExecutor(len(ids)) as pool:
        answers = list(pool.map(searches, ids))
    for image_id, runs in zip(ids, answers, strict=True):
        assert all(run == runs[0] for run in runs)
        assert all(other.split("-")[1] == image_id.split("-")[1] for other in runs[0])


def test_images_another_process_indexes_show_up_without_a_restart(collection_dir, labelled_folder):
    """The server reads snapshots that a background thread keeps caught up: what a writer
    commits meanwhile is searchable soon after (polled, bounded)."""
    import time

    from cbir.collection import Collection
    from cbir.pipeline import index_folder

    with ServerProcess(collection_dir) as server, Client(server.url) as http:
        before = http.request("GET", "/api/health").json()["images"]
        with Collection.open(collection_dir, writer=True) as writer:
            added = index_folder(labelled_folder, writer)
        deadline = time.monotonic() + 30
        while http.request("GET", "/api/health").json()["images"] == before:
            assert time.monotonic() < deadline, "the server never saw the new images"
            time.sleep(0.2)
        found = http.request("GET", "/api/search?id=red/red-1.jpg&k=3").json()["results"]
        assert [r["id"].split("/")[0] for r in found] == ["red", "red", "red"]
    assert added


def test_writes_beyond_this_machine_without_a_token_refuse_to_start(
    capsys, monkeypatch, collection_dir
):
    monkeypatch.delenv("CBIR_WRITE_TOKEN", raising=False)
    args = ["serve", "-c", str(collection_dir), "--port", "0", "--host", "0.0.0.0"]
    assert main([*args, "--allow-writes"]) == 2
    error = capsys.readouterr().err.strip()
    assert "writes need a token: set CBIR_WRITE_TOKEN" in error and "\n" not in error
