"""Loading models: our checkpoints, bare state dicts + arch, TorchScript, torch.export;
reading any layer through a forward hook."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from cbir.errors import CbirError
from cbir.features.cnn.models import layer_names, load_model, make_reader
from cbir.features.cnn.networks import EmbeddingNet, build_network


class SmallNet(nn.Module):
    """Stands in for a user's pretrained model: conv features, then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.fc = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def test_checkpoint_folder(tiny_checkpoint: Path) -> None:
    assert isinstance(load_model(str(tiny_checkpoint)), EmbeddingNet)


def test_state_dict_with_our_arch(tmp_path: Path) -> None:
    net = build_network("lenet")
    save_file(net.state_dict(), str(tmp_path / "lenet.safetensors"))
    loaded = load_model(str(tmp_path / "lenet.safetensors"), arch="lenet")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), net.eval()(x))
    with pytest.raises(CbirError, match="arch=NAME"):
        load_model(str(tmp_path / "lenet.safetensors"))
    with pytest.raises(CbirError, match="does not fit"):
        load_model(str(tmp_path / "lenet.safetensors"), arch="mlp")


def test_torchscript_file_gives_its_output(tmp_path: Path) -> None:
    model = SmallNet().eval()
    torch.jit.save(torch.jit.script(model), str(tmp_path / "small.pt"))
    read = make_reader(load_model(str(tmp_path / "small.pt")))
    x = torch.randn(3, 3, 16, 16)
    embedding, logits = read(x)
    torch.testing.assert_close(embedding, model(x))
    assert logits is None


def test_exported_program_layer_hook(tmp_path: Path) -> None:
    model = SmallNet().eval()
    x = torch.randn(3, 3, 16, 16)
    torch.export.save(torch.export.export(model, (x,)), str(tmp_path / "small.pt2"))
    loaded = load_model(str(tmp_path / "small.pt2"))
    embedding, _ = make_reader(loaded)(x)
    torch.testing.assert_close(embedding, model(x))


def test_forward_hook_reads_a_named_layer() -> None:
    model = SmallNet().eval()
    x = torch.randn(3, 3, 16, 16)
    embedding, logits = make_reader(model, "features.1")(x)
    assert embedding.shape == (3, 6)  # (3, 6, 14, 14) feature maps, average-pooled
    torch.testing.assert_close(embedding, model.features[1](model.features[0](x)).mean((2, 3)))
    torch.testing.assert_close(logits, model(x))  # one vector per image: the classifier's output
    assert "features.1" in layer_names(model)
    with pytest.raises(CbirError, match="no layer 'fc7'"):
        make_reader(model, "fc7")


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CbirError, match="no model at"):
        load_model(str(tmp_path / "nothing.pt"))
