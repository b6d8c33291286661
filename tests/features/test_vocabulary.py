import numpy as np

from cbir.evaluation.results import read_vocabulary_sweep, write_vocabulary_sweep
from cbir.features.encoding import power_l2, pyramid_pool, word_counts
from cbir.features.vocabulary import fit_vocabulary, nearest_words, sweep, triangle_codes


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
    labels = rng.integers(0, 3, 300)
    return (centres[labels] + rng.normal(0, 0.5, (300, 2))).astype(np.float32), centres


def test_vocabulary_finds_the_clusters_and_assigns_to_them():
    points, centres = _blobs()
    words = fit_vocabulary(points, 3, seed=0)
    nearest = nearest_words(centres, words)
    assert sorted(nearest.tolist()) == [0, 1, 2]
    np.testing.assert_allclose(words[nearest], centres, atol=0.3)


def test_triangle_codes_are_sparse_and_non_negative():
    points, centres = _blobs()
    codes = triangle_codes(points, centres)
    assert (codes >= 0).all()
    assert (codes > 0).sum(axis=1).max() <= 2  # only words closer than the mean distance


def test_sweep_rows_are_what_vocabulary_sweep_json_holds(tmp_path):
    points, _ = _blobs()
    rows = sweep(points, [2, 3], seed=0)
    assert [row["size"] for row in rows] == [2, 3]
    assert rows[1]["inertia"] < rows[0]["inertia"]
    assert read_vocabulary_sweep(write_vocabulary_sweep(tmp_path, rows)) == rows


def test_counts_pyramid_and_normalisation():
    counts = word_counts([np.array([0, 0, 2]), np.array([], np.intp)], 3)
    np.testing.assert_array_equal(counts, [[2, 0, 1], [0, 0, 0]])
    codes = np.arange(2 * 16 * 3, dtype=np.float32).reshape(2, 16, 3)
    pooled = pyramid_pool(codes, grid_side=4, levels=2)
    assert pooled.shape == (2, 5, 3)
    np.testing.assert_allclose(pooled[:, 0], pooled[:, 1:].sum(axis=1))
    normalised = power_l2(np.vstack([counts, np.zeros(3)]))
    np.testing.assert_allclose(np.linalg.norm(normalised[0]), 1.0, rtol=1e-6)
    assert not normalised[1:].any()  # all-zero rows stay zero
