"""`cbir index FOLDER --collection DIR`: add a folder's images to a collection."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cbir.commands import add_backend_arguments, add_extractor_arguments, add_wait_argument
from cbir.commands.ray_options import add_ray_argument, describer_from_args
from cbir.errors import CbirError, DataNotFoundError

BULK_LOAD_ROWS = 1_000  # rows added in one run before a server backend is compacted


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
    add_backend_arguments(index, choose=True)
    index.add_argument(
        "--fit-on", metavar="DIR",
        help="for an extractor that learns (bovw, cnn with pca): fit it on this labelled "
        "folder (or cifar10[:train|:test]) when the collection is created; default: on the "
        "labelled images being indexed",
    )  # fmt: skip
    index.add_argument(
        "--batch-size", type=int, default=1024,
        help="images per commit, at most (photos at a large input size commit fewer, so that "
        "one batch decodes while the one before it is described)",
    )  # fmt: skip
    index.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    add_wait_argument(index)
    add_ray_argument(index)
    index.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cbir.collection import Collection
    from cbir.features import DEFAULT_EXTRACTOR, get_extractor
    from cbir.fitting import fit_extractor, load_fit_images
    from cbir.index import check_settings
    from cbir.pipeline import index_dataset, index_folder, settle_input_size

    if args.batch_size < 1:
        raise CbirError("--batch-size must be at least 1")
    # Everything a user can get wrong is checked before the collection folder is touched.
    exists = (Path(args.collection) / "manifest.json").exists()
    # without --extractor, an existing collection goes on with its own
    name = args.extractor or (None if exists else DEFAULT_EXTRACTOR)
    requested = get_extractor(name, **dict(args.param)) if name else None
    is_cifar = args.folder.split(":")[0] == "cifar10"
    if is_cifar:
        source = cifar10_split(args.folder, args.data)
    elif not Path(args.folder).is_dir():
        raise DataNotFoundError(f"{args.folder} is not a folder of images")

    describer = describer_from_args(args)  # a missing Ray fails before the collection is touched
    if not exists:  # checked before any fitting
        check_settings(args.backend, dict(args.backend_option))

    def new_extractor():
        """The extractor of a new collection: fitted first when it learns."""
        extractor = requested or get_extractor(DEFAULT_EXTRACTOR, **dict(args.param))
        if is_cifar:  # an auto image size is CIFAR-10's own 32x32, as in the benchmark
            settle_input_size(extractor, source.images)
        if not extractor.needs_fit:
            return extractor
        if args.fit_on:
            data, fitted_on = load_fit_images(args.fit_on, extractor, args.data)
        elif is_cifar:
            data, fitted_on = source, args.folder
        else:
            data, fitted_on = load_fit_images(args.folder, extractor)
        return fit_extractor(extractor, data, fitted_on)

    with Collection.open_or_create(
        args.collection, new_extractor, backend=args.backend, lock_timeout=args.wait,
        backend_settings=dict(args.backend_option),
    ) as collection:  # fmt: skip
        check_same_extractor(collection, args.extractor, dict(args.param))
        knobs = collection.extractor.get_knobs()  # `-p batch_size=` etc.: for this run
        collection.extractor.set_knobs(**{k: v for k, v in args.param if k in knobs})
        check_same_backend(collection, args.backend)
        fitted = collection.manifest.get("fitted")
        if args.fit_on and fitted:
            print(f"{args.collection} is fitted already ({fitted}); --fit-on is not used",
                  file=sys.stderr)  # fmt: skip
        if is_cifar:
            report = index_dataset(
                source, collection, batch_size=args.batch_size, describer=describer
            )
        else:
            report = index_folder(
                Path(args.folder), collection, batch_size=args.batch_size, strict=args.strict,
                describer=describer,
            )  # fmt: skip
        total = len(collection)
        if collection.keeps_vectors_on_server and is_bulk_load(report.added, total):
            print("compacting the server's index (new rows sealed and indexed)", file=sys.stderr)
            collection.compact_server_index()
    updated = f", updated {report.updated:,}" if report.updated else ""
    print(
        f"added {report.added:,}, already indexed {report.skipped_known:,}{updated}, "
        f"unreadable {len(report.failed):,}; the collection holds {total:,} images"
    )
    for _, why in report.failed[:10]:
        print(f"  skipped {why}", file=sys.stderr)
    return 0


def is_bulk_load(added: int, total: int) -> bool:
    """A run that added enough to leave a server backend's new rows unindexed (Milvus searches
    its growing segments by brute force: 30-50 ms a query at 50,000 rows, 13 ms once sealed
    and indexed; HNSW recall@100 0.983 until then) or spread over many segments
    (Elasticsearch): worth a compaction. Small additions are left to the server's own merging,
    which a forced merge of a large index after each one would only repeat."""
    return added >= BULK_LOAD_ROWS and added * 10 >= total


def check_same_extractor(collection, name: str | None, params: dict) -> None:
    """A collection is extended only with the extractor (and parameters) it was built with:
    vectors of another kind would be silently meaningless next to its own."""
    from cbir.features import get_extractor
    from cbir.features.presets import resolve

    have = collection.manifest["extractor"]
    if name:
        name, params = resolve(name, params)
    if name and name != have["name"]:
        raise CbirError(
            f"{collection.folder} was built with extractor {have['name']!r}, not {name!r}; "
            "use a new --collection folder for another extractor"
        )
    if params:
        # Only what was asked is compared: fitting may have set others (bovw's classes).
        # Runtime knobs (batch_size, threads) are not compared: they never change the vectors.
        # `built`: the collection's own extractor, already checked against its manifest and
        # read as today's parameters (an earlier manifest's form and image size included)
        wanted = get_extractor(have["name"], **params).get_params()
        built = collection.extractor.get_params()
        differ = {key: wanted[key] for key in params if key in wanted
                  and wanted[key] != built.get(key)}  # fmt: skip
        if differ:
            built = {key: built.get(key) for key in differ}
            raise CbirError(
                f"{collection.folder} was built with {have['name']} "
                f"{json.dumps(built, sort_keys=True)}, not {json.dumps(differ, sort_keys=True)}; "
                "use a new --collection folder for other parameters"
            )


def check_same_backend(collection, name: str) -> None:
    have = collection.manifest["backend"]["name"]
    if name != "embedded" and name != have:
        raise CbirError(
            f"{collection.folder} keeps its vectors in backend {have!r}, not {name!r}; "
            "use a new --collection folder for another backend"
        )


def cifar10_split(spec: str, data_dir: Path | None):
    from cbir.datasets import load_cifar10

    split = spec.partition(":")[2] or "train"
    if split not in ("train", "test"):
        raise CbirError(f"unknown CIFAR-10 split {split!r}; use cifar10:train or cifar10:test")
    return getattr(load_cifar10(data_dir), split)
