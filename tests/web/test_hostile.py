"""Hostile inputs: every one is answered with a 4xx (never a 500, never a hang), nothing is
echoed unescaped, and the server keeps serving afterwards. The same table runs against the
app in process and against a real `cbir serve` over HTTP."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from cbir.web.client import Client, multipart
from tests.conftest import png_header_claiming
from tests.web.helpers import gray_image, png

SCRIPT = "<script>alert(1)</script>"


def truncated_png() -> bytes:
    data = png(gray_image(np.random.default_rng(5), 128, size=64))
    return data[: len(data) // 2]


GARBAGE = bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8))


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    expected: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def upload(
    name: str, data: bytes, expected: int, filename: str = "q.png", path: str = "/api/search"
) -> Case:
    body, content_type = multipart(files={"image": (filename, data)})
    return Case(name, "POST", path, expected, body, {"Content-Type": content_type})


CASES = [
    upload("garbage bytes", GARBAGE, 415),
    upload("empty file", b"", 400),
    upload("truncated PNG", truncated_png(), 422),
    upload("40000x40000 PNG header", png_header_claiming(40000, 40000), 422),
    upload("80 MB body", b"\x00" * (80 * 2**20), 413),
    upload("script in filename (garbage)", GARBAGE, 415, filename=f"{SCRIPT}.png"),
    upload(
        "SVG with a script", f'<svg xmlns="http://www.w3.org/2000/svg">{SCRIPT}</svg>'.encode(), 415
    ),
    upload("garbage on the page", GARBAGE, 415, path="/"),
    upload("garbage added to the collection", GARBAGE, 415, path="/api/images"),
    Case("path traversal", "GET", "/images/../../etc/passwd", 404),
    Case("encoded path traversal", "GET", "/images/%2e%2e/%2e%2e/etc/passwd", 404),
    Case("absolute path", "GET", "/images//etc/passwd", 404),
    Case("NUL in an image id", "GET", "/images/%00", 404),
    Case("script in an id", "GET", "/api/search?id=%3Cscript%3Ealert(1)%3C/script%3E", 404),
    Case("script in an id, page", "GET", "/?id=%3Cscript%3Ealert(1)%3C/script%3E", 404),
    Case("k far too large", "GET", "/api/search?id=img-dark-0&k=" + "9" * 40, 400),
    Case("malformed JSON", "POST", "/api/search", 400, b"{", {"Content-Type": "application/json"}),
    Case("no query at all", "POST", "/api/search", 400),
    Case("wrong method", "PUT", "/api/search", 405),
    Case("delete of a traversal id", "DELETE", "/api/images/../../etc/passwd", 404),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input_in_process(client, case):
    response = client.open(case.path, method=case.method, data=case.body, headers=case.headers)
    assert response.status_code == case.expected, response.data[:300]
    assert b"Traceback" not in response.data
    if case.path.startswith(("/api/", "/images/")):
        assert response.is_json and response.json["status"] == case.expected
        assert response.json["error"]
    else:
        assert SCRIPT.encode() not in response.data  # escaped on the page
    assert client.get("/api/health").status_code == 200


def test_hostile_inputs_over_http(live_server):
    """All of them against a real server, one connection, then a normal search still works."""
    table = []
    with Client(live_server.url) as http:
        for case in CASES:
            reply = http.request(case.method, case.path, case.body, case.headers)
            table.append((case.name, reply.status))
            assert reply.status == case.expected, (case.name, reply.body[:300])
            assert b"Traceback" not in reply.body
        assert http.request("GET", "/api/health").status == 200
        found = http.search_upload(png(gray_image(np.random.default_rng(1), 40)), k=3)
    assert found.status == 200 and len(found.json()["results"]) == 3
    assert live_server.alive()
    print("\n" + "\n".join(f"{status}  {name}" for name, status in table))
