import cv2
import numpy as np

from cbir.features.local import (
    colour_patches,
    dense_sift,
    detected_orb,
    detected_sift,
    gray_uint8,
    grid_positions,
    patch_grid_side,
    root_sift,
)


def _images(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_gray_matches_opencv_per_image():
    images = _images()
    expected = np.stack([cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in images])
    np.testing.assert_array_equal(gray_uint8(images), expected)


def test_detected_sift_keeps_blank_images_aligned():
    gray = gray_uint8(_images(3))
    gray[1] = 128  # a flat image has no keypoint
    descriptors = detected_sift(gray)
    assert len(descriptors) == 3
    assert descriptors[1].shape == (0, 128)
    assert descriptors[0].shape[1] == 128 and len(descriptors[0]) > 0


def _textured(n: int = 3, seed: int = 0) -> np.ndarray:
    """CIFAR-size gray images with structure at several scales: 4-px checkerboard + noise."""
    y, x = np.mgrid[0:32, 0:32]
    checker = (((y // 4) + (x // 4)) % 2) * 160
    noise = np.random.default_rng(seed).integers(0, 60, (n, 32, 32))
    return (checker + noise).astype(np.uint8)


def test_detected_orb_finds_keypoints_once_upscaled_and_keeps_blank_images_aligned():
    gray = _textured()
    gray[1] = 128
    descriptors = detected_orb(gray)
    assert len(descriptors) == 3
    assert descriptors[1].shape == (0, 256) and descriptors[1].dtype == np.float32
    for found in (descriptors[0], descriptors[2]):
        assert found.shape[1] == 256 and len(found) >= 10
        assert set(np.unique(found)) <= {0.0, 1.0}  # unpacked bits
    # why the upscaling: ORB's 31-px patch and border leave no room in 32x32 pixels
    assert detected_orb(gray, upscale=1)[0].shape == (0, 256)


def test_detected_orb_bits_are_opencvs_bytes():
    gray = _textured(1)
    orb = cv2.ORB_create(edgeThreshold=15, patchSize=31)
    big = cv2.resize(gray[0], None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR)
    _, expected = orb.detectAndCompute(big, None)
    bits = detected_orb(gray)[0].astype(np.uint8)
    np.testing.assert_array_equal(np.packbits(bits, axis=1), expected)


def test_dense_sift_has_one_descriptor_per_grid_point():
    positions = grid_positions(32, step=8, margin=4)
    assert len(positions) == 16
    out = dense_sift(gray_uint8(_images(2)), positions, size=8.0, upscale=2)
    assert out.shape == (2, 16, 128)
    np.testing.assert_allclose(np.linalg.norm(root_sift(out), axis=-1), 1.0, rtol=1e-5)


def test_colour_patches_are_normalised():
    patches = colour_patches(_images(2), size=6, stride=2)
    assert patches.shape == (2, patch_grid_side(32, 6, 2) ** 2, 108)
    np.testing.assert_allclose(patches.mean(axis=-1), 0.0, atol=1e-4)
