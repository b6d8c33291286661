"""A learnt linear projection for retrieval: Linear Discriminant Analysis fitted on the index
images' features and labels, kept as plain arrays (never pickle).

LDA keeps the C - 1 directions that separate the classes best relative to their spread inside
each class, so distances in its space rank same-class images first far better than distances
in the raw feature space, without the hard decision of class fusion."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbir.errors import CbirError


@dataclass
class LinearProjection:
    mean: np.ndarray  # (D,) subtracted first, so cosine similarity sees directions from the centre
    matrix: np.ndarray  # (D, K)

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    @classmethod
    def fit_lda(cls, features: np.ndarray, labels: np.ndarray, components: int) -> LinearProjection:
        """LDA with Ledoit-Wolf shrinkage of the within-class covariance (stable when features
        outnumber what the images can estimate), keeping `components` directions: at most
        one fewer than the classes carry information."""
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        if len(np.unique(labels)) < 2:
            raise CbirError("an LDA projection needs images of two classes or more")
        if components > features.shape[1]:
            raise CbirError(f"{features.shape[1]} features cannot give {components} directions")
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")
        lda.fit(features, labels)
        matrix = lda.scalings_[:, :components]
        return cls(features.mean(axis=0).astype(np.float32), matrix.astype(np.float32))

    def apply(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) @ self.matrix).astype(np.float32)

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, matrix=self.matrix)

    @classmethod
    def load(cls, path: Path) -> LinearProjection:
        with np.load(path, allow_pickle=False) as arrays:
            return cls(arrays["mean"], arrays["matrix"])
