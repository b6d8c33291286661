"""Networks: shapes, the embedding/logit split, whitening, normalisation."""

from __future__ import annotations

import pytest
import torch

from cbir.errors import UnknownNameError
from cbir.features.cnn.networks import (
    ARCHITECTURES,
    build_network,
    fold_batchnorm,
    init_whitening,
    normalise,
)


@pytest.mark.parametrize(
    ("arch", "options", "dim"),
    [("airbench", {"widths": [8, 16, 24]}, 24), ("lenet", {}, 84), ("mlp", {"hidden": 32}, 32)],
)
def test_every_network_gives_embedding_and_logits(arch: str, options: dict, dim: int) -> None:
    net = build_network(arch, classes=7, **options).eval()
    x = torch.randn(5, 3, 32, 32)
    embedding, logits = net.forward_both(x)
    assert embedding.shape == (5, dim) and logits.shape == (5, 7)
    assert net.embedding_dim == dim
    torch.testing.assert_close(net(x), logits)
    torch.testing.assert_close(net.embed(x), embedding)


def test_default_airbench_has_the_paper_widths() -> None:
    net = build_network("airbench")
    assert net.embedding_dim == 256 and net.scale == pytest.approx(1 / 9)
    assert not net.body[0].weight.requires_grad  # whitening is computed, not learnt


def test_unknown_architecture_lists_choices() -> None:
    with pytest.raises(UnknownNameError, match="airbench"):
        build_network("resnet9000")
    assert set(ARCHITECTURES) == {"airbench", "lenet", "mlp"}


def test_whitening_decorrelates_patches() -> None:
    torch.manual_seed(0)
    mixing = torch.randn(3, 3)
    images = torch.einsum("nchw,dc->ndhw", torch.randn(64, 3, 16, 16), mixing)
    net = build_network("airbench", widths=[8, 8, 8])
    init_whitening(net, images, eps=0.0)
    conv = net.body[0]
    out = torch.nn.functional.conv2d(images, conv.weight[:12])  # first half: +eigenvectors
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = flat.T @ flat / len(flat)
    torch.testing.assert_close(covariance, torch.eye(12), atol=2e-2, rtol=0)


def test_normalise_is_channels_last_and_standardised() -> None:
    images = torch.full((2, 32, 32, 3), 255, dtype=torch.uint8)
    x = normalise(images)
    assert x.shape == (2, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    assert normalise(images, "imagenet", size=64).shape == (2, 3, 64, 64)


def test_folding_batchnorm_keeps_the_outputs() -> None:
    import copy

    torch.manual_seed(0)
    net = build_network("airbench", widths=[8, 16, 16])
    net.train()
    for _ in range(3):  # give the BatchNorms non-trivial running statistics
        net(torch.randn(16, 3, 32, 32))
    net.eval()
    x = torch.randn(4, 3, 32, 32)
    folded = fold_batchnorm(copy.deepcopy(net))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), net(x), atol=1e-4, rtol=1e-4)
