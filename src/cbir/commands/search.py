"""`cbir search IMAGE --collection DIR`: the indexed images that look like IMAGE."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cbir.commands import add_backend_arguments
from cbir.errors import CbirError


def add_parser(commands) -> None:
    search = commands.add_parser("search", help="find the indexed images that look like IMAGE")
    search.add_argument("image", type=Path, nargs="?", help="query image file")
    search.add_argument("--collection", "-c", required=True, type=Path, help="collection folder")
    search.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    batch = search.add_argument_group("many queries at once: a TREC run")
    batch.add_argument(
        "--batch", type=Path, metavar="QUERY_DIR",
        help="search with every image of this folder (class subfolders are labels) and "
        "write the rankings as a TREC run to --run",
    )  # fmt: skip
    batch.add_argument("--run", type=Path, metavar="FILE", help="the TREC run file to write")
    batch.add_argument("--depth", type=int, default=100, help="results per query (default 100)")
    batch.add_argument(
        "--qrels", type=Path, metavar="FILE",
        help="also write qrels: an indexed image is relevant to a query of the same label",
    )  # fmt: skip
    batch.add_argument(
        "--exclude-self", action="store_true",
        help="a query never retrieves the indexed image with its own id (its relative path): "
        "a leave-one-out run over the indexed folder itself",
    )  # fmt: skip
    add_backend_arguments(search, choose=False)
    search.set_defaults(handler=run)


def _open(args: argparse.Namespace):
    """The collection, read-only: a search never waits on a writer."""
    from cbir.collection import Collection

    return Collection.open(
        args.collection, read_only=True, backend_options=dict(args.backend_option)
    )


def run(args: argparse.Namespace) -> int:
    from cbir.images import read_image_file

    if args.batch is not None:
        return run_batch(args)
    if args.image is None:
        raise CbirError("give a query IMAGE, or --batch QUERY_DIR --run FILE")
    if args.k < 1:
        raise CbirError("-k must be at least 1")
    with _open(args) as collection:
        image = read_image_file(args.image, size=collection.extractor.input_size)
        hits = collection.search_images(image[None], k=args.k)[0]
        # a server backend's requests for this query: round trips, their time, the server's
        timing = getattr(collection.index, "last_search", None)
    answer = {"results": [hit.as_dict() for hit in hits]}
    if timing is not None:
        answer["index_timing"] = timing.as_dict()
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        if timing is not None:
            print(f"index search: {json.dumps(answer['index_timing'])}", file=sys.stderr)
        for rank, hit in enumerate(hits, start=1):
            print(f"{rank:>4}  {hit.score:8.4f}  {hit.label or '-':<16} {hit.id}")
    return 0


def run_batch(args: argparse.Namespace) -> int:
    """`--batch QUERY_DIR --run FILE`: every image of a folder as a query, one TREC run."""
    from cbir.batch_search import search_folder, trec_id, write_trec_run
    from cbir.evaluation.trec import write_qrels

    if args.image is not None:
        raise CbirError("give either a query IMAGE or --batch QUERY_DIR, not both")
    if args.run is None:
        raise CbirError("--batch needs --run FILE, where the TREC run is written")
    if args.depth < 1:
        raise CbirError("--depth must be at least 1")
    with _open(args) as collection:
        run = search_folder(collection, args.batch, args.depth, args.exclude_self)
        write_trec_run(
            args.run, run.query_ids, run.ranked_ids, run.scores, tag=collection.extractor.run_tag
        )
        if args.qrels is not None:
            indexed = collection.labels()
            write_qrels(
                args.qrels, [trec_id(q) for q in run.query_ids], run.query_labels,
                [trec_id(i) for i in indexed], list(indexed.values()),
            )  # fmt: skip
    for _file, why in run.failures[:10]:
        print(f"  skipped {why}", file=sys.stderr)
    print(
        f"searched {len(run.query_ids):,} queries (unreadable {len(run.failures):,}); "
        f"wrote {args.run}" + (f" and {args.qrels}" if args.qrels else "")
    )
    return 0
