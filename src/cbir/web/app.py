"""`create_app(config)`: the Flask application, with its collection loaded once per process."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from flask import Flask, Response
from flask.wrappers import Request

from cbir.errors import CbirError
from cbir.images import DecodeLimits
from cbir.web import api, errors, pages
from cbir.web.inputs import DEFAULT_K, MAX_K
from cbir.web.service import EXTENSION_KEY, SearchService

MIB = 2**20
K_OPTIONS = (5, 10, 20, 50, 100)

# No inline script or style, no plugins, no framing; previews of uploads are data: URIs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class WebConfig:
    collection: Path
    max_upload_bytes: int = 16 * MIB  # whole request; more is answered 413
    max_image_pixels: int = 40_000_000  # decompression bombs are refused before decoding
    backend_options: dict[str, Any] = field(default_factory=dict)  # this run's connection

    @classmethod
    def from_env(
        cls, collection: str | Path, backend_options: dict[str, Any] | None = None
    ) -> WebConfig:
        """Limits from CBIR_MAX_UPLOAD_BYTES and CBIR_MAX_IMAGE_PIXELS when set."""
        return cls(
            collection=Path(collection),
            backend_options=dict(backend_options or {}),
            max_upload_bytes=_positive_env("CBIR_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            max_image_pixels=_positive_env("CBIR_MAX_IMAGE_PIXELS", cls.max_image_pixels),
        )


def _positive_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise CbirError(f"{name} must be a positive whole number, got {raw!r}")
    return value


class InMemoryRequest(Request):
    """Uploads are parsed into memory (bounded by MAX_CONTENT_LENGTH): never a file on disk."""

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return io.BytesIO()


def create_app(config: WebConfig) -> Flask:
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.url_map.merge_slashes = False  # `/images//etc/x` is a 404, not a redirect
    app.config.update(MAX_CONTENT_LENGTH=config.max_upload_bytes)
    limits = DecodeLimits(max_pixels=config.max_image_pixels, max_bytes=config.max_upload_bytes)
    service = SearchService.open(config.collection, limits, config.backend_options)
    app.extensions[EXTENSION_KEY] = service
    app.register_blueprint(api.blueprint)
    app.register_blueprint(pages.blueprint)
    errors.register(app)
    app.after_request(_security_headers)

    @app.context_processor
    def page_context() -> dict:
        return {
            "k_options": K_OPTIONS,
            "default_k": DEFAULT_K,
            "max_k": MAX_K,
            "max_upload_bytes": config.max_upload_bytes,
            "summary": {  # the footer's line; counted afresh, other processes add images
                "images": service.count(),
                "extractor": service.collection.manifest["extractor"]["name"],
            },
        }

    return app


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
