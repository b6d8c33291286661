"""`cbir search IMAGE --collection DIR`: the indexed images that look like IMAGE."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cbir.commands import add_backend_arguments
from cbir.errors import CbirError


def add_parser(commands) -> None:
    search = commands.add_parser("search", help="find the indexed images that look like IMAGE")
    search.add_argument("image", type=Path, help="query image file")
    search.add_argument("--collection", "-c", required=True, type=Path, help="collection folder")
    search.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_backend_arguments(search, choose=False)
    search.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cbir.collection import Collection
    from cbir.images import read_image_file

    if args.k < 1:
        raise CbirError("-k must be at least 1")
    with Collection.open(
        args.collection, read_only=True, backend_options=dict(args.backend_option)
    ) as collection:  # read-only: never waits on a writer
        image = read_image_file(args.image, size=collection.extractor.input_size)
        hits = collection.search_images(image[None], k=args.k)[0]
    if args.json:
        print(json.dumps({"results": [hit.as_dict() for hit in hits]}, indent=2))
    else:
        for rank, hit in enumerate(hits, start=1):
            print(f"{rank:>4}  {hit.score:8.4f}  {hit.label or '-':<16} {hit.id}")
    return 0
