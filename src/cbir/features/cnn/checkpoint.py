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
    from safetensors.torch import load_file

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
        net.load_state_dict(load_file(str(weights_path)))
    except RuntimeError as error:
        raise CbirError(f"{weights_path} does not match its {CONFIG_FILE}: {error}") from error
    return net.eval(), config


def export_checkpoint(source: Path, target: Path, dtype: str = "float16") -> None:
    """Copy a trained model for shipping: weights cast to `dtype` (float16 halves the file;
    loading casts back to float32), its config and its training log."""
    import shutil

    from safetensors.torch import save_file

    from cbir.storage import atomic_write_json

    source, target = Path(source), Path(target)
    net, config = load_checkpoint(source)
    target.mkdir(parents=True, exist_ok=True)
    cast = getattr(torch, dtype)
    state = {k: v.to(cast) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    save_file(state, str(target / WEIGHTS_FILE), metadata={"format": str(FORMAT)})
    atomic_write_json(target / CONFIG_FILE, {**config, "stored_dtype": dtype})
    for name in ("train_log.jsonl", "train.log"):
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
