"""Seeded clustered vectors that look like image embeddings, for speed benchmarks.

A Gaussian mixture: `clusters` centres drawn uniformly on the unit sphere, and around each
centre a cloud whose principal axes (one random orthonormal basis shared by all clusters)
have standard deviations falling as j ** -0.5, i.e. variances as 1/j: the power-law
eigenspectrum measured in CNN representations and in visual cortex (Stringer et al.,
Nature 2019). Real embeddings are like that, not isotropic noise: a few directions carry most
of the variance. `spread` sets the cloud's total standard deviation relative to the distance
of a centre from the origin (1.0), so clusters overlap. Queries are fresh draws from the same
mixture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cbir.index.base import l2_normalise

CHUNK_ROWS = 65_536  # rows generated at a time: bounds the float64 temporaries


@dataclass(frozen=True)
class Mixture:
    dim: int
    clusters: int = 256
    spread: float = 1.0
    spectrum_power: float = 0.5  # standard deviation of axis j falls as j ** -power
    seed: int = 0

    def describe(self) -> dict:
        return {"kind": "gaussian-mixture", **asdict(self)}

    def sample(self, n: int, stream: int) -> np.ndarray:
        """(n, dim) float32, L2-normalised. `stream` picks an independent draw (0 = the
        indexed vectors, 1 = queries), so queries never repeat indexed vectors."""
        centres, axes, scales = self._shape()
        rng = np.random.default_rng([self.seed, stream])
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, CHUNK_ROWS):
            rows = min(CHUNK_ROWS, n - start)
            which = rng.integers(0, self.clusters, rows)
            noise = (rng.standard_normal((rows, self.dim)) * scales) @ axes
            out[start : start + rows] = centres[which] + noise
        return l2_normalise(out)

    def _shape(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centres, the shared orthonormal axes, and the per-axis standard deviations."""
        rng = np.random.default_rng([self.seed, 1_000_003])
        centres = l2_normalise(rng.standard_normal((self.clusters, self.dim))).astype(np.float64)
        axes, _ = np.linalg.qr(rng.standard_normal((self.dim, self.dim)))
        scales = np.arange(1, self.dim + 1, dtype=np.float64) ** -self.spectrum_power
        scales *= self.spread / np.linalg.norm(scales)  # total std = spread
        return centres, axes.T, scales
