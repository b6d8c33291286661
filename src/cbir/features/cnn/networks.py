"""The networks we train from scratch: the reference's small members (an MLP and a LeNet-like
CNN) and an airbench94-style CIFAR network (the default).

Every network maps a normalised (N, 3, 32, 32) float tensor to logits and exposes
`embed(x)`, the penultimate features the retrieval embedding is read from, and `head`, the
layer that turns those features into logits. `build_network(arch, **options)` is the one place
architectures are named, so a checkpoint's JSON config rebuilds its network exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# CIFAR-10 channel statistics (the reference used the same for its small networks).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class EmbeddingNet(nn.Module):
    """`body` gives the embedding, `head` the logits; `scale` multiplies the logits."""

    def __init__(self, body: nn.Module, head: nn.Linear, scale: float = 1.0) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.scale = scale

    @property
    def embedding_dim(self) -> int:
        return self.head.in_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)) * self.scale

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding, logits) in one pass, for losses that need both."""
        features = self.body(x)
        return features, self.head(features) * self.scale


# --- the reference family's small members ----------------------------------------------------


def mlp(
    hidden: int = 200, layers: int = 3, dropout: float = 0.4, classes: int = 10
) -> EmbeddingNet:
    """The reference's "Neural Network": Linear + BatchNorm + ReLU + dropout, `layers` deep."""
    blocks: list[nn.Module] = [nn.Flatten()]
    width = 3 * 32 * 32
    for _ in range(layers - 1):
        blocks += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    return EmbeddingNet(nn.Sequential(*blocks), nn.Linear(width, classes))


def lenet(dropout: float = 0.4, classes: int = 10) -> EmbeddingNet:
    """The reference's custom CNN: conv 6@5x5, conv 16@5x5 (BN, ReLU, max-pool), FC 120, FC 84."""
    body = nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(120, 84), nn.ReLU(),
    )  # fmt: skip
    return EmbeddingNet(body, nn.Linear(84, classes))


# --- airbench94-style network ------------------------------------------------------------------


class _Conv(nn.Conv2d):
    """3x3 'same' conv without bias, identity-initialised on its first channels (airbench)."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__(channels_in, channels_out, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        weight = self.weight.data
        torch.nn.init.dirac_(weight[: weight.size(1)])


def _batchnorm(channels: int, momentum: float) -> nn.BatchNorm2d:
    """BatchNorm with a frozen unit scale and a learnt bias, as airbench trains it."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=1 - momentum)
    norm.weight.requires_grad = False
    return norm


class _ConvGroup(nn.Sequential):
    def __init__(self, channels_in: int, channels_out: int, momentum: float) -> None:
        super().__init__(
            _Conv(channels_in, channels_out), nn.MaxPool2d(2),
            _batchnorm(channels_out, momentum), nn.GELU(),
            _Conv(channels_out, channels_out), _batchnorm(channels_out, momentum), nn.GELU(),
        )  # fmt: skip


WHITEN_KERNEL = 2


def airbench(
    widths: tuple[int, int, int] | list[int] = (64, 256, 256),
    bn_momentum: float = 0.6,
    logit_scale: float = 1 / 9,
    classes: int = 10,
) -> EmbeddingNet:
    """airbench94: a frozen 2x2 patch-whitening conv (set by `init_whitening`), three conv
    groups with max-pool, a global max-pool and scaled logits."""
    whiten_width = 2 * 3 * WHITEN_KERNEL**2
    body = nn.Sequential(
        nn.Conv2d(3, whiten_width, WHITEN_KERNEL, padding=0, bias=True),
        nn.GELU(),
        _ConvGroup(whiten_width, widths[0], bn_momentum),
        _ConvGroup(widths[0], widths[1], bn_momentum),
        _ConvGroup(widths[1], widths[2], bn_momentum),
        nn.MaxPool2d(3),
        nn.Flatten(),
    )
    body[0].weight.requires_grad = False  # the whitening filters are computed, not learnt
    return EmbeddingNet(body, nn.Linear(widths[2], classes, bias=False), scale=logit_scale)


def init_whitening(net: EmbeddingNet, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set the first conv to whiten 2x2 patches of `images` (normalised, NCHW): the
    eigenvectors of the patch covariance scaled by 1/sqrt(eigenvalue), each with its negative
    so that the GELU after it keeps both signs."""
    layer = net.body[0]
    channels, (height, width) = images.shape[1], layer.weight.shape[2:]
    patches = images.float().unfold(2, height, 1).unfold(3, width, 1)
    patches = patches.transpose(1, 3).reshape(-1, channels * height * width)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues = eigenvalues.flip(0).view(-1, 1, 1, 1)
    eigenvectors = eigenvectors.T.reshape(-1, channels, height, width).flip(0)
    scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    with torch.no_grad():
        layer.weight.copy_(torch.cat((scaled, -scaled)))


ARCHITECTURES = {"airbench": airbench, "lenet": lenet, "mlp": mlp}


def build_network(arch: str, **options: Any) -> EmbeddingNet:
    """A fresh network by name; `options` are the builder's keyword arguments."""
    from cbir.errors import UnknownNameError

    if arch not in ARCHITECTURES:
        raise UnknownNameError(
            f"unknown architecture {arch!r}; choose one of: {', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[arch](**options)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF-Lite models (EfficientNet-Lite): (pixel - 127) / 128, as mean and std of pixels in [0, 1]
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3
NORMALISATIONS = {
    "cifar": (CIFAR_MEAN, CIFAR_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "lite": (LITE_MEAN, LITE_STD),
}


def normalise(
    images: torch.Tensor, statistics: str = "cifar", size: int | None = None
) -> torch.Tensor:
    """uint8 NHWC -> float NCHW standardised with the named channel statistics, channels-last,
    bilinearly resized to size x size when given (pretrained ImageNet models)."""
    mean, std = NORMALISATIONS[statistics]
    x = images.permute(0, 3, 1, 2).float().div_(255)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def fold_batchnorm(net: EmbeddingNet) -> EmbeddingNet:
    """For inference: fold each airbench BatchNorm into the conv before it (through the
    max-pool, which commutes with a per-channel affine map of positive scale), so a forward
    pass skips the normalisation passes. Returns `net`, changed in place; eval mode only."""
    for group in net.body:
        if not isinstance(group, _ConvGroup):
            continue
        layers = list(group)
        for i, layer in enumerate(layers):
            if not isinstance(layer, nn.BatchNorm2d):
                continue
            conv = layers[i - 1] if isinstance(layers[i - 1], nn.Conv2d) else layers[i - 2]
            scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
            if (scale <= 0).any():  # max-pool would not commute: leave this one
                continue
            shift = layer.bias - layer.running_mean * scale
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(shift if conv.bias is None else conv.bias * scale + shift)
            group[i] = nn.Identity()
    return net
