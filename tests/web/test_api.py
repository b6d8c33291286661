"""The JSON API, route by route, through Flask's test client on a real small collection."""

from __future__ import annotations

import io

import pytest

from cbir.features import get_extractor
from tests.web.helpers import PER_CLASS, query_png


def upload(data: bytes, filename: str = "query.png", **fields) -> dict:
    return {"image": (io.BytesIO(data), filename), **fields}


def test_health(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "images": 3 * PER_CLASS}


def test_collection_stats(client):
    stats = client.get("/api/collection").json
    gch = get_extractor("gch")  # the collection's extractor, as this version builds it
    assert stats["count"] == 18 and stats["dim"] == gch.dim and stats["metric"] == "cosine"
    size = list(gch.input_size) if gch.input_size else None
    assert stats["extractor"]["name"] == "gch" and stats["input_size"] == size
    assert stats["labels"] == {"dark": 6, "light": 6, "mid": 6} and stats["unlabelled"] == 0


def test_search_by_upload(client):
    response = client.post("/api/search", data=upload(query_png(40)))
    assert response.status_code == 200
    body = response.json
    assert len(body["results"]) == 10 and body["k"] == 10 and body["took_ms"] > 0
    first = body["results"][0]
    assert set(first) >= {"id", "score", "label", "url"}
    assert first["label"] == "dark" and first["url"] == f"/images/{first['id']}"
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    # An upload's class is never guessed: nothing is marked relevant, no P@k.
    assert body["query"] == {"kind": "upload", "id": None, "label": None}
    assert body["precision_at_k"] is None and first["relevant"] is None


def test_upload_of_an_indexed_image_is_recognised_by_its_bytes(client):
    data = client.get("/images/img-mid-2").data
    body = client.post("/api/search", data=upload(data, k="5")).json
    assert body["query"] == {"kind": "upload", "id": "img-mid-2", "label": "mid"}
    ids = [r["id"] for r in body["results"]]
    assert "img-mid-2" not in ids and len(ids) == 5  # left out of its own results
    assert body["precision_at_k"] == 1.0 and all(r["relevant"] for r in body["results"])


@pytest.mark.parametrize(
    "send",
    [
        lambda c: c.get("/api/search?id=img-light-0&k=5"),
        lambda c: c.post("/api/search", data={"id": "img-light-0", "k": "5"}),
        lambda c: c.post("/api/search", json={"id": "img-light-0", "k": 5}),
    ],
    ids=["query string", "form", "json"],
)
def test_search_by_id(client, send):
    body = send(client).json
    assert body["query"] == {"kind": "id", "id": "img-light-0", "label": "light"}
    assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4, 5]
    assert all(r["label"] == "light" and r["relevant"] for r in body["results"])
    assert "img-light-0" not in {r["id"] for r in body["results"]}
    assert body["precision_at_k"] == 1.0


def test_precision_counts_misses_against_k(client):
    body = client.get("/api/search?id=img-dark-0&k=10").json
    # Only 5 other dark images exist: at most 5 of the 10 can be relevant.
    assert body["precision_at_k"] == pytest.approx(0.5)
    assert [r["relevant"] for r in body["results"]].count(True) == 5


def test_k_larger_than_the_collection(client):
    body = client.get("/api/search?id=img-dark-0&k=100").json
    assert len(body["results"]) == 17


@pytest.mark.parametrize("k", ["0", "101", "-1", "abc", "1.5", "", " 7 "])
def test_k_is_validated(client, k):
    response = client.get(f"/api/search?id=img-dark-0&k={k}")
    if k in ("", " 7 "):
        assert response.status_code == 200
        return
    assert response.status_code == 400
    assert "k must be a whole number from 1 to 100" in response.json["error"]


@pytest.mark.parametrize("k", [True, 2.0, [3], None])
def test_k_in_json_is_validated(client, k):
    response = client.post("/api/search", json={"id": "img-dark-0", "k": k})
    assert response.status_code == (200 if k is None else 400)


