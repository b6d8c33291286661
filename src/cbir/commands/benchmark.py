"""`cbir benchmark cifar10 | folder`: retrieval quality as trec_eval would score it."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cbir.commands import add_backend_arguments, add_extractor_arguments
from cbir.errors import CbirError

if TYPE_CHECKING:  # imported by the handlers only: `cbir --help` stays instant
    from cbir.evaluation.quality_run import BenchmarkOptions

# CIFAR-10's own default: the best committed setting (a preset of `cnn`, trained on CIFAR-10's
# training images); the default of `cbir index` is made for photos, not for 32x32 images.
CIFAR10_DEFAULT_EXTRACTOR = "cnn-committee"


def add_parser(commands) -> None:
    bench = commands.add_parser("benchmark", help="measure retrieval quality (TREC metrics)")
    kinds = bench.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    cifar = kinds.add_parser(
        "cifar10", help="50,000 training images indexed, the 10,000 test images as queries"
    )
    add_extractor_arguments(cifar, CIFAR10_DEFAULT_EXTRACTOR)
    cifar.add_argument("--data", type=Path, help="folder holding CIFAR-10 (else CBIR_DATA_DIR)")
    cifar.add_argument(
        "--no-download", action="store_true",
        help="never download the official tarball (also CBIR_OFFLINE=1)",
    )  # fmt: skip
    _add_common_arguments(cifar)
    cifar.set_defaults(handler=run_cifar10)

    folder = kinds.add_parser(
        "folder",
        help="a labelled folder (one subfolder per class), each image a query against the rest",
    )
    folder.add_argument("path", type=Path, help="folder with one subfolder of images per class")
    add_extractor_arguments(folder, None)
    folder.add_argument(
        "--queries", type=Path, metavar="DIR",
        help="a labelled folder of queries searched against PATH (default: leave-one-out, "
        "every image of PATH a query against the others)",
    )  # fmt: skip
    folder.add_argument(
        "--extractor-from", type=Path, metavar="COLLECTION",
        help="use the (fitted) extractor saved in this collection instead of --extractor",
    )  # fmt: skip
    folder.add_argument(
        "--fit-on", type=Path, metavar="DIR",
        help="fit an extractor that learns on this labelled folder (default: on PATH; "
        "leave-one-out cross-fits one that learns from labels)",
    )  # fmt: skip
    folder.add_argument(
        "--folds", type=int, metavar="K",
        help="cross-fitting folds for an extractor that learns from labels (default 5): "
        "each query is described by a model fitted without its fold",
    )  # fmt: skip
    _add_common_arguments(folder)
    folder.set_defaults(handler=run_folder)


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    from cbir.evaluation.near_duplicates import DEFAULT_THRESHOLD

    parser.add_argument("--out", required=True, type=Path, help="folder for the run's files")
    parser.add_argument("--depth", type=int, default=100, help="results per query (default 100)")
    parser.add_argument(
        "--no-map-all", action="store_true",
        help="skip map_all and the precision-recall curve (full ranking of every query)",
    )  # fmt: skip
    parser.add_argument(
        "--near-duplicate-threshold", type=float, default=DEFAULT_THRESHOLD, metavar="COSINE",
        help=f"flag queries this close to an index image (default {DEFAULT_THRESHOLD}); "
        "a value above 1 skips the check",
    )  # fmt: skip
    parser.add_argument(
        "--examples", type=int, default=10, metavar="N",
        help="example queries saved with thumbnails for the report (default 10; 0: none)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the example sample")
    parser.add_argument(
        "--collection", "-c", type=Path, metavar="DIR",
        help="keep the collection the benchmark builds in this new folder (one per fold "
        "when cross-fitting); `cbir search` and `cbir serve` open it (default: temporary)",
    )  # fmt: skip
    add_backend_arguments(parser, choose=True)


def _options(args: argparse.Namespace) -> BenchmarkOptions:
    """The common options as the library's BenchmarkOptions, checked with the flags' names."""
    from cbir.evaluation.quality_run import BenchmarkOptions

    if args.depth < 1:
        raise CbirError("--depth must be at least 1")
    if args.examples < 0:
        raise CbirError("--examples must be 0 or more")
    if args.near_duplicate_threshold < -1:
        raise CbirError("--near-duplicate-threshold is a cosine: -1 or more")
    threshold = args.near_duplicate_threshold
    return BenchmarkOptions(
        depth=args.depth,
        with_map_all=not args.no_map_all,
        near_duplicate_threshold=threshold if threshold <= 1 else None,
        n_examples=args.examples,
        seed=args.seed,
        collection_dir=args.collection,
        # the exact embedded index always runs: it is the yardstick for any other backend
        backend=None if args.backend == "embedded" else (args.backend, dict(args.backend_option)),
    )


def run_cifar10(args: argparse.Namespace) -> int:
    from cbir.evaluation.quality_run import run_cifar10_benchmark

    metrics = run_cifar10_benchmark(
        args.extractor, args.out, data_dir=args.data, extractor_params=dict(args.param),
        download=not (args.no_download or os.environ.get("CBIR_OFFLINE") == "1"),
        options=_options(args),
    )  # fmt: skip
    return _report(metrics, args.out)


def run_folder(args: argparse.Namespace) -> int:
    from cbir.evaluation.quality_run import run_folder_benchmark

    if args.folds is not None and args.folds < 2:
        raise CbirError("--folds must be at least 2")
    options = _options(args)
    if args.folds is not None:  # else the library's default
        options = replace(options, folds=args.folds)
    metrics = run_folder_benchmark(
        args.path, args.out, extractor_name=args.extractor, extractor_params=dict(args.param),
        extractor_from=args.extractor_from, options=options, queries_folder=args.queries,
        fit_on=args.fit_on,
    )  # fmt: skip
    return _report(metrics, args.out)


def _report(metrics: dict[str, Any], out: Path) -> int:
    print(format_metrics_table(metrics))
    print(f"wrote {out}/run.txt, per_query.tsv, metrics.json" + _extras(metrics))
    return 0


def _extras(metrics: dict[str, Any]) -> str:
    extras = []
    if "near_duplicates" in metrics:
        extras.append("near_duplicates.tsv")
    if metrics.get("n_examples"):
        extras.append("examples/")
    return ", " + ", ".join(extras) if extras else ""


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """The headline figures, with map_cut_k next to its ceiling k / R, and the same figures
    without near-duplicate queries when that check ran."""
    depth = metrics["depth"]
    cut, normalised = f"map_cut_{depth}", f"map_at_{depth}_normalised"
    names = list(dict.fromkeys(("P_10", f"P_{depth}", "ndcg_cut_10", "recip_rank", "map_all")))
    without = metrics.get("without_near_duplicates")
    near = metrics.get("near_duplicates")

    def row(name: str, digits: int, suffix: str = "") -> str:
        line = f"{name:<24}{metrics[name]:>10.{digits}f}"
        if without is not None:
            line += f"{without[name]:>14.{digits}f}"
        return line + suffix

    header = f"{'metric':<24}{'value':>10}" + (f"{'w/o near-dup':>14}" if without else "")
    ceiling = metrics.get("map_cut_ceiling")
    fit = metrics.get("extractor_fit", "not needed")
    lines = [
        f"{metrics['dataset']} | extractor {metrics['extractor']['name']} | "
        f"{metrics['n_queries']:,} queries x {metrics['n_index']:,} images"
        + (f" | {metrics['protocol']}" if metrics.get("protocol") == "leave-one-out" else ""),
        *([f"extractor fit: {fit}"] if fit != "not needed" else []),
        header,
        row(cut, 6, f"   (ceiling {ceiling:.4f})" if ceiling else ""),
        row(normalised, 4, "   (ceiling 1.0)"),
    ]
    lines += [row(name, 4) for name in names if name in metrics]
    if metrics.get("n_queries_without_relevant"):
        lines.append(
            f"queries with no other image of their class (R = 0), left out of the means as "
            f"trec_eval does: {metrics['n_queries_without_relevant']:,}"
        )
    if near is not None:
        lines.append(
            f"near-duplicate queries: {near['count']:,} (cosine >= {near['threshold']}); "
            f"see near_duplicates.tsv"
        )
    backend = metrics.get("backend")
    if backend is not None:
        lines.append(
            f"backend {backend['name']}: recall@{depth} of the exact top {depth} "
            f"{backend[f'recall_at_{depth}_vs_exact']:.6f}, rankings identical "
            f"{backend['identical_rankings']:.1%}; {cut} {metrics[cut]:.6f} against the "
            f"embedded index's {backend['embedded'][cut]:.6f}"
        )
    timings = ", ".join(f"{k} {v:.1f}" for k, v in metrics["timings"].items())
    lines.append(f"timings (s): {timings}")
    return "\n".join(lines)
