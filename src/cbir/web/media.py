"""What an image's bytes really are (never what its name says), and small previews of them."""

from __future__ import annotations

import base64
import io

from PIL import Image

# Magic numbers of the formats cbir.images accepts; decoding still validates the rest.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"BM", "image/bmp"),
)
PREVIEW_SIDE = 256


def sniff_mimetype(data: bytes) -> str | None:
    """The image type `data` starts with, or None when it is not an image format we accept."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for signature, mimetype in _SIGNATURES:
        if data.startswith(signature):
            return mimetype
    return None


def preview_data_uri(data: bytes, side: int = PREVIEW_SIDE) -> str:
    """A PNG `data:` URI no larger than side x side, for showing an upload that has no URL.
    Call it only on bytes that `cbir.images.decode_image` accepted (limits already checked)."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (side, side))  # JPEG: decode at a reduced scale, far faster
        image = image.convert("RGBA")
        image.thumbnail((side, side))
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
