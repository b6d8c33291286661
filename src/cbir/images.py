"""Safe image decoding: bytes or a file in, an RGB uint8 (H, W, 3) array out.

Everything an untrusted file can do wrong becomes an ImageDecodeError that names the file:
unknown formats, truncated data, decompression bombs (a tiny file that claims 40000x40000
pixels) and oversized files. Limits come from the caller or the CBIR_MAX_IMAGE_PIXELS /
CBIR_MAX_IMAGE_BYTES environment variables.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cbir.errors import ImageDecodeError

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
DEFAULT_MAX_PIXELS = 40_000_000  # about 6300x6300: bigger than any real photo a user indexes
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
RESAMPLE = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_env(cls) -> DecodeLimits:
        return cls(
            max_pixels=int(os.environ.get("CBIR_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS)),
            max_bytes=int(os.environ.get("CBIR_MAX_IMAGE_BYTES", DEFAULT_MAX_BYTES)),
        )


def decode_image(
    data: bytes,
    size: tuple[int, int] | None = None,
    name: str = "image",
    limits: DecodeLimits | None = None,
) -> np.ndarray:
    """Decode `data` to RGB uint8 (H, W, 3), resized to `size` (height, width) when given.

    Transparent pixels are composited on white (a logo on a transparent background looks like
    it does in a browser), and EXIF orientation is applied, so that a photo is described the
    way a person sees it.
    """
    limits = limits or DecodeLimits.from_env()
    if len(data) == 0:
        raise ImageDecodeError(f"{name}: the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageDecodeError(
            f"{name}: {len(data):,} bytes is over the {limits.max_bytes:,}-byte limit"
        )
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return _to_array(image, size, name, limits)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name}: not an image in a known format") from None
    except Image.DecompressionBombError:
        raise ImageDecodeError(
            f"{name}: image claims more pixels than the {limits.max_pixels:,}-pixel limit"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageDecodeError(f"{name}: corrupt or truncated image ({error})") from None


def _to_array(
    image: Image.Image, size: tuple[int, int] | None, name: str, limits: DecodeLimits
) -> np.ndarray:
    if image.format not in ALLOWED_FORMATS:
        raise ImageDecodeError(
            f"{name}: format {image.format} is not accepted; use one of "
            f"{', '.join(sorted(ALLOWED_FORMATS - {'MPO'}))}"
        )
    width, height = image.size
    # The header is read, not the pixels: check the claimed size before decoding anything.
    if width * height > limits.max_pixels:
        raise ImageDecodeError(
            f"{name}: {width}x{height} pixels is over the {limits.max_pixels:,}-pixel limit"
        )
    if width == 0 or height == 0:
        raise ImageDecodeError(f"{name}: image has no pixels")
    if size is not None and image.format == "JPEG":
        # JPEG can decode at 1/2, 1/4, 1/8 scale for free: far faster for thumbnails.
        image.draft("RGB", (size[1], size[0]))
    image.load()
    image = ImageOps.exif_transpose(image) or image
    image = _flatten_to_rgb(image)
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), RESAMPLE, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def resize_batch(images: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """(N, H, W, 3) uint8 images at `size` (height, width), resized as decoding resizes a
    file (so an in-memory image and its file give the same pixels); unchanged when they are
    that size already or `size` is None."""
    if size is None or images.shape[1:3] == tuple(size):
        return images
    out = np.empty((len(images), size[0], size[1], 3), dtype=np.uint8)
    for row, image in enumerate(images):
        resized = Image.fromarray(image).resize((size[1], size[0]), RESAMPLE, reducing_gap=3.0)
        out[row] = np.asarray(resized)
    return out


def _flatten_to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale to 8 bits rather than clipping everything to white.
        array = np.asarray(image, dtype=np.float64)
        peak = max(float(array.max()), 1.0)
        scale = 255.0 / (65535.0 if peak > 255 else 255.0)
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def read_image_file(
    path: Path, size: tuple[int, int] | None = None, limits: DecodeLimits | None = None
) -> np.ndarray:
    """Decode an image file; a missing or unreadable file is an ImageDecodeError too."""
    limits = limits or DecodeLimits.from_env()
    path = Path(path)
    try:
        file_size = path.stat().st_size
        if file_size > limits.max_bytes:
            raise ImageDecodeError(
                f"{path}: {file_size:,} bytes is over the {limits.max_bytes:,}-byte limit"
            )
        data = path.read_bytes()
    except OSError as error:
        raise ImageDecodeError(f"{path}: cannot read file ({error.strerror})") from None
    return decode_image(data, size=size, name=str(path), limits=limits)


@dataclass
class DecodedBatch:
    """Images that decoded (stacked), where they came from, and the ones that failed."""

    images: np.ndarray
    ok: list[int]  # positions in the input that decoded
    failures: list[tuple[int, str]]  # (position, message)


def decode_many(
    sources: Sequence[bytes | Path],
    size: tuple[int, int],
    workers: int = 2,
    names: Sequence[str] | None = None,
    limits: DecodeLimits | None = None,
) -> DecodedBatch:
    """Decode many images to one (N, H, W, 3) batch in a thread pool (Pillow releases the GIL
    while decoding and resizing). Failures are reported, never raised, so one bad file does
    not stop a whole indexing run."""
    limits = limits or DecodeLimits.from_env()

    def decode_one(position: int) -> np.ndarray:
        source = sources[position]
        if isinstance(source, bytes | bytearray):
            name = names[position] if names else f"image {position}"
            return decode_image(bytes(source), size=size, name=name, limits=limits)
        return read_image_file(Path(source), size=size, limits=limits)

    def attempt(position: int) -> np.ndarray | str:
        try:
            return decode_one(position)
        except ImageDecodeError as error:
            return str(error)

    if workers > 1 and len(sources) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(attempt, range(len(sources))))
    else:
        outcomes = [attempt(position) for position in range(len(sources))]
    ok = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, str)]
    failures = [(i, outcome) for i, outcome in enumerate(outcomes) if isinstance(outcome, str)]
    if ok:
        images = np.stack([outcomes[i] for i in ok])
    else:
        images = np.zeros((0, size[0], size[1], 3), dtype=np.uint8)
    return DecodedBatch(images=images, ok=ok, failures=failures)