def test_search_needs_an_image_or_an_id(client):
    for response in (client.post("/api/search"), client.get("/api/search")):
        assert response.status_code == 400
        assert "field `image`" in response.json["error"]
    both = client.post("/api/search", data=upload(query_png(), id="img-dark-0"))
    assert both.status_code == 400 and "not both" in both.json["error"]
    wrong_field = client.post("/api/search", data={"file": (io.BytesIO(query_png()), "q.png")})
    assert wrong_field.status_code == 400


def test_unknown_id(client):
    response = client.get("/api/search?id=nope")
    assert response.status_code == 404 and "nope" in response.json["error"]
    assert client.get("/images/nope").status_code == 404


def test_image_bytes_are_served_by_id_with_a_sniffed_type(client):
    response = client.get("/images/img-dark-0")
    assert response.status_code == 200 and response.mimetype == "image/png"
    assert response.data.startswith(b"\x89PNG")
    etag = response.headers["ETag"]
    assert client.get("/images/img-dark-0", headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize(
    ("image_id", "mimetype"),
    [("red/red-0.png", "image/png"), ("green/green-1.jpg", "image/jpeg"),
     ("blue/blue-2.webp", "image/webp"), ("blue/blue-3.bmp", "image/bmp")],
)  # fmt: skip
def test_folder_ids_with_slashes(folder_client, image_id, mimetype):
    response = folder_client.get(f"/images/{image_id}")
    assert response.status_code == 200 and response.mimetype == mimetype
    body = folder_client.get(f"/api/search?id={image_id}&k=3").json
    assert body["query"]["label"] == image_id.split("/")[0]
    assert all(r["url"] == f"/images/{r['id']}" for r in body["results"])


def test_add_search_and_delete_an_image(client):
    data = query_png(215, seed=3)
    added = client.post("/api/images", data=upload(data, "my photo.png", label="light"))
    assert added.status_code == 201
    image_id = added.json["id"]
    assert image_id.endswith("-my_photo.png") and added.json["label"] == "light"
    assert added.headers["Location"] == f"/images/{image_id}"
    assert client.get(added.json["url"]).data == data
    assert client.get("/api/health").json["images"] == 19
    found = client.get(f"/api/search?id={image_id}&k=3").json
    assert found["query"]["label"] == "light" and found["precision_at_k"] == 1.0
    again = client.post("/api/images", data=upload(data, "copy.png"))
    assert again.status_code == 409 and image_id in again.json["error"]

    deleted = client.delete(f"/api/images/{image_id}")
    assert deleted.status_code == 200 and deleted.json == {"deleted": image_id}
    assert client.get(f"/images/{image_id}").status_code == 404
    assert client.delete(f"/api/images/{image_id}").status_code == 404
    assert client.get("/api/health").json["images"] == 18


def test_added_image_id_is_sanitised(client):
    added = client.post(
        "/api/images", data=upload(query_png(128, seed=4), "../../<script>alert(1)</script>.png")
    )
    assert added.status_code == 201
    image_id = added.json["id"]
    assert "/" not in image_id and "<" not in image_id and ".." not in image_id
    assert added.json["label"] is None


@pytest.mark.parametrize(
    ("data", "status"),
    [({}, 400), ({"label": "x\u0000y"}, 400), ({"label": "x" * 101}, 400)],
)
def test_add_validates_its_fields(client, data, status):
    if data:
        data = upload(query_png(seed=5), **data)
    assert client.post("/api/images", data=data).status_code == status


def test_writes_are_off_unless_asked_for(make_app):
    client = make_app().test_client()
    refused = client.post("/api/images", data=upload(query_png(seed=6)))
    assert refused.status_code == 403 and "--allow-writes" in refused.json["error"]
    assert client.delete("/api/images/img-dark-0").status_code == 403
    assert client.get("/api/search?id=img-dark-0&k=3").status_code == 200


def test_writes_need_the_bearer_token_when_one_is_set(make_app):
    client = make_app(write_token="s3cret").test_client()
    missing = client.post("/api/images", data=upload(query_png(seed=6)))
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    for header in ("Bearer nope", "s3cret", "Basic s3cret", "Bearer  s3cret", "Bearer s3cret x"):
        refused = client.delete("/api/images/img-dark-0", headers={"Authorization": header})
        assert refused.status_code == 401, header
    right = {"Authorization": "Bearer s3cret"}
    assert client.delete("/api/images/img-dark-0", headers=right).status_code == 200


def test_a_server_reachable_from_other_machines_needs_a_token_for_writes(make_app):
    from cbir.errors import CbirError

    with pytest.raises(CbirError, match="writes need a token: set CBIR_WRITE_TOKEN"):
        make_app(host="0.0.0.0", allow_writes=True)
    with_token = make_app(host="0.0.0.0", write_token="t").test_client()
    assert with_token.get("/api/health").status_code == 200


def test_writes_from_another_site_are_refused(client):
    response = client.post(
        "/api/images", data=upload(query_png(seed=8)), headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    same = client.post(
        "/api/images", data=upload(query_png(seed=8)), headers={"Origin": "http://localhost"}
    )
    assert same.status_code == 201


def test_api_errors_are_json(client):
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.json["error"].startswith("nothing here")
    wrong = client.put("/api/search")
    assert wrong.status_code == 405 and wrong.is_json
    assert set(wrong.headers["Allow"].split(", ")) >= {"GET", "POST"}


def test_upload_limit_is_a_json_413(make_app):
    app = make_app(max_upload_bytes=1000)
    response = app.test_client().post("/api/search", data=upload(b"\x89PNG" + b"\0" * 2000))
    assert response.status_code == 413
    assert response.json["error"].startswith("the request is larger than")


def test_an_unexpected_error_is_a_500_without_details(app):
    def broken():
        raise RuntimeError("secret internals")

    app.add_url_rule("/api/broken", view_func=broken)
    response = app.test_client().get("/api/broken")
    assert response.status_code == 500 and response.is_json
    assert "secret" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_security_headers(client):
    response = client.get("/api/health")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src" not in response.headers["Content-Security-Policy"]  # default-src 'self'
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_a_write_while_an_indexing_run_holds_the_lock_is_a_generic_503(client, collection_dir):
    from cbir.collection import Collection

    with Collection.open(collection_dir, writer=True):  # as `cbir index` holds it
        busy = client.post("/api/images", data=upload(query_png(seed=9)))
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
        assert busy.json["error"].startswith("the collection is busy")
        # Who holds the lock (path, pid, command line) stays in the server's log.
        assert str(collection_dir) not in busy.json["error"] and "pytest" not in busy.json["error"]
        assert client.get("/api/search?id=img-dark-0&k=3").status_code == 200  # reads still work
    assert client.post("/api/images", data=upload(query_png(seed=9))).status_code == 201


def test_a_busy_collection_refuses_a_write_before_decoding_it(client, collection_dir):
    """While `cbir index` holds the lock, an upload is refused before its bytes are decoded
    and described: bytes that are no image get the same 503, not a 415 (decoding work the
    write could never use)."""
    from cbir.collection import Collection

    with Collection.open(collection_dir, writer=True):
        busy = client.post("/api/images", data=upload(b"not an image at all"))
        assert busy.status_code == 503
    assert client.post("/api/images", data=upload(b"not an image at all")).status_code == 415


def test_pages_of_results_follow_one_another(client):
    first = client.get("/api/search?id=img-dark-0&k=5").json
    second = client.get("/api/search?id=img-dark-0&k=5&offset=5").json
    both = client.get("/api/search?id=img-dark-0&k=10").json
    assert [r["rank"] for r in second["results"]] == [6, 7, 8, 9, 10]
    assert [r["id"] for r in first["results"] + second["results"]] == [
        r["id"] for r in both["results"]
    ]
    assert first["more"] and second["precision_at_k"] is None  # P@k is for the first page
    last = client.get("/api/search?id=img-dark-0&k=5&offset=15").json  # 17 others
    assert len(last["results"]) == 2 and not last["more"]


def test_a_label_named_none_is_a_label(client):
    named = client.post("/api/images", data=upload(query_png(seed=21), label="None"))
    unnamed = client.post("/api/images", data=upload(query_png(seed=22)))
    assert named.status_code == unnamed.status_code == 201
    stats = client.get("/api/collection").json
    assert stats["labels"]["None"] == 1 and stats["unlabelled"] == 1
    page = client.get("/collection").get_data(as_text=True)
    assert "<td>None</td>" in page and "no label" in page
