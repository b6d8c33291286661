"""`cbir dev elasticsearch start|stop|status`: a local Elasticsearch for development.

Downloads and verifies Elasticsearch 8.12.2 on first use (cached outside the checkout, see
`cbir.servers`), starts one node on 127.0.0.1 and records its PID; `stop` stops that PID.
"""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    dev = commands.add_parser("dev", help="development servers (a local Elasticsearch)")
    engines = dev.add_subparsers(dest="engine", required=True)
    es = engines.add_parser("elasticsearch", help="a single-node Elasticsearch on 127.0.0.1")
    es.add_argument("action", choices=["start", "stop", "status"])
    es.add_argument("--port", type=int, default=None, help="HTTP port (default: a free one)")
    es.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for it")
    es.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cbir.servers import elasticsearch as es

    if args.action == "start":
        node = es.start_recorded(timeout=args.timeout, port=args.port)
        print(f"Elasticsearch {es.VERSION} running at {node.url} (pid {node.pid})")
        print(f"export CBIR_ELASTICSEARCH_URL={node.url}")
    elif args.action == "stop":
        node = es.stop_recorded()
        print(f"stopped pid {node.pid}" if node else "no recorded Elasticsearch is running")
    else:
        node = es.recorded()
        print(f"running at {node.url} (pid {node.pid})" if node else "not running")
        return 0 if node else 1
    return 0
