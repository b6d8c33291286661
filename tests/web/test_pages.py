"""The pages, through Flask's test client: they render, escape, and explain errors."""

from __future__ import annotations

import io
import re

from markupsafe import escape

from cbir.features import extractor_class, get_extractor
from tests.web.helpers import query_png

SCRIPT = "<script>alert(1)</script>"


def test_home_offers_an_upload_form_and_examples(client):
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in html and 'name="image"' in html
    assert '<option value="10" selected>' in html and '<option value="100"' in html
    examples = re.findall(r'href="/\?id=(img-[a-z]+-\d)&amp;k=10"', html)
    assert 1 <= len(examples) <= 12
    assert "18 images" in html and "<code>gch</code>" in html
    # What the extractor matches, in its own words (when it has some).
    about = str(escape(getattr(extractor_class("gch"), "about", "")))
    assert f"Extractor <code>gch</code>{': ' + about if about else ''}</p>" in html


def test_upload_shows_results_with_a_preview(client):
    data = {"image": (io.BytesIO(query_png(128)), "mid.png"), "k": "5"}
    html = client.post("/", data=data).get_data(as_text=True)
    assert 'src="data:image/png;base64,' in html  # the query, shown without storing it
    assert html.count('<li class="card') == 5
    assert "<code>mid.png</code>" in html
    assert "P@" not in html and "no known class" in html
    assert 'src="/images/img-mid-' in html


def test_more_like_this_marks_relevant_results_and_precision(client):
    html = client.get("/?id=img-dark-1&k=5").get_data(as_text=True)
    assert "More like <code>img-dark-1</code>" in html
    assert "P@5 <strong>1.00</strong>" in html and "(5 of 5 are dark)" in html
    assert html.count('class="card relevant"') == 5
    assert re.search(r'href="/\?id=img-dark-\d&amp;k=5"', html)
    assert '<option value="5" selected>' in html


def test_misses_are_marked_as_other(client):
    html = client.get("/?id=img-dark-1&k=10").get_data(as_text=True)
    assert html.count('class="card relevant"') == 5 and html.count('class="card other"') == 5


def test_partial_request_returns_the_results_fragment(client):
    html = client.get("/?id=img-mid-0&k=3", headers={"X-Partial": "1"}).get_data(as_text=True)
    assert "<html" not in html and 'data-query-kind="id"' in html
    assert html.count('<li class="card') == 3


def test_upload_names_and_labels_are_escaped(client):
    data = {"image": (io.BytesIO(query_png(40, seed=12)), f"{SCRIPT}.png")}
    added = client.post("/api/images", data={**data, "label": SCRIPT})
    assert added.status_code == 201
    image_id = added.json["id"]
    html = client.get(f"/?id={image_id}").get_data(as_text=True)
    again = client.post("/", data={"image": (io.BytesIO(query_png(41)), f"{SCRIPT}.png")})
    for page in (
        html,
        again.get_data(as_text=True),
        client.get("/collection").get_data(as_text=True),
    ):
        assert SCRIPT not in page and "&lt;script&gt;" in page


def test_collection_page(client):
    html = client.get("/collection").get_data(as_text=True)
    gch_dim = get_extractor("gch").dim
    assert "<dd>18</dd>" in html and "<code>gch</code>" in html and f"<dd>{gch_dim}</dd>" in html
    for label in ("dark", "mid", "light"):
        assert f"<td>{label}</td>" in html
    assert html.count('<progress max="6" value="6">') == 3


def test_page_errors_are_explained_on_the_page(client):
    cases = {
        "/?id=nope": (404, "No indexed image has the id"),
        "/?id=img-dark-0&k=500": (400, "K must be a whole number"),
        "/no-such-page": (404, "Nothing here"),
    }
    for path, (status, message) in cases.items():
        response = client.get(path)
        assert response.status_code == status and response.mimetype == "text/html"
        html = response.get_data(as_text=True)
        assert 'role="alert"' in html and message in html
        assert 'href="/?id=img-' in html  # examples to go on with
    garbage = client.post("/", data={"image": (io.BytesIO(b"not an image"), "x.png")})
    assert garbage.status_code == 415 and "not an image" in garbage.get_data(as_text=True)
    empty = client.post("/", data={})
    assert empty.status_code == 400 and "Nothing to search with" in empty.get_data(as_text=True)


def test_static_assets_are_served(client):
    assert client.get("/static/style.css").status_code == 200
    script = client.get("/static/app.js")
    assert script.status_code == 200 and b"X-Partial" in script.data
