"""From per-image visual words / codes to one vector: histograms, tf-idf word weights, spatial
pyramid pooling and per-block power + L2 normalisation."""

from __future__ import annotations

import numpy as np


def word_counts(words: list[np.ndarray], size: int) -> np.ndarray:
    """(N, size) raw counts of each image's words; an image without words gets all zeros."""
    out = np.zeros((len(words), size), np.float32)
    for row, image_words in enumerate(words):
        out[row] = np.bincount(image_words, minlength=size)
    return out


def document_frequency(codes: np.ndarray) -> np.ndarray:
    """(K,) number of images in which each word occurs, from (N, K) counts or (N, P, K) soft
    codes per position (a word occurs where any of its weights is positive)."""
    per_image = codes.reshape(len(codes), -1, codes.shape[-1]) > 0
    return per_image.any(axis=1).sum(axis=0)


def smooth_idf(document_frequency: np.ndarray, documents: int) -> np.ndarray:
    """(K,) inverse document frequency ln((1 + N) / (1 + df)) + 1, scikit-learn's smoothed
    form: a word found in every image keeps weight 1, one found nowhere stays finite."""
    df = np.asarray(document_frequency, np.float64)
    return (np.log((1.0 + documents) / (1.0 + df)) + 1.0).astype(np.float32)


def pyramid_pool(codes: np.ndarray, grid_side: int, levels: int) -> np.ndarray:
    """(N, P, K) codes of P = grid_side**2 positions (row-major) -> (N, sum_l 4**l, K) sums
    over the cells of pyramid levels 1x1, 2x2, ... (Lazebnik et al. 2006)."""
    n, positions, k = codes.shape
    assert positions == grid_side * grid_side, (positions, grid_side)
    grid = codes.reshape(n, grid_side, grid_side, k)
    pooled = []
    for level in range(levels):
        cells = 1 << level
        edges = np.linspace(0, grid_side, cells + 1).round().astype(int)
        for r in range(cells):
            for c in range(cells):
                block = grid[:, edges[r] : edges[r + 1], edges[c] : edges[c + 1]]
                pooled.append(block.sum(axis=(1, 2)))
    return np.stack(pooled, axis=1)


def power_l2(blocks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Signed power (alpha) then L2 along the last axis: each block weighs the same, and the
    power damps bursty words (Perronnin et al. 2010). All-zero blocks stay zero."""
    out = np.sign(blocks) * np.abs(blocks) ** alpha if alpha != 1.0 else blocks.copy()
    norms = np.linalg.norm(out, axis=-1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32)
