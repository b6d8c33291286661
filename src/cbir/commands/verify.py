"""`cbir verify --collection DIR`: exit 0 only when the collection's parts agree."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(commands) -> None:
    verify = commands.add_parser(
        "verify", help="check that a collection's manifest, metadata and vectors agree"
    )
    verify.add_argument("--collection", "-c", required=True, type=Path, help="collection folder")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--repair", action="store_true",
        help="first bring a server backend (Elasticsearch, Milvus) back in step with the "
        "collection's database, as the next writer would",
    )  # fmt: skip
    verify.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Exit 0: consistent; 1: damaged (the report says how); 2: no collection there."""
    from cbir.integrity import verify_collection

    if args.repair:
        _repair(args.collection)
    report = verify_collection(args.collection)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        verdict = "OK" if report.ok else f"DAMAGED ({len(report.problems)} problems)"
        print(f"{args.collection}: {verdict}")
        if report.counts:
            print("  " + ", ".join(f"{key} {value:,}" for key, value in report.counts.items()))
        for problem in report.problems:
            print(f"  problem: {problem}")
        for note in report.notes:
            print(f"  note: {note}")
    return 0 if report.ok else 1


def _repair(folder: Path) -> None:
    from cbir.collection import Collection

    with Collection.open(folder) as collection:
        if not collection.keeps_vectors_on_server:
            print(f"{folder}: nothing to repair (its vectors live in the collection itself)")
            return
        done = collection.sync_server_index()
        print(f"{folder}: sent {done.sent:,} vectors to the server, removed {done.removed:,}")
