"""Batched inference: embeddings and logits of uint8 images, with optional test-time
augmentation, under inference_mode, channels-last and bfloat16 autocast."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from cbir.features.cnn.models import Reader
from cbir.features.cnn.networks import normalise

# torch-free, so that the efficientnet extractor can use them without importing torch
from cbir.features.lite_onnx import native_bf16, softmax  # noqa: F401

# Test-time augmentation levels, as airbench: 0 none, 1 mirror, 2 mirror + 1-pixel translations.
TTA_LEVELS = (0, 1, 2)


def autocast(bf16: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast when asked for and the CPU has it natively; float32 otherwise."""
    if bf16 and native_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _views(x: torch.Tensor, tta: int) -> list[tuple[torch.Tensor, float]]:
    """(view, weight) pairs whose weighted mean is the TTA output (weights sum to 1)."""
    if tta == 0:
        return [(x, 1.0)]
    views = [(x, 0.5), (x.flip(-1), 0.5)]
    if tta == 2:
        padded = F.pad(x, (1,) * 4, mode="reflect")
        size = x.shape[-1]
        views = [(v, w * 0.5) for v, w in views]
        for shifted in (padded[:, :, :size, :size], padded[:, :, 2:, 2:]):
            shifted = shifted.contiguous(memory_format=torch.channels_last)
            views += [(shifted, 0.125), (shifted.flip(-1), 0.125)]
    return views


def forward_tta(
    read: Reader, x: torch.Tensor, tta: int = 0, bf16: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(embedding, logits) of a normalised batch, averaged over the TTA views, as float32."""
    embedding = logits = None
    with autocast(bf16):
        for view, weight in _views(x, tta):
            features, out = read(view)
            features = features.float() * weight
            embedding = features if embedding is None else embedding + features
            if out is not None:
                out = out.float() * weight
                logits = out if logits is None else logits + out
    return embedding, logits


def infer(
    read: Reader,
    images: np.ndarray,
    tta: int = 0,
    batch_size: int = 1024,
    bf16: bool = True,
    statistics: str = "cifar",
    size: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings (N, D) and logits (N, classes), or None without a classifier, of uint8
    (N, H, W, 3) images, in batches."""
    embeddings, logits = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            # Decoded images may be read-only; torch wants (and warns without) a writable array.
            chunk = np.require(images[start : start + batch_size], requirements=["C", "W"])
            part = torch.from_numpy(chunk)
            embedding, out = forward_tta(read, normalise(part, statistics, size), tta, bf16)
            embeddings.append(embedding.numpy())
            if out is not None:
                logits.append(out.numpy())
    return np.concatenate(embeddings), (np.concatenate(logits) if logits else None)
