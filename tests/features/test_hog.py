"""HOG: the batched extractor equals skimage.feature.hog applied image by image."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from skimage.feature import hog as skimage_hog

from cbir.errors import CbirError
from cbir.features import get_extractor
from cbir.features.base import to_gray
from cbir.features.hog import exact_orientation_bins, orientation_bins
from cbir.images import resize_batch


def reference(images: np.ndarray, **params) -> np.ndarray:
    """skimage on each float gray image, with the extractor's parameters."""
    cell, block = params["pixels_per_cell"], params["cells_per_block"]
    return np.stack(
        [
            skimage_hog(
                gray,
                orientations=params["orientations"],
                pixels_per_cell=(cell, cell),
                cells_per_block=(block, block),
                block_norm="L2-Hys",
                transform_sqrt=params["transform_sqrt"],
                feature_vector=True,
            )
            for gray in to_gray(images)
        ]
    )


def structured_images(size: int) -> np.ndarray:
    """Flat, striped, diagonal, checkered, ramped and single-dot images: many zero gradients and
    angles exactly on bin edges (0, 45, 90, 135 degrees)."""
    rows, cols = np.mgrid[0:size, 0:size]
    patterns = [
        np.zeros((size, size)),
        np.full((size, size), 255),
        (rows // 3 % 2) * 255,
        (cols // 4 % 2) * 200,
        ((rows + cols) // 5 % 2) * 255,
        ((rows - cols) // 2 % 2) * 180,
        ((rows // 4 + cols // 4) % 2) * 255,
        rows * 255 // (size - 1),
        cols * 7 % 256,
        (rows + cols) * 3 % 256,
        np.where((rows == size // 2) & (cols == size // 3), 255, 0),
    ]
    gray = np.stack(patterns).astype(np.uint8)
    colour = np.stack([gray, gray[::-1], gray[:, :, ::-1]], axis=-1)  # channels differ
    return np.concatenate([np.repeat(gray[..., None], 3, axis=-1), colour])


def random_images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    images[: n // 2] = images[: n // 2] // 64 * 64  # few gray levels: flat patches and ties
    return images


DEFAULTS = {  # what the defaults settle to on CIFAR-10's 32x32 images
    "orientations": 9,
    "pixels_per_cell": 8,
    "cells_per_block": 2,
    "transform_sqrt": True,
    "image_size": 32,
}
PHOTO_DEFAULTS = {**DEFAULTS, "image_size": 128, "pixels_per_cell": 32}  # and on photos
VARIANTS = [
    {},
    {"image_size": 64, "pixels_per_cell": 16},
    {"image_size": 64, "pixels_per_cell": 16, "cells_per_block": 3, "orientations": 12},
    {"orientations": 4, "transform_sqrt": False},  # bin edges at 0, 45, 90, 135 degrees
    {"orientations": 8, "cells_per_block": 1},
    {"image_size": 37, "pixels_per_cell": 6, "cells_per_block": 3, "orientations": 7},
    {"image_size": 24, "pixels_per_cell": 5, "orientations": 180},
    {"image_size": 128, "pixels_per_cell": 32},  # the photo default
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(map(str, v.values())))
def test_hog_equals_skimage(variant: dict) -> None:
    params = {**DEFAULTS, **variant}
    size = params["image_size"]
    rng = np.random.default_rng(size * 100 + params["orientations"])
    images = np.concatenate([random_images(rng, 40, size), structured_images(size)])
    extractor = get_extractor("hog", **variant)
    features = extractor.transform(images)
    expected = reference(images, **params)
    assert features.dtype == np.float32
    assert features.shape == expected.shape == (len(images), extractor.dim)
    np.testing.assert_allclose(features, expected, rtol=0, atol=1e-5)


def test_hog_default_dim_and_params() -> None:
    cifar = get_extractor("hog")
    assert cifar.transform(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 324)
    assert cifar.input_size == (32, 32)  # settled by its first images: CIFAR's own size
    assert cifar.params == DEFAULTS and cifar.dim == 324
    photos = get_extractor("hog")
    assert photos.input_size == (128, 128) == (photos.photo_side,) * 2  # files to decode
    assert photos.params == PHOTO_DEFAULTS  # settled, as a collection records it
    assert photos.dim == 324  # 4x4 cells either way


def test_hog_of_real_photos_at_the_photo_size_equals_skimage() -> None:
    photos = resize_batch(np.stack([skimage.data.chelsea(), skimage.data.cat()]), (300, 451))
    photos = resize_batch(np.concatenate([photos, photos[:, ::-1]]), (128, 128))
    extractor = get_extractor("hog")
    features = extractor.transform(photos)
    assert extractor.params == PHOTO_DEFAULTS
    np.testing.assert_allclose(features, reference(photos, **PHOTO_DEFAULTS), atol=1e-5)
    # the settled size is kept: CIFAR-sized images are refused, not described at another size
    with pytest.raises(CbirError, match="expects 128x128 images, got 32x32"):
        extractor.transform(resize_batch(photos, (32, 32)))


def test_hog_large_batch_is_chunked_consistently() -> None:
    rng = np.random.default_rng(3)
    images = random_images(rng, 1200, 32)  # more than one internal chunk
    extractor = get_extractor("hog")
    whole = extractor.transform(images)
    picked = np.arange(0, 1200, 111)
    np.testing.assert_array_equal(whole[picked], extractor.transform(images[picked]))
    np.testing.assert_allclose(whole[picked], reference(images[picked], **DEFAULTS), atol=1e-5)


@pytest.mark.parametrize("orientations", [1, 4, 7, 9, 12, 180])
def test_fast_orientation_bins_equal_exact_ones_on_edges(orientations: int) -> None:
    # integer gradients hit exact angles (0, 45, 90, 135, 180 deg, -0.0, zero vectors), plus
    # gradients placed a hair either side of every bin edge
    ints = np.arange(-6, 7, dtype=np.float32)
    g_row, g_col = (grid.ravel() for grid in np.meshgrid(ints, ints))
    edges = np.deg2rad((180.0 / orientations) * np.arange(-orientations, orientations + 1))
    hair = np.array([-1e-6, -1e-7, 0.0, 1e-7, 1e-6])
    angles = (edges[:, None] + hair).ravel()
    g_row = np.concatenate([g_row, np.sin(angles), [-0.0, 0.0, -0.0]]).astype(np.float32)
    g_col = np.concatenate([g_col, np.cos(angles), [-1.0, -1.0, 0.0]]).astype(np.float32)
    np.testing.assert_array_equal(
        orientation_bins(g_row, g_col, orientations),
        exact_orientation_bins(g_row, g_col, orientations),
    )


@pytest.mark.parametrize(
    "params",
    [
        {"image_size": 15, "pixels_per_cell": 8},  # smaller than one 2x2 block of 8-pixel cells
        {"image_size": -1},
        {"image_size": 5000},
        {"orientations": 0},
        {"orientations": 181},
        {"pixels_per_cell": -1},
        {"cells_per_block": 0},
        {"transform_sqrt": 1},
        {"orientations": 9.0},
        {"block_norm": "L1"},
    ],
)
def test_hog_rejects_invalid_params(params: dict) -> None:
    with pytest.raises(CbirError):
        get_extractor("hog", **params)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 32, 32, 3), np.float64),
        np.zeros((2, 32, 32, 1), np.uint8),
        np.zeros((2, 64, 64, 3), np.uint8),
        np.zeros((2, 32, 31, 3), np.uint8),
    ],
)
def test_hog_rejects_wrong_input(images: np.ndarray) -> None:
    with pytest.raises(CbirError):
        get_extractor("hog").transform(images)
