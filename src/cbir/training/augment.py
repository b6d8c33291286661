"""Batched data augmentation on normalised NCHW tensors: random flips, padded crops
(translations) and cutout, drawn from a torch.Generator so a seeded run is reproducible."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_reflect(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad once per dataset, so each batch only has to crop."""
    if pad == 0:
        return images
    return F.pad(images, (pad,) * 4, mode="reflect")


def random_crop(padded: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """A random (2 pad + 1)^2 translation per image of an already padded batch."""
    if pad == 0:
        return padded
    size = padded.shape[-1] - 2 * pad
    shifts = torch.randint(0, 2 * pad + 1, (2, len(padded)), generator=generator)
    out = torch.empty((len(padded), padded.shape[1], size, size), dtype=padded.dtype).contiguous(
        memory_format=torch.channels_last
    )
    # One slice per distinct shift (at most 25 for pad 2) instead of one per image.
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            chosen = (shifts[0] == dy) & (shifts[1] == dx)
            if chosen.any():
                out[chosen] = padded[chosen, :, dy : dy + size, dx : dx + size]
    return out


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero (the dataset mean, once normalised) one size x size square per image, centred on a
    random pixel as DeVries & Taylor's cutout, so squares near the border are clipped."""
    if size == 0:
        return images
    height, width = images.shape[-2:]
    centres = torch.stack(
        [torch.randint(0, n, (len(images),), generator=generator) for n in (height, width)]
    )
    corners = centres - size // 2
    rows = torch.arange(height).view(1, height, 1)
    cols = torch.arange(width).view(1, 1, width)
    top, left = corners[0].view(-1, 1, 1), corners[1].view(-1, 1, 1)
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return images.masked_fill(inside.unsqueeze(1), 0.0)


def augment_batch(
    padded: torch.Tensor, pad: int, flip: bool, generator: torch.Generator, cutout_size: int = 0
) -> torch.Tensor:
    images = random_crop(padded, pad, generator)
    images = random_flip(images, generator) if flip else images
    return cutout(images, cutout_size, generator)
