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


# --- ONNX Runtime: the path indexing takes on CPUs without native bfloat16 ---------------------
def test_onnx_runtime_agrees_with_torch(extractor, photos: np.ndarray) -> None:
    from cbir.features.cnn.inference import infer
    from cbir.features.cnn.models import load_efficientnet_lite0

    assert extractor.runtime == "onnxruntime"  # bf16=False: float32 on ONNX Runtime everywhere
    features, logits = extractor.embeddings_and_logits(photos)
    model = load_efficientnet_lite0().fold_batchnorm().to(memory_format=torch.channels_last)
    expected = infer(model.forward_both, photos, bf16=False, statistics="lite")
    np.testing.assert_allclose(features, expected[0], atol=1e-4)
    np.testing.assert_allclose(logits, expected[1], atol=1e-3)
    # the same network unfolded, as the state dict holds it (BatchNorm folding is exact too)
    unfolded = infer(load_efficientnet_lite0().forward_both, photos, bf16=False, statistics="lite")
    np.testing.assert_allclose(logits, unfolded[1], atol=1e-3)
    # any batch size gives the same vectors (the graph takes any N)
    single = get_extractor("efficientnet", bf16=False, threads=1, batch_size=1)
    np.testing.assert_allclose(single.transform(photos), extractor.transform(photos), atol=1e-6)


def test_other_image_sizes_get_their_own_graph(photos: np.ndarray) -> None:
    small = get_extractor("efficientnet", image_size=160, bf16=False, threads=1)
    images = np.stack([_photo(name, 160) for name in ("chelsea", "coffee")])
    from cbir.features.cnn.inference import infer
    from cbir.features.cnn.models import load_efficientnet_lite0

    # 160 is not a multiple of 32: the stride-2 "SAME" pads are uneven at some stages
    expected = infer(load_efficientnet_lite0().forward_both, images, bf16=False, statistics="lite")
    np.testing.assert_allclose(small.embeddings_and_logits(images)[1], expected[1], atol=1e-3)
    odd = get_extractor("efficientnet", image_size=97, bf16=False, threads=1)
    images = np.stack([_photo("chelsea", 97)])
    expected = infer(load_efficientnet_lite0().forward_both, images, bf16=False, statistics="lite")
    np.testing.assert_allclose(odd.embeddings_and_logits(images)[1], expected[1], atol=1e-3)


def test_cached_graph_is_rebuilt_when_missing_or_damaged(tmp_path: Path, monkeypatch) -> None:
    from cbir.features import lite_onnx

    monkeypatch.setenv("CBIR_CACHE_DIR", str(tmp_path / "cache"))
    sha = lite_onnx.file_sha256(lite_onnx.weights_path(""))
    path = lite_onnx.cache_file(sha, 224)
    assert path.is_relative_to(tmp_path / "cache") and sha in path.name
    assert not path.exists()
    graph = lite_onnx.lite0_graph("", sha, 224)
    assert lite_onnx.read_cached(path) == graph  # built, then cached with its checksum
    assert lite_onnx.lite0_graph("", sha, 224) == graph  # read back
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    for damage in (
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: data[:1000] + bytes([data[1000] ^ 1]) + data[1001:],  # one bit flipped
        lambda data: b"",  # empty
    ):
        path.write_bytes(damage(path.read_bytes()))
        assert lite_onnx.read_cached(path) is None
        assert lite_onnx.lite0_graph("", sha, 224) == graph  # rebuilt
        assert lite_onnx.read_cached(path) == graph  # and the cache repaired
    path.unlink()
    assert lite_onnx.lite0_graph("", sha, 224) == graph and path.is_file()
    # a session made from the cached graph classifies as the network does
    session = lite_onnx.Lite0Session(lite_onnx.read_cached(path), threads=1)
    logits = session.run(np.stack([_photo("chelsea")]), batch_size=8)[1]
    assert 281 <= logits.argmax() <= 285 and session.classes == 1000


def test_indexing_with_a_cached_graph_imports_neither_torch_nor_onnx(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from cbir.features import get_extractor\n"
        "e = get_extractor('efficientnet', bf16=False, threads=1)\n"
        "assert e.transform(np.zeros((2, 224, 224, 3), np.uint8)).shape == (2, 2280)\n"
        "print(sorted({'torch', 'onnx'} & set(sys.modules)))\n"
    )
    env = {**os.environ, "CBIR_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        for _ in range(2)
    ]
    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert runs[0].stdout.strip() == "['onnx', 'torch']"  # the first run builds the graph
    assert runs[1].stdout.strip() == "[]"  # later ones only read it
