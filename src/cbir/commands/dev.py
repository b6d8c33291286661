"""`cbir dev elasticsearch|milvus start|stop|status`: local search servers for development.

Elasticsearch 8.12.2 is downloaded and verified on first use, Milvus 2.3.5 installed into a
virtual environment of its own (both cached outside the checkout, see `cbir.servers`). `start`
runs one server on 127.0.0.1 and records its PID; `stop` stops that PID.
"""

from __future__ import annotations

import argparse
import importlib

# engine -> (module, its name in messages, the variable that points cbir at it)
ENGINES = {
    "elasticsearch": ("cbir.servers.elasticsearch", "Elasticsearch", "CBIR_ELASTICSEARCH_URL"),
    "milvus": ("cbir.servers.milvus", "Milvus", "CBIR_MILVUS_URI"),
}


def add_parser(commands) -> None:
    dev = commands.add_parser("dev", help="development servers (Elasticsearch, Milvus)")
    engines = dev.add_subparsers(dest="engine", required=True)
    for engine, (_, shown, _) in ENGINES.items():
        parser = engines.add_parser(engine, help=f"a local {shown} server")
        parser.add_argument("action", choices=["start", "stop", "status"])
        parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for it")
        if engine == "elasticsearch":
            parser.add_argument("--port", type=int, default=None, help="HTTP port (default: free)")
        parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    module_name, shown, variable = ENGINES[args.engine]
    server = importlib.import_module(module_name)
    if args.action == "start":
        options = {"port": args.port} if args.engine == "elasticsearch" else {}
        running = server.start_recorded(timeout=args.timeout, **options)
        address = _address(running)
        print(f"{shown} {server.VERSION} running at {address} (pid {running.pid})")
        print(f"export {variable}={address}")
    elif args.action == "stop":
        running = server.stop_recorded()
        print(f"stopped pid {running.pid}" if running else f"no recorded {shown} is running")
    else:
        running = server.recorded()
        print(f"running at {_address(running)} (pid {running.pid})" if running else "not running")
        return 0 if running else 1
    return 0


def _address(running) -> str:
    return getattr(running, "url", None) or running.uri
