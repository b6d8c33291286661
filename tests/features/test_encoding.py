"""tf-idf weights of visual words agree with scikit-learn's TfidfTransformer (smooth idf)."""

import numpy as np
from sklearn.feature_extraction.text import TfidfTransformer

from cbir.features.encoding import document_frequency, power_l2, smooth_idf


def test_idf_of_word_counts_agrees_with_scikit_learn():
    counts = np.random.default_rng(0).poisson(0.7, (50, 12)).astype(np.float32)
    counts[:, 3] = 0  # a word no image has
    counts[:, 5] += 1  # a word every image has
    idf = smooth_idf(document_frequency(counts), len(counts))
    expected = TfidfTransformer(smooth_idf=True).fit(counts)
    np.testing.assert_allclose(idf, expected.idf_, rtol=1e-6)
    assert idf[5] == 1.0
    np.testing.assert_allclose(
        power_l2(counts * idf, 1.0), expected.transform(counts).toarray(), rtol=1e-5, atol=1e-6
    )


def test_document_frequency_of_soft_codes_counts_images_not_positions():
    codes = np.zeros((3, 4, 2), np.float32)  # 3 images, 4 positions, 2 words
    codes[0, :, 0] = 0.5  # word 0 at every position of image 0 only
    codes[1, 2, 1] = 0.1
    codes[2, 0, 1] = 0.2
    np.testing.assert_array_equal(document_frequency(codes), [1, 2])
