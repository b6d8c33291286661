"""`cbir tune`: hyperparameter search for `cbir train` with Ray Tune + ASHA (optional extra)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from cbir.commands import parse_param
from cbir.errors import CbirError


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "tune", help="search training hyperparameters (Ray Tune + ASHA; pip install 'cbir[tune]')"
    )
    parser.add_argument("dataset", choices=["cifar10"], help="tunes on CIFAR-10's training set")
    parser.add_argument(
        "--space", action="append", type=parse_param, default=[], metavar="KEY=[V1,V2]",
        help="a training parameter and the values to try, repeatable (e.g. lr=[8,11.5])",
    )  # fmt: skip
    parser.add_argument(
        "--set", action="append", type=parse_param, default=[], metavar="KEY=VALUE",
        help="a fixed training parameter, repeatable (e.g. epochs=6)",
    )  # fmt: skip
    parser.add_argument("--val-split", type=float, default=0.1, help="validation fraction")
    parser.add_argument("--samples", type=int, default=1, help="repeats of every grid point")
    parser.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a stop")
    parser.add_argument("--concurrent", type=int, default=2, help="trials at once (cores)")
    parser.add_argument("--limit", type=int, help="tune on a seeded random N training images")
    parser.add_argument("--data", type=Path, help="folder holding CIFAR-10 (else CBIR_DATA_DIR)")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cbir.datasets import load_cifar10
    from cbir.training.train import subsample
    from cbir.training.train_config import TrainConfig
    from cbir.training.tune import search

    space = dict(args.space)
    if not space:
        raise CbirError("give at least one --space KEY=[V1,V2]")
    for key, values in space.items():
        if not isinstance(values, list) or not values:
            raise CbirError(f"--space {key}= needs a JSON list of values, e.g. {key}=[1,2]")
    base = TrainConfig(**{**dict(args.set), "val_split": args.val_split})
    data = load_cifar10(args.data, download=os.environ.get("CBIR_OFFLINE") != "1")
    images, labels = data.train.images, data.train.labels
    chosen = subsample(len(images), args.limit, base.seed)
    images, labels = images[chosen], labels[chosen]
    result = search(
        images, labels, space, base, num_samples=args.samples,
        grace_period=args.grace_period, concurrent=args.concurrent,
    )  # fmt: skip
    text = json.dumps(result, indent=2)
    if args.out:
        from cbir.storage import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0
