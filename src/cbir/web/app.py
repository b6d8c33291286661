"""`create_app(config)`: the Flask application, with its collection loaded once per process."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from flask import Flask, Response, request
from flask.wrappers import Request
from werkzeug.exceptions import BadRequest
from werkzeug.formparser import FormDataParser

from cbir.errors import CbirError
from cbir.features import extractor_class
from cbir.images import DecodeLimits
from cbir.web import api, errors, pages
from cbir.web.admission import AdmissionPolicy
from cbir.web.guard import (
    ALLOWED_HOSTS_ENV,
    CONFIG_KEY,
    WRITE_TOKEN_ENV,
    WritePolicy,
    allowed_hosts,
    host_check,
)
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
    host: str = "127.0.0.1"  # the address served on: a name the server answers to
    allowed_hosts: tuple[str, ...] = ()  # more names it answers to (see cbir.web.guard)
    allow_writes: bool = False
    write_token: str | None = None
    admission: AdmissionPolicy = field(default_factory=AdmissionPolicy)

    @classmethod
    def from_env(
        cls,
        collection: str | Path,
        backend_options: dict[str, Any] | None = None,
        host: str = "127.0.0.1",
        allowed_hosts: tuple[str, ...] = (),
        allow_writes: bool = False,
    ) -> WebConfig:
        """Limits from CBIR_MAX_UPLOAD_BYTES and CBIR_MAX_IMAGE_PIXELS, budgets from
        CBIR_DECODE_PIXELS_PER_S and CBIR_BODY_BYTES_PER_S, more host names from
        CBIR_ALLOWED_HOSTS (comma separated) and the write token from CBIR_WRITE_TOKEN."""
        extra_hosts = tuple(os.environ.get(ALLOWED_HOSTS_ENV, "").split(","))
        budgets = AdmissionPolicy()
        return cls(
            collection=Path(collection),
            backend_options=dict(backend_options or {}),
            max_upload_bytes=_positive_env("CBIR_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            max_image_pixels=_positive_env("CBIR_MAX_IMAGE_PIXELS", cls.max_image_pixels),
            host=host,
            allowed_hosts=allowed_hosts + extra_hosts,
            allow_writes=allow_writes,
            write_token=os.environ.get(WRITE_TOKEN_ENV) or None,
            admission=AdmissionPolicy(
                pixels_per_s=_positive_env("CBIR_DECODE_PIXELS_PER_S", budgets.pixels_per_s),
                body_bytes_per_s=_positive_env("CBIR_BODY_BYTES_PER_S", budgets.body_bytes_per_s),
            ),
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
    """Uploads are parsed into memory (bounded by MAX_CONTENT_LENGTH): never a file on disk.
    A form body that does not parse is a 400 that says so (Werkzeug would silently read it as
    an empty form, and the request would be answered "nothing to search with")."""

    def make_form_data_parser(self) -> FormDataParser:
        parser = super().make_form_data_parser()
        parser.silent = False
        return parser

    def _load_form_data(self) -> None:
        try:
            super()._load_form_data()
        except ValueError as error:
            raise BadRequest(f"the form body could not be read ({str(error)[:100]})") from None

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return io.BytesIO()


def create_app(config: WebConfig) -> Flask:
    writes = WritePolicy.decide(config.host, config.allow_writes, config.write_token)
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.url_map.merge_slashes = False  # `/images//etc/x` is a 404, not a redirect
    app.config.update(MAX_CONTENT_LENGTH=config.max_upload_bytes, **{CONFIG_KEY: writes})
    app.before_request(host_check(allowed_hosts(config.host, config.allowed_hosts)))
    limits = DecodeLimits(max_pixels=config.max_image_pixels, max_bytes=config.max_upload_bytes)
    service = SearchService.open(
        config.collection, limits, config.backend_options, config.admission
    )
    app.extensions[EXTENSION_KEY] = service
    # Large bodies are admitted against their budget before they are parsed or hashed.
    app.before_request(lambda: service.admission.admit_body(request.content_length))
    extractor_name = service.collection.manifest["extractor"]["name"]
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
                "extractor": extractor_name,
                "about": extractor_about(extractor_name),
            },
        }

    return app


def extractor_about(name: str) -> str:
    """One line on what the collection's extractor matches, when the extractor says."""
    try:
        return str(getattr(extractor_class(name), "about", "") or "")
    except CbirError:  # an extractor this version does not know: no line, not an error
        return ""


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
