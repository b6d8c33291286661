"""Visual vocabularies: seeded k-means on local descriptors, nearest-word assignment, and the
size sweep scored with the Davies-Bouldin index and inertia (as the reference chose its size)."""

from __future__ import annotations

from typing import Any

import numpy as np

ASSIGN_CHUNK = 4096  # descriptors per distance matrix


def fit_vocabulary(
    descriptors: np.ndarray,
    size: int,
    seed: int = 0,
    batch_size: int = 1024,
    n_init: int = 3,
    max_iter: int = 100,
) -> np.ndarray:
    """(size, D) float32 centres of MiniBatchKMeans on (M, D) descriptors."""
    from sklearn.cluster import MiniBatchKMeans

    kmeans = MiniBatchKMeans(
        n_clusters=size, batch_size=batch_size, n_init=n_init, max_iter=max_iter,
        random_state=seed,
    )  # fmt: skip
    kmeans.fit(descriptors)
    return kmeans.cluster_centers_.astype(np.float32)


def squared_distances(descriptors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(M, K) squared Euclidean distances, clipped at 0 against rounding."""
    d2 = np.einsum("ij,ij->i", descriptors, descriptors)[:, None] - 2.0 * descriptors @ centres.T
    d2 += np.einsum("ij,ij->i", centres, centres)[None, :]
    return np.maximum(d2, 0.0, out=d2)


def nearest_words(descriptors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(M,) index of each descriptor's nearest centre, in chunks to bound memory."""
    out = np.empty(len(descriptors), np.intp)
    for start in range(0, len(descriptors), ASSIGN_CHUNK):
        chunk = descriptors[start : start + ASSIGN_CHUNK]
        out[start : start + ASSIGN_CHUNK] = squared_distances(chunk, centres).argmin(axis=1)
    return out


def triangle_codes(descriptors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(M, K) soft assignment "k-means triangle" (Coates et al. 2011): max(0, mean(z) - z_k)
    with z_k the distance to centre k; about half the words get 0, the close ones weight."""
    z = np.sqrt(squared_distances(descriptors, centres))
    codes = z.mean(axis=1, keepdims=True) - z
    return np.maximum(codes, 0.0, out=codes)


def sweep(
    descriptors: np.ndarray, sizes: list[int], seed: int = 0, sample: int = 20_000
) -> list[dict[str, Any]]:
    """One row {size, davies_bouldin, inertia} per vocabulary size (the format of
    vocabulary_sweep.json). Davies-Bouldin is computed on at most `sample` descriptors,
    because it is quadratic in nothing but costs a pass per cluster."""
    from sklearn.metrics import davies_bouldin_score

    rng = np.random.default_rng(seed)
    scored = descriptors
    if len(descriptors) > sample:
        scored = descriptors[rng.choice(len(descriptors), sample, replace=False)]
    rows = []
    for size in sizes:
        centres = fit_vocabulary(descriptors, size, seed=seed)
        words = nearest_words(descriptors, centres)
        inertia = float(((descriptors - centres[words]) ** 2).sum())
        scored_words = nearest_words(scored, centres)
        davies_bouldin = (
            float(davies_bouldin_score(scored, scored_words))
            if len(np.unique(scored_words)) > 1
            else float("nan")
        )
        rows.append({"size": size, "davies_bouldin": davies_bouldin, "inertia": inertia})
    return rows
