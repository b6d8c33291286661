"""The record of how an extractor was fitted, kept beside the state it produced.

Where the fitting images came from, how many, whether their labels were used, and a digest of
each image's pixels (as the extractor saw them), so that a benchmark can refuse to score
queries that took part in fitting a label-using extractor: their own labels would leak into
their rankings. Saved as JSON + a .npy of fixed-size bytes, never pickle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RECORD_FILE = "fit.json"
DIGESTS_FILE = "fit_digests.npy"
DIGEST_BYTES = 16


def pixel_digests(images: np.ndarray) -> np.ndarray:
    """(N,) blake2b digests of each image's pixels: equal exactly for identical images."""
    out = np.empty(len(images), dtype=f"S{DIGEST_BYTES}")
    for row, image in enumerate(images):
        out[row] = hashlib.blake2b(
            np.ascontiguousarray(image).data, digest_size=DIGEST_BYTES
        ).digest()
    return out


@dataclass
class FitRecord:
    source: str  # in words: "cifar10:train", "/photos/train"
    n_images: int
    uses_labels: bool
    digests: np.ndarray  # (n_images,) pixel digests of the fitting images

    def describe(self) -> str:
        """One line for a console, metrics.json and a report."""
        kind = "supervised, fitted on" if self.uses_labels else "fitted (no labels) on"
        return f"{kind} {self.source} ({self.n_images:,} images)"

    def overlap(self, images: np.ndarray) -> np.ndarray:
        """Which of `images` (decoded as the extractor sees them) took part in fitting."""
        return np.isin(pixel_digests(images), self.digests)

    def save(self, folder: Path) -> None:
        summary = {"source": self.source, "n_images": self.n_images,
                   "uses_labels": self.uses_labels}  # fmt: skip
        (folder / RECORD_FILE).write_text(json.dumps(summary, indent=2))
        np.save(folder / DIGESTS_FILE, self.digests, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> FitRecord | None:
        if not (folder / RECORD_FILE).is_file():
            return None
        summary = json.loads((folder / RECORD_FILE).read_text())
        digests = np.load(folder / DIGESTS_FILE, allow_pickle=False)
        return cls(summary["source"], summary["n_images"], summary["uses_labels"], digests)
