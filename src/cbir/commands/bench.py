"""`cbir bench search`: exact vs approximate search speed, side by side, saved as JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(commands) -> None:
    bench = commands.add_parser("bench", help="measure speed (search latency, throughput)")
    kinds = bench.add_subparsers(dest="what", required=True, metavar="WHAT")
    search = kinds.add_parser(
        "search",
        help="exact and approximate search over seeded clustered vectors",
        description="Builds the exact index and an approximate one over the same seeded "
        "Gaussian-mixture vectors and measures both in one run: build time, single-query "
        "p50/p99, batched queries per second, index size, recall@k against exact.",
    )
    search.add_argument("--n", type=int, required=True, help="vectors to index")
    search.add_argument("--dim", type=int, required=True, help="their dimension")
    search.add_argument("--queries", type=int, default=10_000, help="batched queries (10,000)")
    search.add_argument(
        "--single", type=int, default=1_000, help="of which timed one at a time (1,000)"
    )
    search.add_argument("--k", type=int, default=100, help="results per query (100)")
    search.add_argument(
        "--index", default="auto",
        help='approximate index spec: auto, flat, "hnsw:M=32,ef_construction=200", '
        '"ivfpq:nlist=1024,m=32" (default auto)',
    )  # fmt: skip
    search.add_argument(
        "--search", default="", help='search parameters: "ef=128" (hnsw), "nprobe=32" (ivfpq)'
    )
    search.add_argument(
        "--sweep", action="append", default=[], metavar="SEARCH",
        help='also measure these search parameters on the same build, repeatable: '
        '--sweep ef=256 --sweep ef=512',
    )  # fmt: skip
    search.add_argument("--seed", type=int, default=0, help="data seed (0)")
    search.add_argument("--clusters", type=int, default=256, help="mixture components (256)")
    search.add_argument(
        "--spread", type=float, default=1.0,
        help="cluster spread relative to the centres' norm (1.0); larger is harder",
    )  # fmt: skip
    search.add_argument(
        "--spectrum-power", type=float, default=0.5,
        help="cluster axis j has std j**-POWER (0.5: embedding-like; 0: isotropic, hard)",
    )  # fmt: skip
    search.add_argument("--out", type=Path, help="write the figures as JSON here")
    search.add_argument("--workdir", type=Path, help="scratch folder for saved indexes")
    search.set_defaults(handler=run_search)


def run_search(args: argparse.Namespace) -> int:
    from cbir.index.spec import parse_search, parse_spec
    from cbir.speed.measure import save_result
    from cbir.speed.search import SearchBenchmark, run_search_benchmark

    spec = parse_spec(args.index)  # fail on a bad spec before minutes of data generation
    for search in (args.search, *args.sweep):
        parse_search(search, spec.kind)
    config = SearchBenchmark(
        n=args.n, dim=args.dim, queries=args.queries, single=args.single, k=args.k,
        index=args.index, search=args.search, seed=args.seed, clusters=args.clusters,
        spread=args.spread, spectrum_power=args.spectrum_power, sweep=tuple(args.sweep),
    )  # fmt: skip
    quiet = args.quiet or not sys.stderr.isatty()
    result = run_search_benchmark(
        config,
        progress=(lambda message: None) if quiet else lambda m: print(f"... {m}", file=sys.stderr),
        workdir=args.workdir,
    )
    print(format_table(result))
    if args.out:
        save_result(args.out, result)
        print(f"wrote {args.out}")
    return 0


def format_table(result: dict[str, Any]) -> str:
    params, exact, ann = result["params"], result["exact"], result["ann"]
    recall_key = f"recall_at_{params['k']}"
    lines = [
        f"{params['n']:,} x {params['dim']} vectors, {params['queries']:,} queries "
        f"({params['single']:,} timed singly), k={params['k']}, seed {params['seed']} | "
        f"{params['cpu']}, {params['cores']} cores",
        f"{'':<44}{'build s':>9}{'p50 ms':>9}{'p99 ms':>9}{'batch q/s':>11}"
        f"{'recall@' + str(params['k']):>11}{'size MB':>9}",
    ]
    rows = [("exact (ExactIndex)", exact, 1.0),
            (f"faiss {ann.get('active', params['spec'])}", ann, ann[recall_key])]  # fmt: skip
    for name, figures, rec in rows:
        lines.append(
            f"{name[:43]:<44}{figures['build_s']:>9.2f}{figures['p50_ms']:>9.3f}"
            f"{figures['p99_ms']:>9.3f}{figures['qps_batch']:>11,.0f}{rec:>11.4f}"
            f"{figures['memory_mb']:>9.1f}"
        )
    for point in result.get("sweep", []):
        lines.append(
            f"{'  searched with ' + point['search']:<44}{'':>9}{point['p50_ms']:>9.3f}"
            f"{point['p99_ms']:>9.3f}{point['qps_batch']:>11,.0f}{point[recall_key]:>11.4f}"
        )
    lines.append(
        f"approximate vs exact: {result['speedup_p50']:.1f}x faster single-query p50, "
        f"{result['speedup_batch']:.1f}x batched throughput"
        + (f" (search {ann['search']})" if ann.get("search") else "")
    )
    return "\n".join(lines)
