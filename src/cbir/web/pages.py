"""The pages: search (upload, or "more like this" by id) and the collection's facts.

Every page works without JavaScript (a form post, plain links). The page's small script only
makes it quicker: it asks for the results fragment (header X-Partial) and swaps it in, so the
results are rendered by one template whichever way they were asked for.
"""

from __future__ import annotations

from flask import Blueprint, render_template, request, url_for

from cbir.web.errors import EXAMPLES, PARTIAL_HEADER
from cbir.web.inputs import read_query
from cbir.web.service import current_service

blueprint = Blueprint("pages", __name__)


@blueprint.route("/", methods=["GET", "POST"])
def search() -> str:
    service = current_service()
    query = read_query(required=request.method == "POST")
    # An upload without a URL of its own is shown as a preview; a later page needs none.
    wants_preview = bool(query and query.upload and not query.offset)
    outcome = service.search(query, preview=wants_preview) if query else None
    query_src = outcome.preview if outcome else None
    if outcome and outcome.query.id is not None:
        query_src = url_for("api.image", image_id=outcome.query.id)
    template = "_results.html" if request.headers.get(PARTIAL_HEADER) else "search.html"
    return render_template(
        template,
        outcome=outcome,
        query_src=query_src,
        k=query.k if query else None,
        examples=None if outcome else service.examples(EXAMPLES),
    )


@blueprint.get("/collection")
def collection() -> str:
    return render_template("collection.html", stats=current_service().stats())
