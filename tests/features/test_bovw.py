import numpy as np
import pytest

from cbir.errors import CbirError
from cbir.features import get_extractor, load_extractor

FAST_REFERENCE = {
    "vocabulary_size": 8,
    "kmeans_n_init": 1,
    "kmeans_max_iter": 20,
    "max_iter": 300,
    "threads": 1,
}
FAST_BOVW = {"vocabulary_size": 8, "vocabulary_images": 30, "max_iter": 200, "threads": 1}


def _striped(n_per_class: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three easy classes: horizontal stripes, vertical stripes, a checkerboard, plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32]
    patterns = [(y // 4) % 2, (x // 4) % 2, ((y // 4) + (x // 4)) % 2]
    images, labels = [], []
    for label, pattern in enumerate(patterns):
        for _ in range(n_per_class):
            noisy = pattern * 180 + rng.integers(0, 60, (32, 32))
            images.append(np.repeat(noisy[..., None], 3, axis=2))
            labels.append(label)
    return np.asarray(images, np.uint8), np.asarray(labels)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("bovw-reference", FAST_REFERENCE),
        ("bovw-reference", {**FAST_REFERENCE, "descriptor": "orb"}),
        ("bovw-reference", {**FAST_REFERENCE, "tfidf": True}),
        ("bovw", FAST_BOVW),
        ("bovw", {**FAST_BOVW, "tfidf": False}),
        ("bovw", {**FAST_BOVW, "projection": "none"}),
        ("bovw", {**FAST_BOVW, "descriptor": "rootsift", "stride": 8}),
    ],
)
def test_class_fusion_uses_true_labels_for_index_and_predictions_for_queries(
    name, params, tmp_path
):
    images, labels = _striped()
    extractor = get_extractor(name, classes=3, **params).fit(images, labels)
    assert extractor.needs_fit and extractor.uses_index_labels
    assert (extractor.predict(images) == labels).mean() > 0.9
    wrong = (labels + 1) % 3
    index = extractor.transform_index(images, wrong)
    queries = extractor.transform(images)
    assert index.shape == queries.shape == (len(images), extractor.dim)
    onehot = slice(extractor.ranked_dim, extractor.dim)
    np.testing.assert_array_equal(index[:, onehot].argmax(1), wrong)  # the given labels
    np.testing.assert_array_equal(queries[:, onehot].argmax(1), extractor.predict(images))
    np.testing.assert_allclose(index[:, : extractor.ranked_dim], queries[:, : extractor.ranked_dim])

    extractor.save(tmp_path)
    loaded = load_extractor(tmp_path)
    assert loaded.params == extractor.params
    np.testing.assert_array_equal(loaded.transform(images), queries)


def test_reference_dims_and_blank_images():
    images, labels = _striped()
    extractor = get_extractor("bovw-reference", classes=3, **FAST_REFERENCE)
    assert extractor.dim == 324 + 8 + 3  # HOG + words + one-hot, 734 with the defaults
    assert get_extractor("bovw-reference").dim == 734
    extractor.fit(images, labels)
    blank = np.full((2, 32, 32, 3), 128, np.uint8)
    vectors = extractor.transform(blank)
    assert not vectors[:, 324 : 324 + 8].any()  # no keypoint: all-zero word counts


def test_orb_words_on_200_images_and_blank_images():
    images, _ = _striped(n_per_class=67)
    params = {**FAST_REFERENCE, "descriptor": "orb", "class_fusion": False}
    extractor = get_extractor("bovw-reference", **params)
    assert extractor.fit(images).vocabulary_.shape == (8, 256)
    vectors = extractor.transform(images[:10])
    assert vectors.shape == (10, 324 + 8)
    assert (vectors[:, 324:].sum(axis=1) > 0).all()  # textured images get words
    blank = extractor.transform(np.full((2, 32, 32, 3), 128, np.uint8))
    assert np.isfinite(blank).all() and not blank[:, 324:].any()  # no keypoint, no word


def test_unknown_descriptor_is_a_clear_error():
    with pytest.raises(CbirError, match="must be sift or orb"):
        get_extractor("bovw-reference", descriptor="surf")
    with pytest.raises(CbirError, match="must be patches or rootsift"):
        get_extractor("bovw", descriptor="orb")


def test_class_fusion_needs_every_label():
    images, labels = _striped()
    with pytest.raises(CbirError, match="label"):
        get_extractor("bovw", classes=3, **FAST_BOVW).fit(images, labels[:-1])
    with pytest.raises(CbirError, match="fitted"):
        get_extractor("bovw", classes=3, **FAST_BOVW).transform(images)


def test_one_class_is_a_clear_error():
    images, labels = _striped()
    with pytest.raises(CbirError, match="every class"):
        get_extractor("bovw", classes=3, **FAST_BOVW).fit(images[:20], labels[:20])


