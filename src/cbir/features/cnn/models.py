"""Loading a network for the `cnn` extractor, and reading embeddings from any of its layers.

A model is one of:
- a cbir checkpoint folder (`cbir train` output: config.json + model.safetensors);
- a state dict (`.safetensors`, or `.pth` / `.pt` / `.bin` read with `weights_only=True`) plus
  an architecture name: one of ours (`airbench`, `lenet`, `mlp`, `efficientnet-lite0`) or
  `torchvision:NAME` / `timm:NAME` when that package is installed;
- a TorchScript file (`torch.jit.save`) or a `torch.export` program (`.pt2`).
None of these unpickles arbitrary objects. The embedding is read from a named layer through a
forward hook (as the reference read VGG-16's fc7), or from the model's own `embed` / output.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from cbir.errors import CbirError
from cbir.features.cnn.checkpoint import (
    CONFIG_FILE,
    TORCH_STATE_SUFFIXES,
    load_checkpoint,
    read_state_dict,
)
from cbir.features.cnn.efficientnet_lite import IMAGENET_CLASSES, EfficientNetLite0
from cbir.features.cnn.networks import ARCHITECTURES, EmbeddingNet, build_network
from cbir.features.lite_onnx import weights_path  # found without torch, for lite_onnx too

DEFAULT_WEIGHTS = Path(__file__).parent / "weights"
# Pretrained networks we implement, by the arch name a state dict of theirs is given with.
PRETRAINED_ARCHITECTURES = {"efficientnet-lite0": EfficientNetLite0}
# Wider networks shipped to vote on query classes (extractor parameter classifiers=...), by
# the name that parameter takes: the same recipe trained from two seeds.
COMMITTED_CLASSIFIERS = {name: DEFAULT_WEIGHTS / name for name in ("wide", "wide-seed1")}

# Takes a normalised NCHW batch, returns (embedding, logits or None).
Reader = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def load_model(weights: str, arch: str = "", classes: int = 10) -> nn.Module:
    """The network a `weights` path names (see the module docstring), in eval mode."""
    path = Path(weights).expanduser() if weights else DEFAULT_WEIGHTS
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        return load_checkpoint(path)[0]
    if not path.is_file():
        raise CbirError(f"no model at {path}: give a `cbir train` folder or a model file")
    if path.suffix == ".safetensors" or (path.suffix in TORCH_STATE_SUFFIXES and arch):
        return _from_state_dict(path, arch, classes)
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as error:
        raise CbirError(
            f"{path} is neither TorchScript nor torch.export; give a state dict "
            "(.safetensors, .pth) with arch=NAME"
        ) from error


def _from_state_dict(path: Path, arch: str, classes: int) -> nn.Module:
    if not arch:
        raise CbirError(f"{path} is a bare state dict: name its architecture with arch=NAME")
    state = read_state_dict(path)
    if arch in ARCHITECTURES:
        model: nn.Module = build_network(arch, classes=classes)
    elif arch in PRETRAINED_ARCHITECTURES:
        model = PRETRAINED_ARCHITECTURES[arch](classes=_output_classes(state) or classes)
    elif arch.partition(":")[0] in ("torchvision", "timm"):
        model = _zoo_model(arch, _output_classes(state))
    else:
        raise CbirError(
            f"unknown arch {arch!r}; choose one of "
            f"{', '.join(sorted([*ARCHITECTURES, *PRETRAINED_ARCHITECTURES]))}, "
            "torchvision:NAME or timm:NAME"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CbirError(f"{path} does not fit arch {arch!r}: {error}") from error
    return model.eval()


def load_efficientnet_lite0(weights: str = "") -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode with the packaged ImageNet weights ("") or a state dict
    of the same architecture (`.pth` / `.safetensors`, e.g. fine-tuned to your classes)."""
    return _from_state_dict(weights_path(weights), "efficientnet-lite0", classes=IMAGENET_CLASSES)


def _output_classes(state: dict[str, torch.Tensor]) -> int | None:
    """Rows of the state dict's last matrix: the classifier's outputs in torchvision and timm
    classification models, so a network fine-tuned to 10 classes loads as one."""
    matrices = [tensor for tensor in state.values() if tensor.ndim == 2]
    return matrices[-1].shape[0] if matrices else None


def _zoo_model(arch: str, classes: int | None) -> nn.Module:
    package, _, name = arch.partition(":")
    try:
        module = importlib.import_module(package if package == "timm" else "torchvision.models")
    except ImportError as error:
        raise CbirError(f"arch {arch!r} needs {package}: pip install {package}") from error
    shape = {} if classes is None else {"num_classes": classes}
    try:
        if package == "timm":
            return module.create_model(name, pretrained=False, **shape)
        return module.get_model(name, weights=None, **shape)
    except (RuntimeError, ValueError) as error:  # an unknown name
        raise CbirError(f"{package} has no model {name!r} ({error})") from error


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def make_reader(model: nn.Module, layer: str = "") -> Reader:
    """(embedding, logits) of a batch: the named layer's output through a forward hook, or the
    network's own embedding. With a hooked layer, a model whose output is one vector per image
    (a torchvision or timm classifier) gives that output as logits, for class fusion; logits
    are None when the model has no classifier output we know."""
    if not layer:
        if isinstance(model, EmbeddingNet | EfficientNetLite0):
            return model.forward_both
        return lambda x: (_flat(model(x)), None)
    modules = dict(model.named_modules())
    if layer not in modules:
        shown = ", ".join(layer_names(model)[:40])
        raise CbirError(f"model has no layer {layer!r}; its layers include: {shown}")
    captured: list[torch.Tensor] = []
    try:
        modules[layer].register_forward_hook(lambda _m, _i, output: captured.append(output))
    except RuntimeError as error:  # TorchScript modules take no hooks
        raise CbirError(f"cannot hook layer {layer!r} of this model ({error})") from error

    def read(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        captured.clear()
        output = model(x)
        if not captured:
            raise CbirError(f"layer {layer!r} did not run in the forward pass")
        is_logits = isinstance(output, torch.Tensor) and output.ndim == 2
        return _flat(captured[-1]), output if is_logits else None

    return read


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    """Feature maps (N, C, H, W) become (N, C) by global average pooling."""
    if isinstance(tensor, tuple | list):
        tensor = tensor[0]
    return tensor.mean(dim=(2, 3)) if tensor.ndim == 4 else tensor.flatten(1)
