"""EfficientNet-Lite0 (Tan & Le 2019; the TF-Lite variant of 2020) in plain torch, with the
module names of the EfficientNet-PyTorch package, so that its ImageNet state dicts load as they
are (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ..., `_conv_head`, `_bn1`, `_fc`).

Lite differs from B0 in three ways: no squeeze-and-excitation, ReLU6 instead of swish, and a
stem and head that are not scaled with width. What the pretrained weights also fix, and the
classification test in tests/features/test_efficientnet.py checks on real photos:
- BatchNorm epsilon 1e-3 (TensorFlow's), not torch's 1e-5;
- TensorFlow "SAME" padding: a stride-2 convolution pads more on the bottom/right than on the
  top/left (torch's symmetric `k // 2` shifts every stride-2 feature map by half a pixel);
- input (pixel - 127) / 128, RGB (normalisation "lite" in networks.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cbir.features.lite_onnx import EMBEDDING_DIM

BN_EPS = 1e-3
IMAGENET_CLASSES = 1000
# B0's stages: (repeats, kernel, first stride, expansion, channels out); width/depth 1.0
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip
STEM_CHANNELS = 32


class SameConv2d(nn.Conv2d):
    """A bias-free convolution padded like TensorFlow's padding="SAME": output side =
    ceil(input / stride), the extra pixel of an odd total padding going to the bottom/right."""

    def __init__(
        self, channels_in: int, channels_out: int, kernel: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(channels_in, channels_out, kernel, stride, padding=0, groups=groups,
                         bias=False)  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride = self.kernel_size[0], self.stride[0]
        if stride == 1:  # SAME with stride 1 is symmetric: let the convolution pad (no copy)
            return F.conv2d(x, self.weight, self.bias, 1, kernel // 2, 1, self.groups)
        if kernel > 1:
            pads = []
            for side in (x.shape[-1], x.shape[-2]):  # F.pad order: width first, then height
                total = max((math.ceil(side / stride) - 1) * stride + kernel - side, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _batchnorm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class InvertedResidual(nn.Module):
    """MBConv without squeeze-excite: 1x1 expand, depthwise kxk, 1x1 project, identity skip
    when the shape is kept."""

    def __init__(
        self, channels_in: int, channels_out: int, kernel: int, stride: int, expand: int
    ) -> None:
        super().__init__()
        hidden = channels_in * expand
        self.expands = expand != 1
        if self.expands:
            self._expand_conv = SameConv2d(channels_in, hidden, 1)
            self._bn0 = _batchnorm(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _batchnorm(hidden)
        self._project_conv = SameConv2d(hidden, channels_out, 1)
        self._bn2 = _batchnorm(channels_out)
        self.skip = stride == 1 and channels_in == channels_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expands:
            out = F.relu6(self._bn0(self._expand_conv(out)), inplace=True)
        out = F.relu6(self._bn1(self._depthwise_conv(out)), inplace=True)
        out = self._bn2(self._project_conv(out))
        return out + x if self.skip else out

    def conv_batchnorm_pairs(self) -> list[tuple[str, str]]:
        pairs = [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
        return ([("_expand_conv", "_bn0")] if self.expands else []) + pairs


class EfficientNetLite0(nn.Module):
    """`embed(x)` is the pooled 1280-d feature before the classifier; `forward(x)` the
    ImageNet logits. Input: (N, 3, H, W) with the "lite" normalisation, 224 px."""

    embedding_dim = EMBEDDING_DIM

    def __init__(self, classes: int = IMAGENET_CLASSES) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _batchnorm(STEM_CHANNELS)
        blocks, channels = [], STEM_CHANNELS
        for repeats, kernel, stride, expand, channels_out in STAGES:
            for i in range(repeats):
                blocks.append(InvertedResidual(channels, channels_out, kernel,
                                               stride if i == 0 else 1, expand))  # fmt: skip
                channels = channels_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(channels, EMBEDDING_DIM, 1)
        self._bn1 = _batchnorm(EMBEDDING_DIM)
        self._fc = nn.Linear(EMBEDDING_DIM, classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        return x.mean(dim=(2, 3))

    @torch.no_grad()
    def fold_batchnorm(self) -> EfficientNetLite0:
        """For inference (eval mode): fold every BatchNorm into the convolution before it, one
        pass less over memory per layer (BatchNorm took ~17% of a CPU forward pass). The
        state dict then no longer matches the original names: fold a copy you will not save."""
        owners = [(self, [("_conv_stem", "_bn0"), ("_conv_head", "_bn1")])]
        owners += [(block, block.conv_batchnorm_pairs()) for block in self._blocks]
        for owner, pairs in owners:
            for conv_name, bn_name in pairs:
                conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale)
                setattr(owner, bn_name, nn.Identity())
        return self

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding, logits) in one pass."""
        features = self.embed(x)
        return features, self._fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.embed(x))
