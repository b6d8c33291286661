"""The `cbir` command line: a thin layer over the library. Heavy imports happen inside the
commands that need them so that `cbir --help` stays instant."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from cbir import __version__
from cbir.errors import CbirError

log = logging.getLogger("cbir")


def parse_param(text: str) -> tuple[str, Any]:
    """`key=value`, the value read as JSON when it parses (numbers, booleans, lists)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def _extractor_arguments(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--extractor", "-e", default=default,
        help="feature extractor (see `cbir extractors`)" + (f"; default {default}" if default
                                                             else ""),
    )  # fmt: skip
    parser.add_argument(
        "--param", "-p", action="append", type=parse_param, default=[], metavar="KEY=VALUE",
        help="extractor parameter, repeatable (e.g. -p image_size=64)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from cbir.features import DEFAULT_EXTRACTOR

    parser = argparse.ArgumentParser(
        prog="cbir", description="Content-based image retrieval: index images, find look-alikes."
    )
    parser.add_argument("--version", action="version", version=f"cbir {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = commands.add_parser("benchmark", help="measure retrieval quality (TREC metrics)")
    bench_kinds = bench.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    cifar = bench_kinds.add_parser(
        "cifar10", help="50,000 training images indexed, the 10,000 test images as queries"
    )
    _extractor_arguments(cifar, DEFAULT_EXTRACTOR)
    cifar.add_argument("--out", required=True, type=Path, help="folder for run.txt, metrics.json")
    cifar.add_argument("--data", type=Path, help="folder holding CIFAR-10 (else CBIR_DATA_DIR)")
    cifar.add_argument("--depth", type=int, default=100, help="results per query (default 100)")
    cifar.add_argument(
        "--no-map-all", action="store_true", help="skip map_all (full ranking of every query)"
    )
    cifar.set_defaults(handler=cmd_benchmark_cifar10)

    index = commands.add_parser("index", help="add the images of a folder to a collection")
    index.add_argument("folder", type=Path, help="folder of images (class subfolders = labels)")
    index.add_argument("--collection", "-c", required=True, type=Path, help="collection folder")
    _extractor_arguments(index, None)
    index.add_argument("--batch-size", type=int, default=1024, help="images per commit")
    index.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    index.set_defaults(handler=cmd_index)

    search = commands.add_parser("search", help="find the indexed images that look like IMAGE")
    search.add_argument("image", type=Path, help="query image file")
    search.add_argument("--collection", "-c", required=True, type=Path, help="collection folder")
    search.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    search.set_defaults(handler=cmd_search)

    extractors = commands.add_parser("extractors", help="list the available extractors")
    extractors.set_defaults(handler=cmd_extractors)
    return parser


# --- commands -------------------------------------------------------------------------------


def cmd_benchmark_cifar10(args: argparse.Namespace) -> int:
    from cbir.evaluation.benchmark import run_cifar10_benchmark

    if args.depth < 1:
        raise CbirError("--depth must be at least 1")
    metrics = run_cifar10_benchmark(
        args.extractor, args.out, data_dir=args.data, depth=args.depth,
        extractor_params=dict(args.param), with_map_all=not args.no_map_all,
    )  # fmt: skip
    print(format_metrics_table(metrics))
    print(f"wrote {args.out}/run.txt, per_query.tsv, metrics.json")
    return 0


def format_metrics_table(metrics: dict[str, Any]) -> str:
    depth = metrics["depth"]
    ceiling = depth / 5000 if metrics["n_index"] == 50_000 else None
    lines = [
        f"{metrics['dataset']} | extractor {metrics['extractor']['name']} | "
        f"{metrics['n_queries']:,} queries x {metrics['n_index']:,} images",
        f"{'metric':<24}{'value':>10}",
    ]
    cut = f"map_cut_{depth}"
    note = f"   (ceiling {ceiling:.4f})" if ceiling else ""
    lines.append(f"{cut:<24}{metrics[cut]:>10.6f}{note}")
    lines.append(f"{f'map_at_{depth}_normalised':<24}{metrics[f'map_at_{depth}_normalised']:>10.4f}"
                 "   (ceiling 1.0)")
    for name in ("P_10", f"P_{depth}", "ndcg_cut_10", "recip_rank", "map_all"):
        if name in metrics and name != cut:
            lines.append(f"{name:<24}{metrics[name]:>10.4f}")
    timings = ", ".join(f"{k} {v:.1f}" for k, v in metrics["timings"].items())
    lines.append(f"timings (s): {timings}")
    return "\n".join(dict.fromkeys(lines))  # P_10 == P_depth when depth is 10


def cmd_index(args: argparse.Namespace) -> int:
    from cbir.collection import MANIFEST, Collection
    from cbir.features import DEFAULT_EXTRACTOR, get_extractor
    from cbir.pipeline import index_folder

    if (args.collection / MANIFEST).exists():
        collection = Collection.open(args.collection)
        wanted = args.extractor
        have = collection.manifest["extractor"]["name"]
        if wanted and wanted != have:
            raise CbirError(
                f"{args.collection} was built with extractor {have!r}, not {wanted!r}; "
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
        report = index_folder(
            args.folder, collection, batch_size=args.batch_size, strict=args.strict
        )
        total = len(collection)
    print(
        f"added {report.added:,}, already indexed {report.skipped_known:,}, "
        f"unreadable {len(report.failed):,}; the collection holds {total:,} images"
    )
    for path, why in report.failed[:10]:
        print(f"  skipped {why}", file=sys.stderr)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from cbir.collection import Collection
    from cbir.images import read_image_file

    if args.k < 1:
        raise CbirError("-k must be at least 1")
    with Collection.open(args.collection) as collection:
        size = collection.extractor.input_size
        image = read_image_file(args.image, size=size)
        hits = collection.search_images(image[None], k=args.k)[0]
    if args.json:
        print(json.dumps({"results": [hit.as_dict() for hit in hits]}, indent=2))
    else:
        for rank, hit in enumerate(hits, start=1):
            print(f"{rank:>4}  {hit.score:8.4f}  {hit.label or '-':<16} {hit.id}")
    return 0


def cmd_extractors(args: argparse.Namespace) -> int:
    from cbir.features import available, get_extractor

    for name in available():
        extractor = get_extractor(name)
        fit = "needs fit" if extractor.needs_fit else "no fit"
        print(f"{name:<16} {fit:<10} {json.dumps(extractor.params, sort_keys=True)}")
    return 0


# --- entry point ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from cbir.progress import set_quiet

    set_quiet(args.quiet)
    try:
        return args.handler(args)
    except CbirError as error:
        print(f"cbir: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cbir: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
