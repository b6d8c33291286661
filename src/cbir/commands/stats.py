"""`cbir stats --collection DIR [--json]`: what a collection holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(commands) -> None:
    stats = commands.add_parser("stats", help="count a collection's images, by label")
    stats.add_argument("--collection", "-c", required=True, type=Path, help="collection folder")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cbir.collection import Collection

    with Collection.open(args.collection, read_only=True) as collection:
        stats = collection.stats()
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    extractor = stats["extractor"]
    print(f"{args.collection}: {stats['count']:,} images ({stats['stored_images']:,} stored)")
    print(f"  extractor {extractor['name']} {json.dumps(extractor['params'], sort_keys=True)}")
    print(f"  {stats['dim']}-d {stats['metric']} vectors, {stats['backend']} index")
    print(f"  generation {stats['generation']}, created {stats['created']}")
    for label, count in stats["labels"].items():
        print(f"  {count:>10,}  {label}")
    return 0
