"""The training loop: seeded, CPU-first (bfloat16 autocast, channels-last, 2 threads).

The default recipe is airbench94's (Keller Jordan): SGD-Nesterov with the loss summed over the
batch and learning rate / weight decay given per 1024 examples, a higher learning rate for
BatchNorm biases, linear warm-up then linear decay, label smoothing, flip + translate
augmentation, a whitening first layer whose bias trains only for the first epochs, and
lookahead (an EMA that the weights are pulled back to every few steps).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cbir.features.cnn.checkpoint import save_checkpoint
from cbir.features.cnn.inference import autocast, infer
from cbir.features.cnn.networks import (
    CIFAR_MEAN,
    CIFAR_STD,
    EmbeddingNet,
    build_network,
    init_whitening,
    normalise,
)  # fmt: skip
from cbir.progress import progress_bar
from cbir.training.augment import augment_batch, pad_reflect
from cbir.training.losses import combined_loss
from cbir.training.train_config import TrainConfig

log = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
LOOKAHEAD_EVERY = 5  # steps between lookahead pulls (airbench)
WHITENING_SAMPLE = 5000  # images whose 2x2 patches set the whitening layer (airbench)


@dataclass
class TrainResult:
    net: EmbeddingNet
    history: list[dict[str, Any]]
    metrics: dict[str, float]
    seconds: float


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), a seeded random slice of the training set."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def subsample(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded random `limit` of `n` items (all when limit is None): the
    CIFAR-10 files are sorted by class, so "the first N" would be one class."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def lr_factor(step: int, total: int, warmup: float, final: float) -> float:
    """Linear warm-up from 0.2 to 1, then linear decay to `final` (airbench94)."""
    warmup_steps = int(total * warmup)
    if step < warmup_steps:
        frac = step / warmup_steps
        return 0.2 * (1 - frac) + frac
    frac = (step - warmup_steps) / max(1, total - warmup_steps)
    return (1 - frac) + final * frac


class Lookahead:
    """An EMA of the weights that the network is reset to at every update."""

    def __init__(self, net: nn.Module) -> None:
        self.ema = {k: v.clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module, decay: float) -> None:
        for ema, current in zip(self.ema.values(), net.state_dict().values(), strict=True):
            if current.is_floating_point():
                ema.lerp_(current, 1 - decay)
                current.copy_(ema)


def _optimizer(net: EmbeddingNet, config: TrainConfig) -> torch.optim.SGD:
    # The summed loss grows with the batch, so the per-step learning rate is divided by the
    # kilostep scale, and weight decay is expressed per parameter group as wd / lr (airbench).
    kilostep_scale = 1024 * (1 + 1 / (1 - config.momentum))
    lr = config.lr / kilostep_scale
    wd = config.weight_decay * config.batch_size / kilostep_scale
    lr_biases = lr * config.bias_scaler
    norm_ids = {
        id(p) for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in m.parameters()
    }  # fmt: skip
    trainable = [p for p in net.parameters() if p.requires_grad]
    norm = [p for p in trainable if id(p) in norm_ids]
    other = [p for p in trainable if id(p) not in norm_ids]
    groups = [dict(params=other, lr=lr, weight_decay=wd / lr)]
    if norm:
        groups.append(dict(params=norm, lr=lr_biases, weight_decay=wd / lr_biases))
    return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=True)


def accuracy(
    net: EmbeddingNet, images: np.ndarray, labels: np.ndarray, config: TrainConfig
) -> float:
    net.eval()
    _, logits = infer(net.forward_both, images, tta=config.tta, bf16=config.bf16)
    return float((logits.argmax(1) == labels).mean())


def train(
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    out_dir: Path | None = None,
    class_names: list[str] | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train on uint8 (N, 32, 32, 3) `images`; the test set, when given, is only scored at the
    end and never used to choose anything. Writes checkpoints and the log to `out_dir`."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    classes = len(class_names) if class_names else int(labels.max()) + 1
    train_idx, val_idx = split_validation(len(images), config.val_split, config.seed)

    net = build_network(config.arch, classes=classes, **config.arch_options)
    net = net.to(memory_format=torch.channels_last)
    train_x = normalise(torch.from_numpy(images[train_idx]))
    train_y = torch.from_numpy(labels[train_idx].astype(np.int64))
    if config.arch == "airbench":
        # A random sample: dataset files are often sorted by class (CIFAR-10's mirror is).
        init_whitening(net, train_x[subsample(len(train_x), WHITENING_SAMPLE, config.seed)])
    teacher = _teacher_targets(images[train_idx], classes, config, out_dir)
    padded = pad_reflect(train_x, config.translate).contiguous(memory_format=torch.channels_last)
    del train_x

    batch = min(config.batch_size, len(train_y))
    steps_per_epoch = len(train_y) // batch  # drop the last partial batch, as airbench
    total_steps = steps_per_epoch * config.epochs
    optimizer = _optimizer(net, config)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    lookahead = Lookahead(net) if config.lookahead else None
    weights = config.loss_weights()
    history: list[dict[str, Any]] = []
    step = 0
    record = dict(asdict(config), arch_options={**config.arch_options, "classes": classes})
    for epoch in range(1, config.epochs + 1):
        if config.arch == "airbench" and epoch == config.whiten_bias_epochs + 1:
            net.body[0].bias.requires_grad_(False)
        net.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(len(train_y), generator=generator)
        loss_sum = correct = seen = 0.0
        with progress_bar(steps_per_epoch * batch, f"epoch {epoch}/{config.epochs}") as bar:
            for i in range(steps_per_epoch):
                idx = order[i * batch : (i + 1) * batch]
                x = augment_batch(
                    padded[idx], config.translate, config.flip, generator, config.cutout
                )
                y = train_y[idx]
                factor = lr_factor(step, total_steps, config.warmup, config.final_lr)
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * factor
                with autocast(config.bf16):
                    embedding, logits = net.forward_both(x)
                targets = None if teacher is None else teacher[idx]
                loss = combined_loss(embedding, logits, y, weights, targets)
                optimizer.zero_grad(set_to_none=True)
                (loss * len(y)).backward()  # summed over the batch, as the lr scale assumes
                optimizer.step()
                step += 1
                if lookahead and step % LOOKAHEAD_EVERY == 0:
                    lookahead.update(net, decay=0.95**5 * (step / total_steps) ** 3)
                loss_sum += float(loss.detach()) * len(y)
                correct += float((logits.argmax(1) == y).sum())
                seen += len(y)
                bar.update(len(y))
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        if lookahead and epoch == config.epochs:
            lookahead.update(net, decay=1.0)  # end on the averaged weights
        seconds = time.perf_counter() - epoch_start
        entry = {
            "epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen,
            "seconds": round(seconds, 1), "images_per_s": round(seen / seconds, 1),
        }  # fmt: skip
        if len(val_idx):
            entry["val_acc"] = accuracy(net, images[val_idx], labels[val_idx], config)
        history.append(entry)
        if out_dir is not None:
            _append_log(Path(out_dir), entry)
            save_checkpoint(Path(out_dir) / "checkpoints" / f"epoch-{epoch:03d}", net,
                            {**record, "epoch": epoch})  # fmt: skip
        if on_epoch:
            on_epoch(entry)

    metrics: dict[str, float] = {"train_seconds": round(time.perf_counter() - started, 1)}
    if len(val_idx):
        metrics["val_acc"] = history[-1]["val_acc"]
    if test is not None:
        metrics["test_acc"] = accuracy(net, test[0], test[1], config)
        metrics["test_acc_no_tta"] = float(
            (infer(net.forward_both, test[0], bf16=config.bf16)[1].argmax(1) == test[1]).mean()
        )
    seconds = time.perf_counter() - started
    if out_dir is not None:
        _append_log(Path(out_dir), {"final": metrics})
        final = {**record, "epoch": config.epochs, "metrics": metrics,
                 "class_names": class_names or [str(i) for i in range(classes)],
                 "normalisation": {"mean": CIFAR_MEAN, "std": CIFAR_STD}}  # fmt: skip
        save_checkpoint(Path(out_dir), net, final)
    return TrainResult(net=net.eval(), history=history, metrics=metrics, seconds=seconds)


def _teacher_targets(
    images: np.ndarray, classes: int, config: TrainConfig, out_dir: Path | None
) -> torch.Tensor | None:
    """The teacher ensemble's logits per training image (cached in `out_dir`), or None."""
    if not config.distill:
        return None
    from cbir.training.distill import DISTILL_TTA, teacher_folders, teacher_logits

    logits = teacher_logits(
        teacher_folders(config.distill_from), images, classes, tta=DISTILL_TTA,
        cache_dir=None if out_dir is None else Path(out_dir), bf16=config.bf16,
    )  # fmt: skip
    return torch.from_numpy(logits)


def _append_log(folder: Path, entry: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOG_FILE, "a") as handle:
        handle.write(json.dumps(entry) + "\n")
    log.info("%s", entry)