@pytest.mark.parametrize("name", ["bovw-reference", "bovw"])
def test_tfidf_weights_come_from_the_index_images_and_change_the_vectors(name):
    images, labels = _striped()
    # the weighted features themselves are compared, not their LDA projections
    fast = FAST_REFERENCE if name == "bovw-reference" else {**FAST_BOVW, "projection": "none"}
    params = {**fast, "classes": 3}
    weighted = get_extractor(name, **params, tfidf=True, idf_images=25).fit(images, labels)
    plain = get_extractor(name, **params, tfidf=False).fit(images, labels)
    assert plain.idf_ is None
    idf = weighted.idf_
    assert idf.shape == (8,) and (idf >= 1.0).all()  # smoothed: never below 1
    assert idf.max() <= np.log(26) + 1  # 25 sampled images, at most 1 + ln(26) for no image
    same = weighted.transform(images)[:, : weighted.feature_dim]
    other = plain.transform(images)[:, : plain.feature_dim]
    assert same.shape == other.shape and not np.allclose(same, other)


def test_lda_projection_without_fusion_ranks_by_class_separating_directions(tmp_path):
    images, labels = _striped(n_per_class=30)
    extractor = get_extractor("bovw", **FAST_BOVW, classes=3, class_fusion=False)
    assert extractor.params["projection"] == "lda"  # the default
    extractor.fit(images, labels)
    assert not extractor.uses_index_labels  # the index needs no labels, only the fit did
    vectors = extractor.transform(images)
    assert vectors.shape == (len(images), 2) == (len(images), extractor.dim)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    assert (labels[nearest] == labels).mean() > 0.9
    extractor.save(tmp_path)
    np.testing.assert_allclose(load_extractor(tmp_path).transform(images), vectors, rtol=1e-5)


def test_projection_needs_labels_and_a_known_name():
    images, _ = _striped(n_per_class=5)
    with pytest.raises(CbirError, match="projection"):
        get_extractor("bovw", **FAST_BOVW, projection="pca")
    with pytest.raises(CbirError, match="label for every image"):
        get_extractor("bovw", **FAST_BOVW, class_fusion=False).fit(images)


def test_bovw_settles_its_size_and_grid_from_its_first_images():
    images, labels = _striped()
    cifar = get_extractor("bovw", classes=3, **FAST_BOVW).fit(images, labels)
    assert cifar.input_size == (32, 32)
    assert (cifar.params["image_size"], cifar.params["stride"]) == (32, 2)  # as before photos
    assert cifar._hog.params["pixels_per_cell"] == 8
    photos = get_extractor("bovw", classes=3, **FAST_BOVW)
    assert photos.input_size == (128, 128) == (photos.photo_side,) * 2  # files to decode
    assert photos.params["stride"] == 8 and photos._grid_side == 16  # CIFAR: 14x14
    with pytest.raises(CbirError, match="fits on 128x128 images, got 32x32"):
        photos.fit(images, labels)


def test_bovw_on_real_photos_at_the_photo_size(tmp_path):
    import skimage.data

    from cbir.images import resize_batch

    cats = [skimage.data.chelsea(), skimage.data.cat()]
    cups = [skimage.data.coffee(), skimage.data.coffee()[50:, 80:]]
    images = []
    for photo in cats + cups:  # flips and crops: six views of each
        for view in (photo, photo[:, ::-1], photo[20:, 30:], photo[:-30, :-20][:, ::-1]):
            images.append(resize_batch(view[None], (128, 128))[0])
    images, labels = np.stack(images), np.repeat([0, 1], 8)
    extractor = get_extractor("bovw", classes=2, **FAST_BOVW).fit(images, labels)
    assert extractor.params["image_size"] == 128
    assert (extractor.predict(images) == labels).all()
    extractor.save(tmp_path)
    loaded = load_extractor(tmp_path)
    assert loaded.input_size == (128, 128) and loaded.params == extractor.params
    np.testing.assert_array_equal(loaded.transform(images), extractor.transform(images))


def test_bovw_bad_sizes_are_clear_errors():
    with pytest.raises(CbirError, match="image_size=8 of extractor 'bovw' must be in"):
        get_extractor("bovw", image_size=8)
    with pytest.raises(CbirError, match="image_size=1024 of extractor 'bovw' must be in"):
        get_extractor("bovw", image_size=1024)
    with pytest.raises(CbirError, match="too few for 2 pyramid levels"):
        get_extractor("bovw", image_size=16, stride=12)


def test_bovw_reference_refuses_an_auto_image_size():
    """Only `bovw` settles an image_size of 0 ("auto") to its photo size; the reference
    pipeline has none, and would otherwise expect 0x0 images."""
    from cbir.errors import CbirError
    from cbir.features import get_extractor

    with pytest.raises(CbirError, match="image_size"):
        get_extractor("bovw-reference", image_size=0)
    assert get_extractor("bovw", image_size=0).params["image_size"] == 0
