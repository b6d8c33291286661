"""`cbir train`: train a CNN from scratch on CIFAR-10's training set (or a labelled folder of
images) and save it as safetensors + JSON, with a per-epoch log and checkpoints."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

from cbir.errors import CbirError

# Flags generated from TrainConfig: one place declares every training parameter.
_HELP = {
    "arch": "network: airbench (default), lenet, mlp",
    "epochs": "passes over the training images",
    "batch_size": "images per step",
    "lr": "learning rate per 1024 images (loss summed over the batch)",
    "weight_decay": "weight decay per 1024 images",
    "label_smoothing": "cross-entropy label smoothing",
    "cross_entropy": "weight of the cross-entropy loss (0 = off)",
    "supcon": "weight of the supervised contrastive loss (0 = off)",
    "triplet": "weight of the batch-hard triplet loss (0 = off)",
    "translate": "pixels of random translation",
    "cutout": "side in pixels of a random square blanked in each training image (0 = off)",
    "distill": "weight of the distillation loss from the --distill-from teachers (0 = off)",
    "distill_from": "comma-separated teacher checkpoint folders (from `cbir train`)",
    "distill_temperature": "softmax temperature of the distillation loss",
    "tta": "test-time augmentation for reported accuracy: 0 none, 1 flip, 2 flip+translate",
    "val_split": "fraction of the training images held out for validation",
    "threads": "torch intra-op threads",
}


def add_parser(commands) -> None:
    from cbir.training.train_config import TrainConfig

    parser = commands.add_parser("train", help="train a CNN for the `cnn` extractor")
    parser.add_argument(
        "dataset", help="`cifar10` (its 50,000 training images) or a folder with class subfolders"
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the model and log")
    parser.add_argument("--data", type=Path, help="folder holding CIFAR-10 (else CBIR_DATA_DIR)")
    parser.add_argument(
        "--limit", type=int, help="train on a seeded random N images only (smoke tests)"
    )
    parser.add_argument(
        "--arch-option", action="append", default=[], metavar="KEY=VALUE",
        help="network builder option, repeatable (e.g. widths=[32,64,64])",
    )  # fmt: skip
    parser.add_argument(
        "--no-test", action="store_true", help="do not score CIFAR-10's test set at the end"
    )
    for item in fields(TrainConfig):
        if item.name == "arch_options":
            continue
        flag = "--" + item.name.replace("_", "-")
        default = item.default
        if isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default,
                help=f"{_HELP.get(item.name, item.name.replace('_', ' '))} (default {default})",
            )  # fmt: skip
        else:
            parser.add_argument(
                flag, type=type(default), default=default,
                help=f"{_HELP.get(item.name, item.name.replace('_', ' '))} (default {default})",
            )  # fmt: skip
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cbir.commands import parse_param
    from cbir.training.train import subsample, train
    from cbir.training.train_config import TrainConfig

    values = {
        f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "arch_options"
    }
    options = dict(parse_param(text) for text in args.arch_option)
    config = TrainConfig(**values, arch_options=options)
    train_set, test_set, source = _load(args)
    images, labels, class_names = train_set
    chosen = subsample(len(images), args.limit, config.seed)
    images, labels = images[chosen], labels[chosen]
    print(
        f"training {config.arch} on {len(images):,} images from {source} "
        f"({config.epochs} epochs, batch {config.batch_size})", file=sys.stderr,
    )  # fmt: skip
    result = train(
        images, labels, config, out_dir=args.out, class_names=class_names,
        test=None if args.no_test else test_set,
        on_epoch=lambda entry: print(json.dumps(entry), file=sys.stderr, flush=True),
    )  # fmt: skip
    print(json.dumps({"metrics": result.metrics, "seconds": round(result.seconds, 1)}))
    print(f"wrote {args.out}/model.safetensors, config.json, train_log.jsonl")
    return 0


def _load(args: argparse.Namespace):
    """((images, labels, class names), test (images, labels) or None, source description)."""
    if args.dataset == "cifar10":
        from cbir.datasets import load_cifar10
        from cbir.evaluation.quality_run import dataset_label

        download = os.environ.get("CBIR_OFFLINE") != "1"
        data = load_cifar10(args.data, download=download)
        test = (data.test.images, data.test.labels)
        train = (data.train.images, data.train.labels, list(data.train.class_names))
        return train, test, dataset_label(data.source)
    from cbir.datasets import load_folder

    folder = load_folder(args.dataset, size=(32, 32))
    if not folder.labelled:
        raise CbirError(f"{args.dataset}: training needs one subfolder per class")
    return (folder.images, folder.labels, folder.class_names), None, str(args.dataset)
