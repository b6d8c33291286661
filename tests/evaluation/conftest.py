"""A small labelled folder of generated images, and benchmark runs over it, shared by the
evaluation tests (generated once per session: each run takes about a second)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cbir.evaluation.quality_run import BenchmarkOptions, run_folder_benchmark

# class -> (number of images, texture orientation); "solo" has one image: R = 0 for it.
CLASSES = {
    "stripes": (7, "vertical"), "bands": (6, "horizontal"), "checks": (5, "both"),
    "solo": (1, "none"),
}  # fmt: skip
FORMATS = [  # (suffix, Pillow format, mode, (height, width))
    ("png", "PNG", "RGB", (32, 32)),
    ("jpg", "JPEG", "RGB", (48, 40)),
    ("webp", "WEBP", "RGB", (120, 80)),
    ("png", "PNG", "L", (20, 30)),
    ("png", "PNG", "RGBA", (64, 64)),
    ("bmp", "BMP", "RGB", (33, 47)),
]
PLANTED_ORIGINAL = "stripes/img 0.png"
PLANTED_COPY = "stripes/copy of img 0.jpg"


def textured_image(rng: np.random.Generator, orientation: str, size: tuple[int, int]) -> np.ndarray:
    """A random smooth colour field (every image its own, so no two are near-copies) with a
    class texture on top that gradient features pick up."""
    height, width = size
    field = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC))
    y, x = np.mgrid[0:height, 0:width]
    period = max(height, width) / 8
    wave = {
        "vertical": np.sin(2 * np.pi * x / period),
        "horizontal": np.sin(2 * np.pi * y / period),
        "both": np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period),
        "none": np.zeros((height, width)),
    }[orientation]
    return np.clip(smooth * 0.6 + 50 * wave[..., None] + 40, 0, 255).astype(np.uint8)


def save(array: np.ndarray, path: Path, fmt: str, mode: str) -> None:
    image = Image.fromarray(array)
    if mode == "RGBA":  # half-transparent left half: composited on white when decoded
        alpha = np.full(array.shape[:2], 255, dtype=np.uint8)
        alpha[:, : array.shape[1] // 2] = 128
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray(alpha))
    elif mode == "L":
        image = image.convert("L")
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 92} if fmt in ("JPEG", "WEBP") else {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def make_folder(root: Path) -> Path:
    """Classes in mixed formats, modes and sizes; names with spaces; one class of one image; a
    planted near-copy (a PNG re-saved as JPEG); an unreadable file and an unlabelled image."""
    rng = np.random.default_rng(0)
    for label, (count, orientation) in CLASSES.items():
        for i in range(count):
            suffix, fmt, mode, size = FORMATS[i % len(FORMATS)]
            array = textured_image(rng, orientation, size)
            save(array, root / label / f"img {i}.{suffix}", fmt, mode)
    original = np.asarray(Image.open(root / PLANTED_ORIGINAL).convert("RGB"))
    save(original, root / PLANTED_COPY, "JPEG", "RGB")
    (root / "checks" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    save(textured_image(rng, "none", (32, 32)), root / "stray.png", "PNG", "RGB")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("folder") / "photos")


@pytest.fixture(scope="session")
def folder_runs(image_folder, tmp_path_factory) -> dict[str, Path]:
    """Leave-one-out runs of gch and hog over `image_folder` (read-only for the tests)."""
    runs = tmp_path_factory.mktemp("runs")
    for name in ("gch", "hog"):
        run_folder_benchmark(
            image_folder, runs / name, extractor_name=name, options=BenchmarkOptions(n_examples=4)
        )
    return {"gch": runs / "gch", "hog": runs / "hog"}
