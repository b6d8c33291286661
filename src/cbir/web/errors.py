"""Errors as people and programs want them: JSON with a 4xx code for /api/* and /images/*, the
search page with a message elsewhere; never a stack trace (a 500 is logged, not shown)."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed

from cbir.errors import CbirError, ImageDecodeError
from cbir.locking import CollectionBusyError
from cbir.web.service import current_service

log = logging.getLogger(__name__)

JSON_PREFIXES = ("/api/", "/images/")
PARTIAL_HEADER = "X-Partial"  # the page's script asks for the results fragment only
EXAMPLES = 12  # images offered to start a search from


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(CbirError, _cbir_error)
    app.register_error_handler(Exception, _unexpected_error)


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    response = error_response(status, _message(error))
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    return response


def _cbir_error(error: CbirError) -> Response:
    # An image that does not decode safely is well-formed HTTP with unusable content: 422.
    # A write while another process (an indexing run) holds the writer lock: 503, retry later.
    if isinstance(error, ImageDecodeError):
        status = 422
    elif isinstance(error, CollectionBusyError):
        status = 503
    else:
        status = 400
    return error_response(status, str(error))


def _unexpected_error(error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.path)
    return error_response(500, _message(InternalServerError()))


def _message(error: HTTPException) -> str:
    """Our own description when we raised it, else a helpful default for the status."""
    custom = error.description != type(error).description
    if custom and error.description:
        return error.description
    limit = request.max_content_length
    defaults = {
        404: f"nothing here: {request.method} {request.path}",
        405: f"{request.method} is not allowed on {request.path}",
        413: (
            f"the request is larger than the {limit / 2**20:.0f} MiB upload limit; "
            "send a smaller image"
            if limit
            else "the request is too large"
        ),
        500: "internal error; the server log has the details",
    }
    return defaults.get(error.code or 500, error.description or "error")


def error_response(status: int, message: str) -> Response:
    if request.path.startswith(JSON_PREFIXES):
        response = jsonify({"error": message, "status": status})
    else:
        template = "_results.html" if request.headers.get(PARTIAL_HEADER) else "search.html"
        # A page that went wrong still offers a way on: a few images to search with.
        examples = current_service().examples(EXAMPLES) if status < 500 else None
        page = render_template(template, error=message, status=status, examples=examples)
        response = Response(page)
    response.status_code = status
    return response
