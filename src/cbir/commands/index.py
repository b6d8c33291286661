"""`cbir index FOLDER --collection DIR`: add a folder's images to a collection."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cbir.commands import add_extractor_arguments
from cbir.errors import CbirError


def add_parser(commands) -> None:
    index = commands.add_parser("index", help="add the images of a folder to a collection")
    index.add_argument(
        "folder",
        help="folder of images (class subfolders = labels), or cifar10[:train|:test] for a "
        "CIFAR-10 split (default train) found through --data / CBIR_DATA_DIR",
    )
    index.add_argument("--data", type=Path, help="folder holding CIFAR-10 (else CBIR_DATA_DIR)")
    index.add_argument("--collection", "-c", required=True, type=Path, help="collection folder")
    add_extractor_arguments(index, None)
    index.add_argument("--batch-size", type=int, default=1024, help="images per commit")
    index.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    index.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cbir.collection import MANIFEST, Collection
    from cbir.features import DEFAULT_EXTRACTOR, get_extractor
    from cbir.pipeline import index_dataset, index_folder

    if args.batch_size < 1:
        raise CbirError("--batch-size must be at least 1")
    if (args.collection / MANIFEST).exists():
        collection = Collection.open(args.collection)
        have = collection.manifest["extractor"]["name"]
        if args.extractor and args.extractor != have:
            collection.close()
            raise CbirError(
                f"{args.collection} was built with extractor {have!r}, not {args.extractor!r}; "
                "use a new --collection folder for another extractor"
            )
    else:
        extractor = get_extractor(args.extractor or DEFAULT_EXTRACTOR, **dict(args.param))
        if extractor.needs_fit:
            raise CbirError(
                f"extractor {extractor.name!r} must be fitted first; fit it with its own command"
            )
        collection = Collection.create(args.collection, extractor)
    with collection:
        if args.folder.split(":")[0] == "cifar10":
            report = index_dataset(cifar10_split(args.folder, args.data), collection,
                                   batch_size=args.batch_size)  # fmt: skip
        else:
            report = index_folder(
                Path(args.folder), collection, batch_size=args.batch_size, strict=args.strict
            )
        total = len(collection)
    print(
        f"added {report.added:,}, already indexed {report.skipped_known:,}, "
        f"unreadable {len(report.failed):,}; the collection holds {total:,} images"
    )
    for _, why in report.failed[:10]:
        print(f"  skipped {why}", file=sys.stderr)
    return 0


def cifar10_split(spec: str, data_dir: Path | None):
    from cbir.datasets import load_cifar10

    split = spec.partition(":")[2] or "train"
    if split not in ("train", "test"):
        raise CbirError(f"unknown CIFAR-10 split {split!r}; use cifar10:train or cifar10:test")
    return getattr(load_cifar10(data_dir), split)
