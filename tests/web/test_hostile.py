"""Hostile inputs: every one is answered with a 4xx and a message that says what is wrong
(never a 500, never a hang), nothing is echoed unescaped, and the server keeps serving. The
same table runs against the app in process and against a real `cbir serve` over HTTP; what
only a real server shows (rebinding, huge and chunked bodies, slow clients, a busy collection,
costly images) is tried over HTTP alone."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import png_header_claiming
from tests.support.http_client import Client, multipart
from tests.support.server_process import ServerProcess
from tests.web.helpers import gray_image, png, query_png

SCRIPT = "<script>alert(1)</script>"
JSON = {"Content-Type": "application/json"}
SOCKET_TIMEOUT_S = 30.0


def truncated_png() -> bytes:
    data = png(gray_image(np.random.default_rng(5), 128, size=64))
    return data[: len(data) // 2]


TEXT_FIELD = multipart({"image": "abc"})  # (body, content type)
GARBAGE = bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8))


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    expected: int
    says: str = ""  # words the error message must contain
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def upload(
    name: str,
    data: bytes,
    expected: int,
    says: str = "",
    filename: str = "q.png",
    path: str = "/api/search",
) -> Case:
    body, content_type = multipart(files={"image": (filename, data)})
    return Case(name, "POST", path, expected, says, body, {"Content-Type": content_type})


def posted(
    name: str, body: bytes, expected: int, says: str, content_type: str = "application/json"
) -> Case:
    return Case(name, "POST", "/api/search", expected, says, body, {"Content-Type": content_type})


CASES = [
    upload("garbage bytes", GARBAGE, 415, "not an image"),
    upload("empty file", b"", 400, "is empty"),
    upload("truncated PNG", truncated_png(), 422, "truncated"),
    upload("40000x40000 PNG header", png_header_claiming(40000, 40000), 422, "pixel limit"),
    upload("80 MB body", b"\x00" * (80 * 2**20), 413, "larger than"),
    upload("script in filename (garbage)", GARBAGE, 415, filename=f"{SCRIPT}.png"),
    upload(
        "SVG with a script",
        f'<svg xmlns="http://www.w3.org/2000/svg">{SCRIPT}</svg>'.encode(),
        415,
        "not an image",
    ),
    upload("garbage on the page", GARBAGE, 415, path="/"),
    upload("garbage added to the collection", GARBAGE, 415, path="/api/images"),
    Case("path traversal", "GET", "/images/../../etc/passwd", 404),
    Case("encoded path traversal", "GET", "/images/%2e%2e/%2e%2e/etc/passwd", 404),
    Case("absolute path", "GET", "/images//etc/passwd", 404),
    Case("NUL in an image id", "GET", "/images/%00", 404),
    Case("script in an id", "GET", "/api/search?id=%3Cscript%3Ealert(1)%3C/script%3E", 404),
    Case("script in an id, page", "GET", "/?id=%3Cscript%3Ealert(1)%3C/script%3E", 404),
    Case("k far too large", "GET", "/api/search?id=img-dark-0&k=" + "9" * 40, 400, "k must"),
    Case("k zero", "GET", "/api/search?id=img-dark-0&k=0", 400, "k must"),
    Case("k negative", "GET", "/api/search?id=img-dark-0&k=-3", 400, "k must"),
    Case("k not a number", "GET", "/api/search?id=img-dark-0&k=ten", 400, "k must"),
    posted("k a fraction", b'{"id": "img-dark-0", "k": 2.5}', 400, "k must"),
    Case("offset too deep", "GET", "/api/search?id=img-dark-0&offset=5000", 400, "offset must"),
    posted("malformed JSON", b"{", 400, "not valid JSON"),
    posted("JSON nested 1,000 deep", b"[" * 1000 + b"]" * 1000, 400, "nested too deeply"),
    posted("JSON that is not an object", b"[1, 2]", 400, "must be an object"),
    posted("JSON id of the wrong type", b'{"id": {"$ne": 1}}', 400, "id must"),
    posted("JSON that is not UTF-8", b'{"id": "\xff\xfe"}', 400, "not valid JSON"),
    posted("a body of another type", b"id=img-dark-0", 415, "is not read", "text/plain"),
    posted("multipart, no boundary", b"--x\r\n", 400, "could not be read", "multipart/form-data"),
    posted("the image as a text field", TEXT_FIELD[0], 400, "must be a file", TEXT_FIELD[1]),
    Case("no query at all", "POST", "/api/search", 400, "nothing to search with"),
    Case("wrong method", "PUT", "/api/search", 405),
    Case("delete of a traversal id", "DELETE", "/api/images/../../etc/passwd", 404),
    Case("another site's name in Host", "GET", "/api/search?id=img-dark-0", 421, "--allowed-host",
         headers={"Host": "evil.example"}),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input_in_process(client, case):
    response = client.open(case.path, method=case.method, data=case.body, headers=case.headers)
    assert response.status_code == case.expected, response.data[:300]
    assert b"Traceback" not in response.data
    if case.path.startswith(("/api/", "/images/")):
        assert response.is_json and response.json["status"] == case.expected
        assert case.says in response.json["error"]
    else:
        assert SCRIPT.encode() not in response.data  # escaped on the page
    assert client.get("/api/health").status_code == 200


def test_hostile_inputs_over_http(writable_server):
    """All of them against a real server, then a normal search still works. waitress itself
    refuses the 80 MB body (plain text) before it is read, so it is tried in its own test."""
    table = []
    with Client(writable_server.url) as http:
        for case in CASES:
            if case.name == "80 MB body":
                continue
            reply = http.request(case.method, case.path, case.body, case.headers)
            table.append((case.name, reply.status))
            assert reply.status == case.expected, (case.name, reply.body[:300])
            assert b"Traceback" not in reply.body
            if case.path.startswith("/api/"):
                assert case.says in reply.json()["error"], case.name
        assert http.request("GET", "/api/health").status == 200
        found = http.search_upload(png(gray_image(np.random.default_rng(1), 40)), k=3)
    assert found.status == 200 and len(found.json()["results"]) == 3
    assert writable_server.alive()
    print("\n" + "\n".join(f"{status}  {name}" for name, status in table))


def test_rebinding_is_refused_for_reads_and_writes(writable_server):
    """A page on a rebinding domain sends its own name as Host (and Origin): every request is
    refused before any work, writes included; the loopback names are answered."""
    port = writable_server.port
    evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    body, content_type = multipart({"label": "x"}, {"image": ("q.png", query_png(seed=30))})
    with Client(writable_server.url) as http:
        for method, path, data, headers in [
            ("GET", "/api/search?id=img-dark-0", None, {}),
            ("GET", "/", None, {}),
            ("GET", "/images/img-dark-0", None, {}),
            ("POST", "/api/images", body, {"Content-Type": content_type}),
            ("DELETE", "/api/images/img-dark-1", None, {}),
        ]:
            reply = http.request(method, path, data, {**headers, **evil})
            assert reply.status == 421, (method, path, reply.status)
        assert http.request("GET", "/api/search?id=img-dark-1&k=3").json()["results"]
        for name in ("localhost", "127.0.0.1", "[::1]"):
            reply = http.request("GET", "/api/health", headers={"Host": f"{name}:{port}"})
            assert reply.status == 200, name


def test_a_host_named_with_allowed_host_is_answered(collection_dir):
    server = ServerProcess(collection_dir, extra_args=("--allowed-host", "photos.lan"))
    with server, Client(server.url) as http:
        assert http.request("GET", "/api/health", headers={"Host": "photos.lan"}).status == 200
        assert http.request("GET", "/api/health", headers={"Host": "evil.lan"}).status == 421


def raw_exchange(server: ServerProcess, head: bytes, body: bytes = b"") -> bytes:
    """Send `head` (+ `body`) on a fresh socket and read the answer until the server closes
    or stops sending."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT_S) as sock:
        sock.sendall(head + body)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def _complete(reply: bytes) -> bool:
    head, _, body = reply.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def test_a_huge_body_is_refused_before_it_is_read(live_server):
    """80 MB announced: 413 on the headers alone; the server never takes the bytes."""
    head = (
        b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
        b"boundary=x\r\nContent-Length: 83886080\r\n\r\n"
    )
    reply = raw_exchange(live_server, head, b"\0" * 65536)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert live_server.alive()


