"""User-supplied torchvision and timm networks, saved to a local file and read through a
forward hook. torchvision cannot be installed beside the project's CPU torch 2.13.0, so these
run in the separate `.venv-vision` (`make test-vision`, also run by CI) and skip elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cbir.errors import CbirError
from cbir.features import get_extractor, load_extractor
from cbir.features.cnn.networks import normalise

if os.environ.get("CBIR_EXPECT_TORCHVISION"):  # `make test-vision`: a skip would hide a failure
    import timm as _timm  # noqa: F401
    import torchvision
else:
    torchvision = pytest.importorskip("torchvision", reason="torchvision lives in .venv-vision")

IMAGES = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)


def _saved(model: torch.nn.Module, path: Path) -> str:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def _expected(model: torch.nn.Module, layer: torch.nn.Module, size: int) -> np.ndarray:
    """The hooked layer's output computed by hand, average-pooled and L2-normalised."""
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.inference_mode():
        model.eval()(normalise(torch.from_numpy(IMAGES), "imagenet", size))
    handle.remove()
    features = seen[0].flatten(1) if seen[0].ndim == 2 else seen[0].mean((2, 3))
    return torch.nn.functional.normalize(features, dim=1).numpy()


def test_torchvision_resnet_from_a_state_dict_with_a_hooked_layer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    params = {
        "weights": _saved(model, tmp_path / "resnet18.safetensors"),
        "arch": "torchvision:resnet18", "layer": "layer4", "normalisation": "imagenet",
        "image_size": 64, "bf16": False, "tta": 0, "threads": 1,
    }  # fmt: skip
    extractor = get_extractor("cnn", **params)
    vectors = extractor.transform(IMAGES)
    assert vectors.shape == (6, 512) == (6, extractor.dim)
    np.testing.assert_allclose(vectors, _expected(model, model.layer4, 64), atol=1e-5)

    # the classifier's 10 outputs are its logits: class fusion as the reference did with VGG-16
    fused = get_extractor("cnn", **params, class_fusion=True)
    with torch.inference_mode():
        predicted = model.eval()(normalise(torch.from_numpy(IMAGES), "imagenet", 64)).argmax(1)
    fused_vectors = fused.transform(IMAGES)
    assert fused.dim == 522
    np.testing.assert_array_equal(fused_vectors[:, 512:].argmax(1), predicted.numpy())

    extractor.save(tmp_path / "saved")
    np.testing.assert_allclose(load_extractor(tmp_path / "saved").transform(IMAGES), vectors)


def test_wrong_torchvision_names_are_clear_errors(tmp_path: Path) -> None:
    weights = _saved(torchvision.models.resnet18(weights=None), tmp_path / "r18.safetensors")
    with pytest.raises(CbirError, match="does not fit"):
        _ = get_extractor("cnn", weights=weights, arch="torchvision:resnet34").dim
    with pytest.raises(CbirError, match="no model"):
        _ = get_extractor("cnn", weights=weights, arch="torchvision:no_such_net").dim
    with pytest.raises(CbirError, match="no layer 'fc7'"):
        _ = get_extractor("cnn", weights=weights, arch="torchvision:resnet18", layer="fc7").dim


def test_timm_model_from_a_state_dict(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm", reason="timm lives in .venv-vision")
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=10)
    extractor = get_extractor(
        "cnn", weights=_saved(model, tmp_path / "resnet10t.safetensors"), arch="timm:resnet10t",
        layer="global_pool", normalisation="imagenet", image_size=64, bf16=False, tta=0,
        threads=1,
    )  # fmt: skip
    vectors = extractor.transform(IMAGES)
    assert vectors.shape == (6, model.num_features)
    np.testing.assert_allclose(vectors, _expected(model, model.global_pool, 64), atol=1e-5)
