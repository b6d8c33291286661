"""What the network extractors (`cnn`, `efficientnet`) share: a square input of `image_size`
pixels, and an optional PCA of the network's features (parameter `pca`, 0 = none), fitted on
the index images only and saved beside the extractor as pca.npz (arrays, never pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cbir.errors import CbirError

PCA_FILE = "pca.npz"


def fit_pca(embeddings: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components) of a PCA keeping `components` directions, float32: project with
    `(x - mean) @ components.T`."""
    if components > min(embeddings.shape):
        raise CbirError(f"pca={components} exceeds what {embeddings.shape} embeddings can give")
    mean = embeddings.mean(0)
    centred = embeddings.astype(np.float64) - mean
    _, eigenvectors = np.linalg.eigh(centred.T @ centred)
    return mean.astype(np.float32), eigenvectors[:, ::-1][:, :components].T.astype(np.float32)


class FeaturePca:
    """Mixin (listed before Extractor) for extractors with `image_size` and `pca` parameters."""

    name: str
    params: dict[str, Any]
    pca_mean_: np.ndarray | None = None
    pca_components_: np.ndarray | None = None

    @property
    def needs_fit(self) -> bool:
        return self.config.pca > 0

    @property
    def input_size(self) -> tuple[int, int]:
        side = self.config.image_size
        return (side, side)

    def _fit_pca(self, embeddings: np.ndarray) -> None:
        self.pca_mean_, self.pca_components_ = fit_pca(embeddings, self.config.pca)

    def _project(self, embeddings: np.ndarray) -> np.ndarray:
        """The features through the fitted PCA (unchanged without `pca`)."""
        if not self.config.pca:
            return embeddings
        if self.pca_components_ is None:
            raise CbirError(f"extractor {self.name!r} with pca > 0 must be fitted before transform")
        return (embeddings - self.pca_mean_) @ self.pca_components_.T

    def _save_pca(self, folder: Path) -> None:
        if self.pca_components_ is not None:
            np.savez(folder / PCA_FILE, mean=self.pca_mean_, components=self.pca_components_)

    def _load_pca(self, folder: Path) -> None:
        if (folder / PCA_FILE).is_file():
            with np.load(folder / PCA_FILE, allow_pickle=False) as arrays:
                self.pca_mean_, self.pca_components_ = arrays["mean"], arrays["components"]
