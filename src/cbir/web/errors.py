"""Errors as people and programs want them: JSON with a 4xx code for /api/* and /images/*, the
search page with a message elsewhere; never a stack trace (a 500 is logged, not shown)."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError

from cbir.errors import CbirError, ImageDecodeError
from cbir.locking import CollectionBusyError
from cbir.web.service import current_service

log = logging.getLogger(__name__)

JSON_PREFIXES = ("/api/", "/images/")
PARTIAL_HEADER = "X-Partial"  # the page's script asks for the results fragment only
EXAMPLES = 12  # images offered to start a search from
BUSY_RETRY_S = 5  # Retry-After of a write refused while another process writes
BUSY_MESSAGE = "the collection is busy: another process is writing to it; try again shortly"


def register(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(CbirError, _cbir_error)
    app.register_error_handler(Exception, _unexpected_error)


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    response = error_response(status, _message(error))
    for name, value in error.get_headers():  # Allow, Retry-After, WWW-Authenticate
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _cbir_error(error: CbirError) -> Response:
    # An image that does not decode safely is well-formed HTTP with unusable content: 422.
    if isinstance(error, ImageDecodeError):
        return error_response(422, str(error))
    if isinstance(error, CollectionBusyError):
        # A write while another process (an indexing run) holds the writer lock. Who holds
        # it (path, pid, command line) is for the server's log, never for the client.
        log.warning("%s %s refused: %s", request.method, request.path, error)
        response = error_response(503, BUSY_MESSAGE)
        response.headers["Retry-After"] = str(BUSY_RETRY_S)
        return response
    return error_response(400, str(error))


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