def chunked(body: bytes, size: int = 4096) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    parts = [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces]
    return b"".join(parts) + b"0\r\n\r\n"


def test_chunked_bodies_are_read_and_limited(live_server):
    body, content_type = multipart({"k": "3"}, {"image": ("q.png", query_png(seed=31))})
    head = (
        f"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    reply = raw_exchange(live_server, head, chunked(body))
    assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
    assert len(json.loads(reply.partition(b"\r\n\r\n")[2])["results"]) == 3
    huge = raw_exchange(live_server, head, chunked(b"\0" * (17 * 2**20), size=2**20))
    assert huge.startswith(b"HTTP/1.1 413"), huge[:200]


def test_slow_clients_do_not_stall_the_others(live_server):
    """Thirty connections that send half a request and stop: the server still answers."""
    idle = []
    try:
        for _ in range(30):
            sock = socket.create_connection(("127.0.0.1", live_server.port), timeout=5)
            sock.sendall(b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            idle.append(sock)
        with Client(live_server.url, timeout=SOCKET_TIMEOUT_S) as http:
            assert http.request("GET", "/api/health").status == 200
            assert http.request("GET", "/api/search?id=img-dark-0&k=3").status == 200
    finally:
        for sock in idle:
            sock.close()


def test_a_write_while_the_collection_is_busy_fails_at_once_and_says_little(writable_server):
    """While another process holds the writer lock, a write is a 503 with Retry-After that
    names no path, process or command line; reads go on."""
    from cbir.collection import Collection

    body, content_type = multipart(files={"image": ("q.png", query_png(seed=32))})
    holder = Collection.open(writable_server.collection, writer=True, lock_timeout=5)
    with holder, Client(writable_server.url) as http:
        busy = http.request("POST", "/api/images", body, {"Content-Type": content_type})
        assert busy.status == 503 and busy.headers["Retry-After"] == "5"
        error = busy.json()["error"]
        assert str(writable_server.collection) not in error and "pytest" not in error
        assert http.request("GET", "/api/search?id=img-dark-0&k=3").status == 200
    assert any("is being written by process" in line for line in writable_server.output)


HOLDER = """
import sys, time
from cbir.collection import Collection
with Collection.open(sys.argv[1], writer=True):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_secrets_on_a_busy_writers_command_line_reach_no_one(writable_server):
    """Another process holds the lock with a secret on its command line: the client's 503
    says nothing of it, and the server's log names the process with the secret hidden."""
    command = [sys.executable, "-c", HOLDER, str(writable_server.collection), "30",
               "--backend-option", "api_key=s3cret-value"]  # fmt: skip
    holder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        body, content_type = multipart(files={"image": ("q.png", query_png(seed=34))})
        with Client(writable_server.url) as http:
            busy = http.request("POST", "/api/images", body, {"Content-Type": content_type})
        assert busy.status == 503 and b"s3cret" not in busy.body
        # the server logs before it answers, but its output reaches us through a pipe that
        # a thread drains: on a busy machine the line may come a moment after the answer
        deadline = time.monotonic() + 10
        while True:
            logged = [line for line in writable_server.output if f"process {holder.pid}" in line]
            if logged or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert logged and "api_key=***" in logged[-1]
        assert not any("s3cret" in line for line in writable_server.output)
    finally:
        holder.kill()
        holder.wait(timeout=10)


def big_png(side: int) -> bytes:
    """A flat image of side x side pixels: a few KB of PNG, many pixels to decode."""
    return png(np.full((side, side, 3), 128, dtype=np.uint8))


def test_costly_uploads_share_budgets_and_images_are_described_once(tmp_path, collection_template):
    """A server whose budgets refill slowly: the first large image is accepted, the next is a
    503 with Retry-After, and "more like this" on the first needs no decoding (its vector is
    remembered), nor do normal images; large bodies past their budget are refused unread."""
    folder = Path(shutil.copytree(collection_template, tmp_path / "collection"))
    env = {
        **os.environ,
        "CBIR_MAX_IMAGE_PIXELS": "5000000",
        "CBIR_DECODE_PIXELS_PER_S": "100000",
        "CBIR_MAX_UPLOAD_BYTES": str(3 * 2**20),
        "CBIR_BODY_BYTES_PER_S": "1000",  # after a burst of twice the upload limit
    }
    server = ServerProcess(folder, env=env, extra_args=("--allow-writes",))
    with server, Client(server.url) as http:
        body, content_type = multipart(files={"image": ("big.png", big_png(2100))})
        added = http.request("POST", "/api/images", body, {"Content-Type": content_type})
        assert added.status == 201, added.body[:200]
        refused = http.search_upload(big_png(2101))
        assert refused.status == 503 and int(refused.headers["Retry-After"]) >= 30
        assert "busy decoding other large images" in refused.json()["error"]
        again = http.request("GET", f"/api/search?id={added.json()['id']}&k=3")
        assert again.status == 200, again.body[:200]
        assert http.search_upload(query_png(seed=33), k=3).status == 200
        large = [http.search_upload(GARBAGE * 640) for _ in range(3)]  # 2.5 MiB each
        assert [reply.status for reply in large] == [415, 415, 503]
        assert "busy receiving other large uploads" in large[2].json()["error"]
        assert http.request("GET", "/api/health").status == 200
