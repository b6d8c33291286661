"""The JSON API, and the bytes of indexed images (served by id only, never by path).

GET    /api/health                  200 {"status": "ok", "images": N} once the app is ready
GET    /api/search?id=ID&k=K        search with an indexed image (+ `offset` for later pages)
POST   /api/search                  multipart `image` (+ `k`, `offset`), or form / JSON `id`
GET    /api/collection              extractor, size, dimension, counts per label
POST   /api/images                  multipart `image` (+ `label`, `name`): add an image
DELETE /api/images/<id>             remove an image (writes: see cbir.web.guard)
GET    /images/<id>                 the image's bytes, Content-Type sniffed from them
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request, url_for
from werkzeug.exceptions import BadRequest

from cbir.web.guard import check_write_access
from cbir.web.inputs import field, read_label, read_query, read_upload
from cbir.web.service import Outcome, current_service

blueprint = Blueprint("api", __name__)

IMAGE_MAX_AGE = 3600


@blueprint.get("/api/health")
def health() -> Response:
    return jsonify({"status": "ok", "images": current_service().count()})


@blueprint.route("/api/search", methods=["GET", "POST"])
def search() -> Response:
    return jsonify(outcome_json(current_service().search(read_query())))


@blueprint.get("/api/collection")
def collection() -> Response:
    return jsonify(current_service().stats())


@blueprint.post("/api/images")
def add_image() -> tuple[Response, int, dict[str, str]]:
    check_write_access()
    upload = read_upload()
    if upload is None:
        raise BadRequest("send the image to add as a file in the multipart field `image`")
    name = field("name")
    if name is not None and not isinstance(name, str):
        raise BadRequest("name must be text")
    record = current_service().add(upload, read_label(field("label")), name)
    url = url_for("api.image", image_id=record.id)
    body = {"id": record.id, "label": record.label, "sha256": record.sha256, "url": url}
    return jsonify(body), 201, {"Location": url}


@blueprint.delete("/api/images/<path:image_id>")
def delete_image(image_id: str) -> Response:
    check_write_access()
    current_service().delete(image_id)
    return jsonify({"deleted": image_id})


@blueprint.get("/images/<path:image_id>")
def image(image_id: str) -> Response:
    stored = current_service().image(image_id)
    response = Response(stored.data, mimetype=stored.mimetype or "application/octet-stream")
    if stored.mimetype is None:  # never let a browser render bytes we could not identify
        response.headers["Content-Disposition"] = "attachment"
    response.set_etag(stored.sha256)
    response.cache_control.public = True
    response.cache_control.max_age = IMAGE_MAX_AGE
    return response.make_conditional(request)


def outcome_json(outcome: Outcome) -> dict:
    query = outcome.query
    return {
        "query": {"kind": query.kind, "id": query.id, "label": query.label},
        "k": outcome.k,
        "offset": outcome.offset,
        "more": outcome.more,  # results past these exist: ask again with offset + k
        "results": [
            {
                "rank": r.rank,
                "id": r.id,
                "score": r.score,
                "label": r.label,
                "url": url_for("api.image", image_id=r.id),
                "relevant": r.relevant,
            }
            for r in outcome.results
        ],
        "precision_at_k": outcome.precision,
        "took_ms": round(outcome.took_ms, 3),
    }
