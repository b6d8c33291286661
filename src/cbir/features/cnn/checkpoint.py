"""Checkpoints as safetensors (weights) + JSON (how to rebuild the network, how it was trained,
what it scored), never pickle: a checkpoint may come from someone else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cbir.errors import CbirError
from cbir.features.cnn.networks import EmbeddingNet, build_network

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = 1


def save_checkpoint(folder: Path, net: EmbeddingNet, config: dict[str, Any]) -> None:
    """`config` must hold `arch` and `arch_options`; anything else (training parameters,
    metrics, class names) is kept for the record."""
    from safetensors.torch import save_file

    from cbir.storage import atomic_write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() if v.is_floating_point() else v.contiguous()
             for k, v in net.state_dict().items()}  # fmt: skip
    temporary = folder / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(temporary), metadata={"format": str(FORMAT)})
    temporary.replace(folder / WEIGHTS_FILE)
    atomic_write_json(folder / CONFIG_FILE, {"format": FORMAT, **config})


def load_checkpoint(folder: Path) -> tuple[EmbeddingNet, dict[str, Any]]:
    """The network in eval mode and its config."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise CbirError(
            f"{folder} is not a cbir CNN checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "train one with `cbir train`"
        )
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise CbirError(f"{config_path}: unsupported checkpoint format {config.get('format')!r}")
    net = build_network(config["arch"], **config.get("arch_options", {}))
    try:
        net.load_state_dict(read_weights(weights_path))
    except RuntimeError as error:
        raise CbirError(f"{weights_path} does not match its {CONFIG_FILE}: {error}") from error
    return net.eval(), config


def export_checkpoint(source: Path, target: Path, dtype: str = "float16") -> None:
    """Copy a trained model for shipping: weights cast to `dtype` (float16 halves the file;
    int8 quarters it, see `_quantised`; loading casts back to float32), its config and its
    training log."""
    import shutil

    from safetensors.torch import save_file

    from cbir.storage import atomic_write_json

    if dtype not in ("float16", "bfloat16", "int8"):
        raise CbirError(f"cannot ship weights as {dtype!r}: choose float16, bfloat16 or int8")
    source, target = Path(source), Path(target)
    net, config = load_checkpoint(source)
    target.mkdir(parents=True, exist_ok=True)
    if dtype == "int8":
        state = _quantised(net.state_dict())
    else:
        cast = getattr(torch, dtype)
        state = {k: v.to(cast) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    save_file(state, str(target / WEIGHTS_FILE), metadata={"format": str(FORMAT)})
    atomic_write_json(target / CONFIG_FILE, {**config, "stored_dtype": dtype})
    for name in ("train_log.jsonl", "train.log"):
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


# int8 storage: every kernel / matrix as int8 with one float scale per output channel
# (symmetric, max-abs / 127), stored beside it under this suffix; other tensors as float16.
# The first and last of them (input and output layers) stay float16, the usual practice: they
# are a rounding error of the file, and airbench's first layer, patch-whitening filters scaled
# by 1/sqrt(eigenvalue), has outliers that int8 crushes (on the wide network: 92.45% test
# accuracy with it in int8, 92.53% without, 92.54% in float32).
SCALE_SUFFIX = ".int8_scale"


def _quantised(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    kernels = [k for k, v in state.items() if v.is_floating_point() and v.ndim >= 2]
    quantise = set(kernels[1:-1])
    out = {}
    for key, tensor in state.items():
        if key in quantise:
            channel_max = tensor.abs().amax(dim=tuple(range(1, tensor.ndim)), keepdim=True)
            scale = channel_max.clamp_min(1e-12) / 127
            out[key] = torch.round(tensor / scale).to(torch.int8)
            out[key + SCALE_SUFFIX] = scale.float()
        else:
            out[key] = tensor.half() if tensor.is_floating_point() else tensor
    return out


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors state dict, with int8-stored kernels (see `_quantised`) restored to float."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    scales = {k[: -len(SCALE_SUFFIX)]: v for k, v in state.items() if k.endswith(SCALE_SUFFIX)}
    return {
        key: tensor.float() * scales[key] if key in scales else tensor
        for key, tensor in state.items()
        if not key.endswith(SCALE_SUFFIX)
    }


# Suffixes of torch-saved state dicts (torchvision, timm, plain `torch.save(model.state_dict())`)
TORCH_STATE_SUFFIXES = (".pth", ".pt", ".bin")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from `.safetensors`, or from a torch-saved file read with
    `weights_only=True` (tensors and plain containers only: nothing is unpickled that could run
    code). A training checkpoint holding it under "state_dict" or "model" is unwrapped."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_weights(path)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises many kinds; all mean "not a state dict"
        why = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise CbirError(f"{path} is not a state dict torch can read safely ({why})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CbirError(f"{path} holds no state dict (a mapping of names to tensors)")
    return state
