"""Training parameters, kept free of torch so that `cbir train --help` stays instant."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LossWeights:
    cross_entropy: float = 1.0
    supcon: float = 0.0
    triplet: float = 0.0
    label_smoothing: float = 0.2
    temperature: float = 0.1  # supervised contrastive
    margin: float = 0.2  # triplet, on cosine distance
    distill: float = 0.0  # knowledge distillation from teacher logits
    distill_temperature: float = 4.0

    def __post_init__(self) -> None:
        weights = (self.cross_entropy, self.supcon, self.triplet, self.distill)
        if min(weights) < 0:
            raise ValueError("loss weights must be >= 0")
        if sum(weights) == 0:
            raise ValueError("at least one loss needs a positive weight")
        if self.distill_temperature <= 0:
            raise ValueError("the distillation temperature must be > 0")


@dataclass
class TrainConfig:
    arch: str = "airbench"
    arch_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 1024
    lr: float = 11.5  # per 1024 examples, with the loss summed over the batch
    momentum: float = 0.85
    weight_decay: float = 0.0153  # per 1024 examples, decoupled from the learning rate
    bias_scaler: float = 64.0  # learning-rate multiplier of BatchNorm biases
    warmup: float = 0.23  # fraction of the steps spent warming up from 0.2 x lr
    final_lr: float = 0.07  # learning rate at the end, as a fraction of lr
    whiten_bias_epochs: int = 3
    translate: int = 2  # pixels of random translation (reflect padding)
    flip: bool = True
    cutout: int = 0  # side of the square blanked per image (0 = off); helps long runs
    lookahead: bool = True
    tta: int = 2  # test-time augmentation level for reported accuracies
    cross_entropy: float = 1.0
    supcon: float = 0.0
    triplet: float = 0.0
    label_smoothing: float = 0.2
    temperature: float = 0.1
    margin: float = 0.2
    distill: float = 0.0  # weight of the distillation loss (needs distill_from)
    distill_from: str = ""  # comma-separated teacher checkpoint folders
    distill_temperature: float = 4.0
    val_split: float = 0.0  # fraction of the training images held out for validation
    seed: int = 0
    threads: int = 2
    bf16: bool = True

    def __post_init__(self) -> None:
        from cbir.errors import CbirError

        if self.epochs < 1 or self.batch_size < 2:
            raise CbirError("epochs must be >= 1 and batch size >= 2")
        if not 0.0 <= self.val_split < 1.0:
            raise CbirError("val_split must be in [0, 1)")
        if self.cutout < 0 or self.translate < 0:
            raise CbirError("cutout and translate must be >= 0")
        if self.tta not in (0, 1, 2):
            raise CbirError("tta must be 0 (none), 1 (flip) or 2 (flip + translate)")
        if (self.distill > 0) != bool(self.distill_from):
            raise CbirError("--distill and --distill-from go together (a weight and teachers)")
        try:
            self.loss_weights()
        except ValueError as error:
            raise CbirError(str(error)) from error

    def loss_weights(self) -> LossWeights:
        return LossWeights(
            cross_entropy=self.cross_entropy, supcon=self.supcon, triplet=self.triplet,
            label_smoothing=self.label_smoothing, temperature=self.temperature,
            margin=self.margin, distill=self.distill,
            distill_temperature=self.distill_temperature,
        )  # fmt: skip
