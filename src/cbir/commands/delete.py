"""`cbir delete --collection DIR ID...`: remove images from a collection for good."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cbir.commands import add_wait_argument


def add_parser(commands) -> None:
    delete = commands.add_parser("delete", help="remove images from a collection by id")
    delete.add_argument("ids", nargs="+", metavar="ID", help="image ids (as `cbir search` shows)")
    delete.add_argument("--collection", "-c", required=True, type=Path, help="collection folder")
    add_wait_argument(delete)
    delete.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cbir.collection import Collection

    with Collection.open(args.collection, writer=True, lock_timeout=args.wait) as collection:
        known = collection.known_ids()
        missing = [image_id for image_id in args.ids if image_id not in known]
        removed = collection.delete(args.ids)
        total = len(collection)
    print(f"deleted {removed:,}; the collection holds {total:,} images")
    if missing:
        shown = ", ".join(repr(i) for i in missing[:10])
        print(f"  not in the collection: {shown}", file=sys.stderr)
    return 0
