"""Near-duplicate queries: planted copies are found, distinct images are not, and a
leave-one-out query never counts as its own copy."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cbir.evaluation.leave_one_out import search
from cbir.evaluation.near_duplicates import find_near_duplicates, tiny_pixels
from cbir.evaluation.trec import trec_order
from cbir.index.embedded import ExactIndex

from .conftest import textured_image


def jpeg_copy(image: np.ndarray, quality: int = 85) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def test_tiny_pixels_are_box_averages_of_any_size():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    expected = images.reshape(3, 8, 4, 8, 4, 3).mean(axis=(2, 4), dtype=np.float64)
    assert tiny_pixels(images) == pytest.approx(expected.reshape(3, -1), abs=1e-4)

    odd = rng.integers(0, 256, size=(2, 20, 13, 3), dtype=np.uint8)
    rows, cols = np.arange(9) * 20 // 8, np.arange(9) * 13 // 8
    rows[-1], cols[-1] = 20, 13
    boxes = [
        odd[:, rows[i] : rows[i + 1], cols[j] : cols[j + 1]].mean(axis=(1, 2))
        for i in range(8)
        for j in range(8)
    ]
    expected = np.stack(boxes, axis=1).reshape(2, -1)
    assert tiny_pixels(odd) == pytest.approx(expected, abs=1e-4)
    assert tiny_pixels(odd[:, :5, :6]).shape == (2, 5 * 5 * 3)  # side capped at the image


def test_planted_copies_are_flagged_with_their_originals():
    rng = np.random.default_rng(1)
    index = np.stack([textured_image(rng, "vertical", (32, 32)) for _ in range(300)])
    index_ids = [f"train-{i:03d}" for i in range(300)]
    planted = [5, 77, 123, 250]
    copies = [
        jpeg_copy(index[5]),  # re-encoded
        np.clip(index[77].astype(int) + 25, 0, 255).astype(np.uint8),  # brighter
        np.clip((index[123].astype(float) - 128) * 0.8 + 128, 0, 255).astype(np.uint8),  # flatter
        np.roll(index[250], 1, axis=1),  # shifted by a pixel
    ]
    fresh = [textured_image(rng, "vertical", (32, 32)) for _ in range(40)]
    queries = np.stack(copies + fresh)

    found = find_near_duplicates(queries, index, index_ids)
    assert found.flagged.tolist() == [True] * 4 + [False] * 40
    assert found.nearest[:4] == [index_ids[i] for i in planted]
    assert (found.similarity[:4] >= 0.97).all() and (found.similarity[4:] < 0.97).all()
    assert found.describe()["count"] == 4 and found.describe()["threshold"] == 0.97
    # Stricter thresholds flag fewer: the flag is a threshold on the reported similarity.
    strict = find_near_duplicates(queries, index, index_ids, threshold=1.0)
    assert strict.count < 4


def test_leave_one_out_skips_the_query_itself():
    rng = np.random.default_rng(2)
    images = np.stack([textured_image(rng, "both", (32, 32)) for _ in range(30)])
    images[12] = jpeg_copy(images[3])
    ids = [f"img-{i:02d}" for i in range(30)]
    found = find_near_duplicates(images, images, ids, query_ids=ids)
    # Without the exclusion every image would be its own copy at cosine 1.
    assert np.flatnonzero(found.flagged).tolist() == [3, 12]
    assert (found.nearest[3], found.nearest[12]) == ("img-12", "img-03")


def test_leave_one_out_search_equals_the_ranking_without_the_query():
    """Ties everywhere (many identical vectors) push the query itself below rank k + 1 for
    some rows; each list must still be the top k of the others, in trec order."""
    rng = np.random.default_rng(3)
    vectors = rng.integers(0, 3, size=(40, 2)).astype(np.float32) + 0.5  # few distinct vectors
    ids = [f"d{i}" for i in rng.permutation(40)]
    index = ExactIndex(dim=2, metric="ip")
    index.add(ids, vectors)
    plain, _ = index.search(vectors, 2)
    assert any(ids[q] not in plain[q] for q in range(40))  # the case this test is about
    for k in (1, 5, 39, 60):
        ranked, scores = search(index, vectors, k, exclude_ids=ids)
        assert scores.shape == (40, min(k, 39))
        for q in range(40):
            others = [i for i in range(40) if i != q]
            all_scores = (vectors[others] @ vectors[q]).astype(np.float32)
            order = trec_order([ids[i] for i in others], all_scores)
            expected = [ids[others[i]] for i in order][:k]
            assert ranked[q] == expected, (k, q)
            assert scores[q] == pytest.approx(all_scores[order][:k])
