"""Reading request fields, for the API and the pages alike: every field is checked here, and a
missing or malformed one is a 400 with a message that says what to send, never a 500.

A field may come in a JSON object body, a form (urlencoded or multipart) or the query string,
looked up in that order.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from flask import g, request
from werkzeug.exceptions import BadRequest, UnsupportedMediaType
from werkzeug.utils import secure_filename

DEFAULT_K = 10
MAX_K = 100
MAX_DEPTH = 1000  # offset + k: how deep paging may go
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_ID_LENGTH = 1024
MAX_LABEL_LENGTH = 100
MAX_NAME_LENGTH = 64
_QUOTED = 40  # characters of a bad value quoted back in an error message


@dataclass(frozen=True)
class Upload:
    data: bytes
    filename: str | None  # as the client named it: for display only, never for a path


@dataclass(frozen=True)
class QueryRequest:
    """One search: by uploaded image or by the id of an indexed image, k results."""

    k: int
    upload: Upload | None = None
    image_id: str | None = None
    offset: int = 0


def field(name: str) -> Any:
    body = json_body()
    if body is not None and name in body:
        return body[name]
    if request.mimetype in FORM_TYPES and name in request.form:
        return request.form[name]
    return request.args.get(name)


def json_body() -> dict[str, Any] | None:
    """The request's JSON object, None when it sent none; a 400 that says what is wrong when
    it is malformed, nested too deep for the parser, or not an object. Parsed once."""
    if "json_body" in g:
        return g.json_body
    body = None
    if request.is_json:
        text = request.get_data(cache=True)
        try:
            body = json.loads(text)
        except RecursionError:
            raise BadRequest("the JSON body is nested too deeply; send a flat object") from None
        except ValueError as error:  # JSONDecodeError, or bytes that are not UTF-8/16/32
            raise BadRequest(f"the body is not valid JSON ({_short(error)})") from None
        if not isinstance(body, dict):
            raise BadRequest(
                'the JSON body must be an object such as {"id": "...", "k": 10}, '
                f"not {type(body).__name__ if body is not None else 'null'}"
            )
    elif request.content_length and request.mimetype not in FORM_TYPES:
        shown = _quote(request.mimetype or "none")
        raise UnsupportedMediaType(
            f"a body of type {shown} is not read: send multipart/form-data (an image file "
            'in the field `image`), a form, or JSON such as {"id": "...", "k": 10}'
        )
    g.json_body = body
    return body


def parse_k(raw: Any, default: int = DEFAULT_K, maximum: int = MAX_K) -> int:
    if raw is None or raw == "":
        return default
    return _whole_number(raw, f"k must be a whole number from 1 to {maximum}", 1, maximum)


def parse_offset(raw: Any, k: int) -> int:
    """How many results to skip (paging): 0 to MAX_DEPTH - k."""
    if raw is None or raw == "":
        return 0
    most = MAX_DEPTH - k
    rule = f"offset must be a whole number from 0 to {most} (for k={k})"
    return _whole_number(raw, rule, 0, most)


def _whole_number(raw: Any, rule: str, low: int, high: int) -> int:
    problem = f"{rule}, got {_quote(raw)}"
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise BadRequest(problem)
    try:
        number = raw if isinstance(raw, int) else int(raw.strip(), 10)
    except ValueError:
        raise BadRequest(problem) from None
    if not low <= number <= high:
        raise BadRequest(problem)
    return number


def read_upload(name: str = "image") -> Upload | None:
    """The uploaded file `name`, held in memory (the request class never spools to disk)."""
    json_body()  # a body of a type we do not read is a 415, not "nothing to search with"
    if request.mimetype != "multipart/form-data":
        return None
    file = request.files.get(name)
    if file is None:
        if name in request.form:
            raise BadRequest(f"`{name}` must be a file (a part with a filename), not text")
        return None
    data = file.read()
    if not data:
        raise BadRequest(f"the uploaded file `{name}` is empty; choose an image file")
    filename = (file.filename or "").strip()[:200] or None
    return Upload(data=data, filename=filename)


def read_image_id(raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > MAX_ID_LENGTH or "\x00" in raw:
        raise BadRequest(f"id must be the id of an indexed image, got {_quote(raw)}")
    return raw


def read_query(required: bool = True) -> QueryRequest | None:
    """The search a request asks for; None when `required` is False and it asks for none."""
    k = parse_k(field("k"))
    offset = parse_offset(field("offset"), k)
    upload = read_upload()
    image_id = read_image_id(field("id"))
    if upload and image_id:
        raise BadRequest("send either an image (field `image`) or an id (field `id`), not both")
    if not upload and not image_id:
        if not required:
            return None
        raise BadRequest(
            "nothing to search with: send an image file in the multipart field `image`, "
            "or the id of an indexed image in the field `id`"
        )
    return QueryRequest(k=k, upload=upload, image_id=image_id, offset=offset)


def read_label(raw: Any) -> str | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str):
        raise BadRequest(f"label must be text, got {_quote(raw)}")
    label = raw.strip()
    if len(label) > MAX_LABEL_LENGTH or any(unicodedata.category(c)[0] == "C" for c in label):
        raise BadRequest(
            f"label must be at most {MAX_LABEL_LENGTH} printable characters, got {_quote(label)}"
        )
    return label


def safe_name(filename: str | None) -> str:
    """A name fit for an image id: ASCII letters, digits, '.', '_', '-' only, so that
    `<script>` or `../../etc/passwd` in an upload's name ends up as harmless text."""
    name = secure_filename(filename or "")[-MAX_NAME_LENGTH:].lstrip("._-")
    return name or "upload"


def _short(error: Exception) -> str:
    return str(error)[:120]


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTED else text[: _QUOTED - 3] + "..."
