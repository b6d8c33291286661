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
    process.py   a real `cbir serve` child process, for browser tests and benchmarks
    client.py    a stdlib HTTP client for a running server (keep-alive, multipart)
"""

from cbir.web.app import WebConfig, create_app

__all__ = ["WebConfig", "create_app"]
