"""Linear classifiers for class fusion, kept as plain arrays (never pickle): standardisation
(mean, scale) plus one weight row and intercept per class; predict = argmax of the scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbir.errors import CbirError

CLASSIFIERS = ("logreg", "linearsvc")


@dataclass
class LinearClassifier:
    mean: np.ndarray  # (D,) subtracted before scoring (zeros = none)
    scale: np.ndarray  # (D,) divides after centring (ones = none)
    coef: np.ndarray  # (C, D)
    intercept: np.ndarray  # (C,)

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        kind: str = "logreg",
        c: float = 1.0,
        max_iter: int = 1000,
        standardise: bool = False,
        seed: int = 0,
    ) -> LinearClassifier:
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        present = np.unique(labels)
        if len(present) < 2 or len(present) != present.max() + 1:
            raise CbirError(
                "a classifier needs images of every class 0..C-1, and two classes or more"
            )
        dim = features.shape[1]
        mean, scale = np.zeros(dim, np.float32), np.ones(dim, np.float32)
        if standardise:
            mean = features.mean(axis=0)
            scale = np.maximum(features.std(axis=0), 1e-6)
            features = (features - mean) / scale
        if kind == "logreg":
            model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
        elif kind == "linearsvc":
            model = LinearSVC(C=c, max_iter=max_iter, random_state=seed)
        else:
            raise CbirError(f"unknown classifier {kind!r}; choose one of {', '.join(CLASSIFIERS)}")
        model.fit(features, labels)
        coef, intercept = model.coef_, model.intercept_
        if len(coef) == 1:  # two classes: sklearn keeps one row, the score of class 1
            coef, intercept = np.vstack([-coef, coef]) / 2, np.hstack([-intercept, intercept]) / 2
        return cls(mean.astype(np.float32), scale.astype(np.float32),
                   coef.astype(np.float32), intercept.astype(np.float32))  # fmt: skip

    def decision(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale) @ self.coef.T + self.intercept

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.decision(features).argmax(axis=1)

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, scale=self.scale, coef=self.coef, intercept=self.intercept)

    @classmethod
    def load(cls, path: Path) -> LinearClassifier:
        with np.load(path, allow_pickle=False) as arrays:
            return cls(*(arrays[key] for key in ("mean", "scale", "coef", "intercept")))
