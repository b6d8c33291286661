"""The search web app and JSON API: a Flask application built by `create_app(config)` and
served by `cbir serve` under waitress.

    app.py       create_app, WebConfig, security headers
    service.py   the open collection shared by every request: search, add, delete, images
    guard.py     the Host allow-list (no DNS rebinding) and permission to write
    admission.py budgets for large bodies and costly decodes (503 + Retry-After past them)
    inputs.py    reading and validating request fields (k, id, uploads, labels, names)
    media.py     content sniffing and query previews
    errors.py    JSON errors for /api/* and /images/*, friendly pages elsewhere
    api.py       the JSON API and image bytes
    pages.py     the search and collection pages

A real `cbir serve` child process and an HTTP client for it, used by the tests and the
benchmark scripts, live in tests/support/.
"""

from cbir.web.app import WebConfig, create_app

__all__ = ["WebConfig", "create_app"]
