"""`cbir vocabulary cifar10 --out DIR`: sweep visual-vocabulary sizes on SIFT descriptors of the
training images (Davies-Bouldin + inertia, as the reference chose 400), write
vocabulary_sweep.json into DIR."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_SIZES = "50,100,200,400"


def add_parser(commands) -> None:
    parser = commands.add_parser("vocabulary", help="sweep BoVW vocabulary sizes (Davies-Bouldin)")
    parser.add_argument("dataset", choices=["cifar10"], help="images whose descriptors are used")
    parser.add_argument("--data", type=Path, help="folder holding CIFAR-10 (else CBIR_DATA_DIR)")
    parser.add_argument("--out", required=True, type=Path, help="run folder for the sweep file")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"default {DEFAULT_SIZES}")
    parser.add_argument(
        "--images", type=int, default=2000, help="training images sampled (default 2000)"
    )
    parser.add_argument(
        "--descriptor", choices=["sift", "rootsift"], default="sift",
        help="sift: detected as the reference; rootsift: dense grid (default sift)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from cbir.datasets import load_cifar10
    from cbir.errors import CbirError
    from cbir.evaluation.results import write_vocabulary_sweep
    from cbir.features.local import dense_sift, detected_sift, gray_uint8, grid_positions, root_sift
    from cbir.features.vocabulary import sweep

    sizes = sorted({int(size) for size in args.sizes.split(",") if size.strip()})
    if not sizes or sizes[0] < 2:
        raise CbirError("--sizes needs vocabulary sizes of at least 2, e.g. 100,200,400")
    train = load_cifar10(args.data).train
    rng = np.random.default_rng(args.seed)
    rows = rng.choice(len(train.images), min(args.images, len(train.images)), replace=False)
    gray = gray_uint8(train.images[np.sort(rows)])
    if args.descriptor == "sift":
        descriptors = np.concatenate(detected_sift(gray, 0.02, 0.9, threads=2))
    else:
        dense = root_sift(dense_sift(gray, grid_positions(32, 4, 4), 8.0, upscale=2, threads=2))
        descriptors = dense.reshape(-1, dense.shape[-1])
    print(f"{len(descriptors):,} {args.descriptor} descriptors from {len(rows):,} images")
    results = sweep(descriptors, sizes, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_vocabulary_sweep(args.out, results)
    print(f"{'size':>6}  {'Davies-Bouldin':>14}  {'inertia':>12}")
    for row in results:
        print(f"{row['size']:>6}  {row['davies_bouldin']:>14.4f}  {row['inertia']:>12.4g}")
    print(f"wrote {path}")
    return 0
