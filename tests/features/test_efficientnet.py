"""The pretrained `efficientnet` extractor: the packaged ImageNet weights are really used (real
photos get their ImageNet class), vectors are unit-length and stable under bfloat16, PCA and the
weights checksum survive a save/load, and a user's state dict of the same network loads."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from cbir.errors import CbirError
from cbir.features import get_extractor, load_extractor
from cbir.images import decode_image


def _photo(name: str, size: int = 224) -> np.ndarray:
    """A scikit-image photo through the JPEG decode path cbir indexes with (draft + resize)."""
    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).convert("RGB").save(buffer, "JPEG", quality=90)
    return decode_image(buffer.getvalue(), size=(size, size))


@pytest.fixture(scope="module")
def extractor():
    return get_extractor("efficientnet", bf16=False, threads=1)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return np.stack([_photo(name) for name in ("chelsea", "coffee", "camera")])


def test_photos_get_their_imagenet_class(extractor, photos: np.ndarray) -> None:
    logits = extractor.embeddings_and_logits(photos)[1]
    probabilities = torch.softmax(torch.from_numpy(logits), 1)
    top = probabilities.argmax(1).tolist()
    assert 281 <= top[0] <= 285  # chelsea: a cat (tabby .. Egyptian cat)
    assert top[1] in (967, 968)  # coffee: espresso / cup
    assert top[2] == 872  # camera: the cameraman's tripod
    # wrong padding, activation or normalisation still "works" but loses this confidence
    assert probabilities.max(1).values.min() > 0.6


def test_vectors_are_unit_length_and_bf16_keeps_them(extractor, photos: np.ndarray) -> None:
    vectors = extractor.transform(photos)
    assert vectors.shape == (3, 1280 + 1000) == (3, extractor.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the two blocks: the pooled feature and the class probabilities, each unit length / sqrt 2
    np.testing.assert_allclose(np.linalg.norm(vectors[:, :1280], axis=1), 0.5**0.5, atol=1e-5)
    pooled = get_extractor("efficientnet", scores_weight=0.0, bf16=False, threads=1)
    assert pooled.dim == 1280
    features = extractor.embeddings_and_logits(photos)[0]
    expected = features / np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled.transform(photos), expected, atol=1e-6)
    bf16 = get_extractor("efficientnet", threads=1).transform(photos)
    assert (np.sum(vectors * bf16, axis=1) > 0.99).all()


def test_a_mirrored_photo_is_nearest_its_original(extractor, photos: np.ndarray) -> None:
    vectors = extractor.transform(photos)
    query = extractor.transform(photos[:1, :, ::-1])  # chelsea mirrored
    assert (vectors @ query[0]).argmax() == 0


def test_pca_state_round_trip(tmp_path: Path, photos: np.ndarray) -> None:
    fitted = get_extractor("efficientnet", pca=2, threads=1).fit(photos)
    assert fitted.needs_fit and fitted.transform(photos).shape == (3, 2 + 1000)
    fitted.save(tmp_path / "x")
    loaded = load_extractor(tmp_path / "x")
    np.testing.assert_array_equal(loaded.transform(photos), fitted.transform(photos))


def test_user_state_dict_of_the_same_network(tmp_path: Path, extractor, photos) -> None:
    from safetensors.torch import save_file

    from cbir.features.cnn.models import load_efficientnet_lite0

    state = load_efficientnet_lite0().state_dict()
    torch.save(state, tmp_path / "mine.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "mine.safetensors"))
    expected = extractor.transform(photos)
    for name in ("mine.pth", "mine.safetensors"):
        mine = get_extractor("efficientnet", weights=str(tmp_path / name), bf16=False, threads=1)
        np.testing.assert_allclose(mine.transform(photos), expected, atol=1e-6)
    # the `cnn` extractor takes it too, as a named architecture of ours (its pooled feature)
    cnn = get_extractor(
        "cnn", weights=str(tmp_path / "mine.pth"), arch="efficientnet-lite0", image_size=224,
        normalisation="lite", bf16=False, threads=1,
    )  # fmt: skip
    pooled = get_extractor("efficientnet", scores_weight=0.0, bf16=False, threads=1)
    np.testing.assert_allclose(cnn.transform(photos), pooled.transform(photos), atol=1e-5)


def test_collection_notices_changed_weights(tmp_path: Path, photos: np.ndarray) -> None:
    from cbir.features.cnn.models import load_efficientnet_lite0

    weights = tmp_path / "mine.pth"
    torch.save(load_efficientnet_lite0().state_dict(), weights)
    get_extractor("efficientnet", weights=str(weights)).save(tmp_path / "x")
    state = load_efficientnet_lite0().state_dict()
    state["_fc.bias"] += 1
    torch.save(state, weights)
    with pytest.raises(CbirError, match="weights changed"):
        load_extractor(tmp_path / "x")


def test_wrong_weights_and_sizes_are_clear_errors(tmp_path: Path) -> None:
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, tmp_path / "other.pth")
    with pytest.raises(CbirError, match="does not fit arch 'efficientnet-lite0'"):
        get_extractor("efficientnet", weights=str(tmp_path / "other.pth")).transform(
            np.zeros((1, 224, 224, 3), np.uint8)
        )
    (tmp_path / "pickled.pth").write_bytes(b"not a torch file")
    with pytest.raises(CbirError, match="not a state dict"):
        get_extractor("efficientnet", weights=str(tmp_path / "pickled.pth")).transform(
            np.zeros((1, 224, 224, 3), np.uint8)
        )
    with pytest.raises(CbirError, match="image_size"):
        get_extractor("efficientnet", image_size=16)


def test_cnn_accepts_every_normalisation_the_networks_know() -> None:
    from cbir.features.cnn.extractor import NORMALISATION_NAMES
    from cbir.features.cnn.networks import NORMALISATIONS

    assert tuple(NORMALISATIONS) == NORMALISATION_NAMES
