"""`cbir dev BACKEND start|stop|status`: local search servers for development, one for each
backend that declares a `dev_server` (`cbir.index`: Elasticsearch, Milvus).

Elasticsearch 8.12.2 is downloaded and verified on first use, Milvus 2.3.5 installed into a
virtual environment of its own (both cached outside the checkout, see `cbir.servers`). `start`
runs one server on 127.0.0.1 and records its PID; `stop` stops that PID.
"""

from __future__ import annotations

import argparse
import importlib


def add_parser(commands) -> None:
    from cbir.index import backends

    dev = commands.add_parser("dev", help="development servers (Elasticsearch, Milvus)")
    engines = dev.add_subparsers(dest="engine", required=True)
    for cls in backends():
        if cls.dev_server is None:
            continue
        # the server module is imported only when run: building the parser stays light
        parser = engines.add_parser(cls.name, help=f"a local {cls.name} server")
        parser.add_argument("action", choices=["start", "stop", "status"])
        parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for it")
        parser.add_argument("--port", type=int, default=None, help="client port (default: free)")
        parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cbir.index import backend_class

    backend = backend_class(args.engine)
    assert backend.dev_server is not None and backend.connection is not None
    server = importlib.import_module(backend.dev_server)
    variable = backend.setting(backend.connection).env
    if args.action == "start":
        running = server.start_recorded(timeout=args.timeout, port=args.port)
        print(f"{server.NAME} {server.VERSION} running at {running.address} (pid {running.pid})")
        print(f"export {variable}={running.address}")
    elif args.action == "stop":
        running = server.stop_recorded()
        print(f"stopped pid {running.pid}" if running else f"no recorded {server.NAME} is running")
    else:
        running = server.recorded()
        print(f"running at {running.address} (pid {running.pid})" if running else "not running")
        return 0 if running else 1
    return 0
