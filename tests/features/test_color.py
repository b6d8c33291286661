"""GCH: the HSV histogram puts colours in the right bins and sums to one (squared); the gray
variant's levels are bit-identical to Pillow's convert("L"), its histograms np.histogram's."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

from cbir.errors import CbirError
from cbir.features import get_extractor
from cbir.features.color import luma_uint8
from cbir.images import resize_batch
from cbir.pipeline import settle_input_size

PHOTOS = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]


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
    extractor = get_extractor("gch", space="gray", sqrt=False, bins=bins, image_size=size)
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
    assert extractor.input_size == (32, 32)  # its first images settled it: CIFAR's size
    one_by_one = np.concatenate(
        [extractor.transform(images[i : i + 1]) for i in range(0, 1100, 97)]
    )
    np.testing.assert_array_equal(whole[::97], one_by_one)


def test_gch_reference_gray_input_size() -> None:
    extractor = get_extractor("gch", space="gray", sqrt=False, image_size=32)
    assert extractor.input_size == (32, 32)
    assert extractor.dim == 256
    assert not extractor.needs_fit
    assert extractor.transform(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 256)


def test_hsv_histogram_bins_known_colours() -> None:
    extractor = get_extractor("gch", hue_bins=6, saturation_bins=2, value_bins=2, image_size=4)
    assert extractor.dim == 24
    # one pure colour per image, each at the start of its hue bin: red 0, yellow 1, ... magenta 5
    pure = [(255, 0, 0), (255, 255, 0), (0, 255, 0), (0, 255, 255), (0, 0, 255), (255, 0, 255)]
    pure_images = np.array(pure, np.uint8)[:, None, None, :].repeat(4, 1).repeat(4, 2)
    features = extractor.transform(pure_images)
    for hue, vector in enumerate(features):
        expected = np.zeros(24, np.float32)
        expected[(hue * 2 + 1) * 2 + 1] = 1.0  # saturated and bright
        np.testing.assert_allclose(vector, expected)
    # dark gray and white: saturation 0, hue bin 0; half the pixels each -> sqrt(1/2)
    half = np.full((1, 4, 4, 3), 40, np.uint8)
    half[:, :2] = 255
    np.testing.assert_allclose(np.flatnonzero(extractor.transform(half)[0]), [0, 1])
    np.testing.assert_allclose(extractor.transform(half)[0, :2], np.sqrt(0.5))


def test_hsv_histogram_is_a_unit_vector_at_any_size() -> None:
    rng = np.random.default_rng(3)
    for side in (32, 96, 128):
        images = rng.integers(0, 256, (5, side, side, 3), dtype=np.uint8)
        features = get_extractor("gch", image_size=side).transform(images)
        assert features.shape == (5, 256)
        np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, rtol=1e-5)


def test_photos_are_described_at_the_photo_size_and_cifar_sized_images_at_their_own() -> None:
    photos = np.stack([resize_batch(photo[None], (400, 600))[0] for photo in PHOTOS])
    gch = get_extractor("gch")
    assert gch.params["image_size"] == 0  # auto, not settled yet
    settle_input_size(gch, photos)
    assert gch.input_size == (128, 128) == (gch.photo_side,) * 2
    assert gch.describe()["params"]["image_size"] == 128  # what a collection records
    vectors = gch.transform(resize_batch(photos, gch.input_size))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # a settled size never changes: the same extractor refuses CIFAR-sized images
    with pytest.raises(CbirError, match="expects 128x128 images, got 32x32"):
        gch.transform(resize_batch(photos, (32, 32)))
    cifar = get_extractor("gch")
    settle_input_size(cifar, resize_batch(photos, (32, 32)))
    assert cifar.input_size == (32, 32) and cifar.params["image_size"] == 32


def test_a_real_histogram_of_a_photo_needs_its_pixels() -> None:
    # the share of each colour at the photo size is close to the one at full resolution; a
    # 32x32 thumbnail blends neighbouring pixels into colours the photo does not hold
    photo = skimage.data.coffee()[None]
    full = get_extractor("gch", image_size=400)
    exact = full.transform(resize_batch(photo, (400, 400)))[0]
    at_photo = get_extractor("gch").transform(resize_batch(photo, (128, 128)))[0]
    at_thumb = get_extractor("gch").transform(resize_batch(photo, (32, 32)))[0]
    assert float(exact @ at_photo) > float(exact @ at_thumb)
    assert float(exact @ at_photo) > 0.99


def test_an_extractor_saved_unsettled_stays_auto(tmp_path) -> None:
    from cbir.features import load_extractor

    get_extractor("gch").save(tmp_path / "auto")
    loaded = load_extractor(tmp_path / "auto")
    assert loaded.params["image_size"] == 0  # nothing settled it: its first images will
    assert loaded.transform(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 256)
    assert loaded.params["image_size"] == 32
    photo = get_extractor("gch")
    assert photo.describe()["params"]["image_size"] == 128  # a manifest names a real size


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
        get_extractor("gch", image_size=32).transform(images)


@pytest.mark.parametrize(
    "params",
    [{"bins": 0}, {"bins": 257}, {"bins": 2.5}, {"bins": "8"}, {"image_size": -1},
     {"hue_bins": 0}, {"space": "lab"}, {"image_size": 4096}],
)  # fmt: skip
def test_gch_rejects_invalid_params(params: dict) -> None:
    with pytest.raises(CbirError, match="bins|image_size|space"):
        get_extractor("gch", **params)


def test_a_collection_saved_before_hsv_keeps_its_gray_histogram(tmp_path) -> None:
    import json

    from cbir.features import load_extractor

    folder = tmp_path / "extractor"
    folder.mkdir()
    saved = {"name": "gch", "params": {"bins": 64, "image_size": 32}}  # written by the old gch
    (folder / "params.json").write_text(json.dumps(saved))
    loaded = load_extractor(folder)
    assert loaded.params["space"] == "gray" and not loaded.params["sqrt"]
    image = np.full((1, 32, 32, 3), 200, np.uint8)
    assert loaded.transform(image)[0].tolist() == [0.0] * 50 + [1024.0] + [0.0] * 13
