"""Shared fixtures: every image and dataset is generated on the fly, never committed."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Captured before the isolation fixture below clears it for each test.
REAL_DATA_DIR = os.environ.get("CBIR_DATA_DIR")
CLASS_COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    """No test reads the developer's data or cache folders unless it asks for them."""
    monkeypatch.delenv("CBIR_DATA_DIR", raising=False)
    monkeypatch.setenv("CBIR_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def noisy_image(rng: np.random.Generator, colour, size=(32, 32)) -> np.ndarray:
    base = np.array(colour, dtype=np.int16)
    noise = rng.integers(-40, 41, size=(*size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def labelled_folder(tmp_path) -> Path:
    """Three colour classes, four images each, in mixed formats and sizes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    formats = [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("bmp", "BMP")]
    for label, colour in CLASS_COLOURS.items():
        (root / label).mkdir(parents=True)
        for i, (suffix, fmt) in enumerate(formats):
            size = (32, 32) if i % 2 == 0 else (48, 40)
            data = encode(noisy_image(rng, colour, size), fmt)
            (root / label / f"{label}-{i}.{suffix}").write_bytes(data)
    return root


def official_batch(rng: np.random.Generator, n: int, offset: int) -> dict:
    labels = [(offset + i) % 10 for i in range(n)]
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    return {
        b"batch_label": b"generated",
        b"labels": labels,
        b"data": data,
        b"filenames": [f"img_{offset + i}.png".encode() for i in range(n)],
    }


@pytest.fixture
def official_cifar(tmp_path) -> Path:
    """A small CIFAR-10 in the official pickle layout: 5 train batches + test_batch."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        batch = official_batch(rng, 20, offset=(i - 1) * 20)
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(official_batch(rng, 30, 0), protocol=2))
    return folder


def make_tarball(folder: Path, target: Path) -> Path:
    with tarfile.open(target, "w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return target


@pytest.fixture
def real_data_dir() -> Path:
    if not REAL_DATA_DIR or not Path(REAL_DATA_DIR).exists():
        pytest.skip("CIFAR-10 not available: set CBIR_DATA_DIR (make test does it)")
    return Path(REAL_DATA_DIR)


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image: the classic decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
