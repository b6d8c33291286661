"""Local descriptors for bag-of-visual-words: SIFT (detected or on a dense grid), RootSIFT,
ORB, and contrast-normalised raw colour patches, all through OpenCV / numpy for a batch of images.

OpenCV releases the GIL, so per-image SIFT and ORB calls run on a small thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SIFT_DIM = 128
ORB_DIM = 256  # ORB's 32 bytes, one float per bit


def _cv2():
    import cv2  # imported lazily: listing extractors must not need OpenCV

    return cv2


def gray_uint8(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) RGB uint8 -> (N, H, W) uint8 with OpenCV's RGB2GRAY, as the reference did
    (one call for the whole batch: the conversion is per pixel)."""
    n, h, w, _ = images.shape
    flat = np.ascontiguousarray(images).reshape(n * h, w, 3)
    return _cv2().cvtColor(flat, _cv2().COLOR_RGB2GRAY).reshape(n, h, w)


def _map_images(fn: Callable[[np.ndarray], np.ndarray], gray: np.ndarray, threads: int) -> list:
    if threads <= 1 or len(gray) < 64:
        return [fn(image) for image in gray]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, gray, chunksize=64))


def detected_sift(
    gray: np.ndarray, contrast_threshold: float = 0.02, sigma: float = 0.9, threads: int = 1
) -> list[np.ndarray]:
    """SIFT keypoints detected and described per image; an image without keypoints gets a
    (0, 128) array, so the list stays aligned with the images (the reference skipped them)."""
    sift = _cv2().SIFT_create(contrastThreshold=contrast_threshold, sigma=sigma)

    def one(image: np.ndarray) -> np.ndarray:
        _, descriptors = sift.detectAndCompute(image, None)
        if descriptors is None:
            return np.zeros((0, SIFT_DIM), np.float32)
        return descriptors.astype(np.float32)

    return _map_images(one, gray, threads)


def detected_orb(
    gray: np.ndarray, upscale: int = 4, n_features: int = 500, threads: int = 1
) -> list[np.ndarray]:
    """ORB keypoints detected and described per image, enlarged `upscale` times first (bilinear);
    each descriptor becomes a (256,) float32 row of 0/1 bits, so the Euclidean k-means vocabulary
    and word assignment work unchanged (squared distance between bit vectors is the Hamming
    distance: k-means on unpacked bits is the usual way to build a BoVW vocabulary from ORB).
    An image without keypoints gets a (0, 256) array, as in `detected_sift`."""
    cv2 = _cv2()
    # ORB's 31-px descriptor patch covers 8 px of a 32x32 image at 4x, as `bovw`'s dense SIFT
    # keypoints do. Its default edgeThreshold 31 keeps keypoints out of a 31-px border: a 32x32
    # image at 1x gets none, and at 4x only the central 66x66 px of 128 are searched (CIFAR:
    # ~20 keypoints a picture, 4% get none). 15 lets them within 4 original px of the edge
    # (~85 a picture, 0.1% get none). OpenCV pads each pyramid level by reflection to fit
    # the rotated patch, so descriptors near the edge stay well defined.
    orb = cv2.ORB_create(nfeatures=n_features, edgeThreshold=15, patchSize=31)

    def one(image: np.ndarray) -> np.ndarray:
        if upscale > 1:
            image = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LINEAR)
        _, descriptors = orb.detectAndCompute(image, None)
        if descriptors is None:
            return np.zeros((0, ORB_DIM), np.float32)
        return np.unpackbits(descriptors, axis=1).astype(np.float32)

    return _map_images(one, gray, threads)


def grid_positions(side: int, step: int, margin: int) -> np.ndarray:
    """(P, 2) (x, y) keypoint centres on a square grid, `margin` pixels from the border."""
    coords = np.arange(margin, side - margin + 1, step, dtype=np.float32)
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def dense_sift(
    gray: np.ndarray, positions: np.ndarray, size: float, upscale: int = 1, threads: int = 1
) -> np.ndarray:
    """(N, H, W) uint8 -> (N, P, 128) SIFT described at fixed `positions` (in original pixels)
    with keypoint diameter `size`; `upscale` > 1 enlarges the image first (bicubic) so that
    SIFT's 4x4 spatial bins cover whole pixels of a 32x32 thumbnail."""
    cv2 = _cv2()
    sift = cv2.SIFT_create()
    keypoints = [
        cv2.KeyPoint(float(x) * upscale, float(y) * upscale, size * upscale) for x, y in positions
    ]

    def one(image: np.ndarray) -> np.ndarray:
        if upscale > 1:
            image = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        kept, descriptors = sift.compute(image, keypoints)
        # OpenCV drops no keypoint for in-image positions; check, because P must stay fixed.
        assert len(kept) == len(keypoints)
        return descriptors

    return np.stack(_map_images(one, gray, threads)).astype(np.float32)


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, then square-root, so that
    Euclidean distance compares descriptors like the Hellinger kernel."""
    l1 = np.abs(descriptors).sum(axis=-1, keepdims=True)
    return np.sqrt(descriptors / np.maximum(l1, 1e-12)).astype(np.float32)


def colour_patches(images: np.ndarray, size: int, stride: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, P, size*size*3) patches on a grid, each brightness- and
    contrast-normalised (Coates, Lee & Ng 2011: the step that makes k-means on pixels work)."""
    windows = sliding_window_view(images, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    n, rows, cols = windows.shape[:3]
    patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n, rows * cols, -1).astype(np.float32)
    patches -= patches.mean(axis=-1, keepdims=True)
    # +10 on the variance (pixels in [0, 255]) keeps flat patches from blowing up noise
    patches /= np.sqrt(patches.var(axis=-1, keepdims=True) + 10.0)
    return patches


def patch_grid_side(image_side: int, size: int, stride: int) -> int:
    return (image_side - size) // stride + 1
