"""GCH: gray levels bit-identical to Pillow's convert("L"), histograms equal to np.histogram."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cbir.errors import CbirError
from cbir.features import get_extractor
from cbir.features.color import luma_uint8


def pil_gray(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).convert("L"))


def test_luma_matches_pillow_for_every_rgb_colour() -> None:
    codes = np.arange(1 << 24, dtype=np.uint32)
    every_colour = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=-1)
    every_colour = every_colour.astype(np.uint8).reshape(4096, 4096, 3)
    np.testing.assert_array_equal(luma_uint8(every_colour[None])[0], pil_gray(every_colour))


@pytest.mark.parametrize(("bins", "size"), [(256, 32), (16, 32), (10, 16), (7, 20), (1, 8)])
def test_gch_equals_histogram_of_pillow_gray(bins: int, size: int) -> None:
    rng = np.random.default_rng(bins)
    images = rng.integers(0, 256, (23, size, size, 3), dtype=np.uint8)
    images[0] = 255  # a level in the last bin
    images[1] = 0
    extractor = get_extractor("gch", bins=bins, image_size=size)
    features = extractor.transform(images)
    expected = [np.histogram(pil_gray(image), bins=bins, range=(0, 256))[0] for image in images]
    assert features.dtype == np.float32
    assert features.shape == (len(images), bins) == (len(images), extractor.dim)
    np.testing.assert_array_equal(features, np.array(expected, dtype=np.float32))
    np.testing.assert_array_equal(features.sum(axis=1), size * size)


def test_gch_large_batch_is_chunked_consistently() -> None:
    # more pixels than one internal chunk: the result must not depend on the chunking
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (1100, 32, 32, 3), dtype=np.uint8)
    extractor = get_extractor("gch")
    whole = extractor.transform(images)
    one_by_one = np.concatenate(
        [extractor.transform(images[i : i + 1]) for i in range(0, 1100, 97)]
    )
    np.testing.assert_array_equal(whole[::97], one_by_one)


def test_gch_defaults_and_input_size() -> None:
    extractor = get_extractor("gch")
    assert extractor.params == {"bins": 256, "image_size": 32}
    assert extractor.input_size == (32, 32)
    assert extractor.dim == 256
    assert not extractor.needs_fit
    assert extractor.transform(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 256)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 32, 32), np.uint8),  # no channel axis
        np.zeros((2, 32, 32, 4), np.uint8),  # RGBA
        np.zeros((32, 32, 3), np.uint8),  # one image, not a batch
        np.zeros((2, 32, 32, 3), np.float32),  # not uint8
        np.zeros((2, 16, 16, 3), np.uint8),  # wrong size
    ],
)
def test_gch_rejects_wrong_input(images: np.ndarray) -> None:
    with pytest.raises(CbirError):
        get_extractor("gch").transform(images)


@pytest.mark.parametrize(
    "params", [{"bins": 0}, {"bins": 257}, {"bins": 2.5}, {"bins": "8"}, {"image_size": 0}]
)
def test_gch_rejects_invalid_params(params: dict) -> None:
    with pytest.raises(CbirError, match="bins|image_size"):
        get_extractor("gch", **params)
