"""The `cnn` extractor: unit vectors, PCA fitted on index images only, class fusion with true
labels for the index and predicted labels for queries, save/load, weights pinned."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cbir.errors import CbirError
from cbir.features import available, get_extractor, load_extractor

from .conftest import colour_dataset


@pytest.fixture
def cnn(tiny_checkpoint: Path):
    def make(**params):
        return get_extractor("cnn", weights=str(tiny_checkpoint), **params)

    return make


def test_registered_lazily() -> None:
    assert "cnn" in available()
    params = get_extractor("cnn").params  # no model is loaded to list parameters
    assert params["class_fusion"] is False and params["weights"] is None


def test_unit_embeddings_of_the_penultimate_layer(cnn, tiny_data) -> None:
    extractor = cnn()
    vectors = extractor.transform(tiny_data[0][:20])
    assert vectors.shape == (20, 16) and extractor.dim == 16 and not extractor.needs_fit
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(extractor.transform_index(tiny_data[0][:20], tiny_data[1][:20]),
                                  vectors)  # fmt: skip


def test_flip_tta_is_mirror_invariant(cnn, tiny_data) -> None:
    images = tiny_data[0][:8]
    extractor = cnn(tta=1, bf16=False)
    np.testing.assert_allclose(
        extractor.transform(images), extractor.transform(images[:, :, ::-1].copy()), atol=1e-5
    )


def test_query_tta_describes_queries_only(cnn, tiny_data) -> None:
    """Index images keep `tta` (fast, the bulk of the work); queries take `query_tta`."""
    images = tiny_data[0][:8]
    extractor = cnn(query_tta=1, bf16=False)
    assert extractor.distinct_queries and not cnn(bf16=False).distinct_queries
    assert not cnn(tta=1, query_tta=1).distinct_queries
    np.testing.assert_array_equal(extractor.transform(images), cnn(bf16=False).transform(images))
    queries = extractor.transform_query(images)
    np.testing.assert_allclose(queries, cnn(tta=1, bf16=False).transform(images), atol=1e-6)
    assert np.abs(queries - extractor.transform(images)).max() > 1e-3
    np.testing.assert_array_equal(  # -1, the default, follows `tta`
        cnn(tta=1, bf16=False).transform_query(images), cnn(tta=1, bf16=False).transform(images)
    )


def test_a_collection_searches_with_the_query_route(cnn, tiny_data, tmp_path: Path) -> None:
    from cbir.collection import Collection, ImageRecord

    images = tiny_data[0][:6]
    extractor = cnn(query_tta=2, bf16=False)
    records = [ImageRecord(f"i{n}", None, None, f"{n:064x}") for n in range(6)]
    with Collection.create(tmp_path / "c", extractor) as collection:
        collection.add(records, extractor.transform(images))
        found = collection.search_images(images[:1], k=6)[0]
        expected = collection.search_vectors(extractor.transform_query(images[:1]), k=6)[0]
    assert [(h.id, h.score) for h in found] == [(h.id, h.score) for h in expected]
    assert found[0].score < 1.0 - 1e-4  # the six-view query is not the indexed vector


def test_read_only_images_are_described_without_a_warning(cnn, tiny_data) -> None:
    """Images decoded from bytes (a search's upload) can be read-only numpy arrays."""
    import warnings

    images = tiny_data[0][:4].copy()
    images.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vectors = cnn().transform(images)
    np.testing.assert_array_equal(vectors, cnn().transform(tiny_data[0][:4]))


def test_pca_is_fitted_on_index_images(cnn, tiny_data) -> None:
    extractor = cnn(pca=4)
    assert extractor.needs_fit
    with pytest.raises(CbirError, match="fitted"):
        extractor.transform(tiny_data[0][:2])
    extractor.fit(tiny_data[0], tiny_data[1])
    assert extractor.transform(tiny_data[0][:5]).shape == (5, 4) and extractor.dim == 4


def test_class_fusion_uses_true_labels_for_index_and_predictions_for_queries(
    cnn, tiny_data
) -> None:
    images = tiny_data[0][:30]
    wrong = (tiny_data[1][:30] + 1) % 4
    extractor = cnn(class_fusion=True, fusion_weight=2.0, bf16=False)
    assert extractor.dim == 16 + 4
    assert extractor.uses_index_labels and extractor.run_tag == "cnn+class_fusion"
    assert not cnn().uses_index_labels and cnn().run_tag == "cnn"
    index = extractor.transform_index(images, wrong)
    np.testing.assert_array_equal(index[:, 16:].argmax(1), wrong)
    np.testing.assert_allclose(np.linalg.norm(index, axis=1), 1.0, atol=1e-5)
    queries = extractor.transform(images)
    predicted = cnn(bf16=False).transform(images)  # same embedding part
    np.testing.assert_allclose(queries[:, :16] * np.sqrt(5.0), predicted, atol=1e-5)
    from cbir.features.cnn.inference import infer
    from cbir.features.cnn.models import load_model

    _, logits = infer(load_model(extractor.params["weights"]).forward_both, images, bf16=False)
    np.testing.assert_array_equal(queries[:, 16:].argmax(1), logits.argmax(1))
    unknown = extractor.transform_index(images, np.full(30, -1))
    np.testing.assert_array_equal(unknown, queries)


def test_class_fusion_ranks_the_predicted_class_first(cnn) -> None:
    from cbir.index.embedded import ExactIndex

    images, labels = colour_dataset(200, seed=1)
    extractor = cnn(class_fusion=True)
    index = ExactIndex(dim=extractor.dim, metric="cosine")
    index.add([str(i) for i in range(200)], extractor.transform_index(images, labels))
    queries, query_labels = colour_dataset(20, seed=1)
    ids, _ = index.search(extractor.transform(queries), 10)
    predicted = extractor.transform(queries)[:, -4:].argmax(1)
    for row, found in enumerate(ids):
        assert all(labels[int(i)] == predicted[row] for i in found)


def test_a_classifier_committee_votes_on_query_classes_only(
    cnn, tiny_data, second_tiny_checkpoint: Path
) -> None:
    """The query's class is the argmax of the networks' mean class probabilities; index
    images with a known label keep it, and the embedding part never changes."""
    from cbir.features.cnn.inference import infer
    from cbir.features.cnn.models import load_model

    images, labels = tiny_data[0][:40], tiny_data[1][:40]
    alone = cnn(class_fusion=True, bf16=False)
    committee = cnn(class_fusion=True, bf16=False, classifiers=str(second_tiny_checkpoint))
    queries = committee.transform_query(images)
    np.testing.assert_array_equal(queries[:, :16], alone.transform_query(images)[:, :16])

    def probabilities(weights: str) -> np.ndarray:
        logits = infer(load_model(weights).forward_both, images, bf16=False)[1]
        exp = np.exp(logits - logits.max(1, keepdims=True))
        return exp / exp.sum(1, keepdims=True)

    voted = probabilities(alone.params["weights"]) + probabilities(str(second_tiny_checkpoint))
    np.testing.assert_array_equal(queries[:, 16:].argmax(1), voted.argmax(1))
    np.testing.assert_array_equal(
        committee.transform_index(images, labels), alone.transform_index(images, labels)
    )
    unknown = committee.transform_index(images, np.full(40, -1))
    np.testing.assert_array_equal(unknown, committee.transform(images))


def test_a_classifier_committee_is_checked(cnn, tiny_data, tmp_path: Path) -> None:
    from .conftest import train_tiny

    with pytest.raises(CbirError, match="class_fusion=true"):
        cnn(classifiers="wide")
    with pytest.raises(CbirError, match="no model"):
        _ = cnn(class_fusion=True, classifiers=str(tmp_path / "missing")).dim
    three_classes = train_tiny(tmp_path / "three", tiny_data[0][:64], tiny_data[1][:64] % 3)
    with pytest.raises(CbirError, match="does not predict the 4 classes"):
        _ = cnn(class_fusion=True, classifiers=str(three_classes)).dim


def test_classifier_names() -> None:
    from cbir.features.cnn.extractor import classifier_paths
    from cbir.features.cnn.models import DEFAULT_WEIGHTS

    wide, seed1 = DEFAULT_WEIGHTS / "wide", DEFAULT_WEIGHTS / "wide-seed1"
    assert classifier_paths(" wide, runs/a ,wide-seed1") == [wide, Path("runs/a"), seed1]
    assert classifier_paths("wide-seed2") == [Path("wide-seed2")]  # not committed: a path
    assert classifier_paths("") == []


@pytest.mark.parametrize("pinned", ["weights", "classifiers"])
def test_a_saved_extractor_pins_its_networks(
    pinned, cnn, tiny_data, second_tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Retraining the embedding network or a voting classifier makes a saved extractor (and so
    a collection) refuse to load, instead of silently mixing two networks."""
    tiny = cnn().params["weights"]
    copy = tmp_path / pinned
    source = tiny if pinned == "weights" else second_tiny_checkpoint
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("checkpoints"))
    params = (
        {"weights": str(copy), "pca": 3}
        if pinned == "weights"
        else {"weights": tiny, "class_fusion": True, "classifiers": str(copy)}
    )
    extractor = get_extractor("cnn", **params).fit(*tiny_data)
    extractor.save(tmp_path / "saved")
    loaded = load_extractor(tmp_path / "saved")
    np.testing.assert_array_equal(
        loaded.transform_query(tiny_data[0][:4]), extractor.transform_query(tiny_data[0][:4])
    )
    (copy / "model.safetensors").write_bytes(b"retrained")
    with pytest.raises(CbirError, match=f"{pinned} changed"):
        load_extractor(tmp_path / "saved")


def test_parameters_are_validated() -> None:
    with pytest.raises(CbirError, match="normalisation"):
        get_extractor("cnn", normalisation="sepia")
    with pytest.raises(CbirError, match="tta"):
        get_extractor("cnn", tta=3)
    with pytest.raises(CbirError, match="query_tta"):
        get_extractor("cnn", query_tta=-2)


def test_default_weights_are_committed() -> None:
    from cbir.features.cnn.models import DEFAULT_WEIGHTS

    if not (DEFAULT_WEIGHTS / "model.safetensors").is_file():
        pytest.skip("default weights not trained yet (cbir train cifar10, see weights/README)")
    extractor = get_extractor("cnn")
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert extractor.transform(images).shape == (3, 256)
    fused = get_extractor("cnn", class_fusion=True, classifiers="wide,wide-seed1")
    assert fused.transform_query(images).shape == (3, 266)
