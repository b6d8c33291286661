"""`cbir benchmark cifar10`: retrieval quality on CIFAR-10 as trec_eval would score it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from cbir.commands import add_extractor_arguments
from cbir.errors import CbirError
from cbir.features import DEFAULT_EXTRACTOR


def add_parser(commands) -> None:
    bench = commands.add_parser("benchmark", help="measure retrieval quality (TREC metrics)")
    kinds = bench.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    cifar = kinds.add_parser(
        "cifar10", help="50,000 training images indexed, the 10,000 test images as queries"
    )
    add_extractor_arguments(cifar, DEFAULT_EXTRACTOR)
    cifar.add_argument("--out", required=True, type=Path, help="folder for run.txt, metrics.json")
    cifar.add_argument("--data", type=Path, help="folder holding CIFAR-10 (else CBIR_DATA_DIR)")
    cifar.add_argument("--depth", type=int, default=100, help="results per query (default 100)")
    cifar.add_argument(
        "--no-download", action="store_true",
        help="never download the official tarball (also CBIR_OFFLINE=1)",
    )  # fmt: skip
    cifar.add_argument(
        "--no-map-all", action="store_true", help="skip map_all (full ranking of every query)"
    )
    cifar.set_defaults(handler=run_cifar10)


def run_cifar10(args: argparse.Namespace) -> int:
    from cbir.evaluation.benchmark import run_cifar10_benchmark

    if args.depth < 1:
        raise CbirError("--depth must be at least 1")
    metrics = run_cifar10_benchmark(
        args.extractor, args.out, data_dir=args.data, depth=args.depth,
        extractor_params=dict(args.param), with_map_all=not args.no_map_all,
        download=not (args.no_download or os.environ.get("CBIR_OFFLINE") == "1"),
    )  # fmt: skip
    print(format_metrics_table(metrics))
    print(f"wrote {args.out}/run.txt, per_query.tsv, metrics.json")
    return 0


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """The headline figures, with map_cut_k next to its ceiling k / R."""
    depth = metrics["depth"]
    cut, normalised = f"map_cut_{depth}", f"map_at_{depth}_normalised"
    ceiling = metrics.get("map_cut_ceiling")
    lines = [
        f"{metrics['dataset']} | extractor {metrics['extractor']['name']} | "
        f"{metrics['n_queries']:,} queries x {metrics['n_index']:,} images",
        f"{'metric':<24}{'value':>10}",
        f"{cut:<24}{metrics[cut]:>10.6f}" + (f"   (ceiling {ceiling:.4f})" if ceiling else ""),
        f"{normalised:<24}{metrics[normalised]:>10.4f}   (ceiling 1.0)",
    ]
    for name in dict.fromkeys(("P_10", f"P_{depth}", "ndcg_cut_10", "recip_rank", "map_all")):
        if name in metrics:
            lines.append(f"{name:<24}{metrics[name]:>10.4f}")
    timings = ", ".join(f"{k} {v:.1f}" for k, v in metrics["timings"].items())
    lines.append(f"timings (s): {timings}")
    return "\n".join(lines)
