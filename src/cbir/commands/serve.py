"""`cbir serve --collection DIR`: the search page and JSON API, under the waitress WSGI server."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from cbir.commands import add_backend_arguments
from cbir.errors import CbirError

# waitress refuses a body past the app's upload limit plus this (room for multipart headers)
# before reading it, and holds every body it accepts, and every answer up to that size (an
# image served back), in memory: neither touches the disk. The price: at most
# `connection_limit` (100) bodies of that size in memory at once.
BODY_SLACK = 64 * 1024
# waitress reads sockets in its one I/O thread; its default 8 KB reads make a 16 MB upload two
# thousand trips through Python that every request waits behind (the GIL).
RECV_BYTES = 256 * 1024
# Requests already run in parallel threads, and for one query vector a second BLAS thread costs
# more in hand-off than it saves: on 2 busy cores, 50,000 x 256, one thread halved p50 and p99
# (benchmarks/search_latency.py).
BLAS_THREADS = 1
# How long a thread holding the GIL runs before one that waits gets it. Request threads drop
# the GIL many times a request (socket, SQLite, NumPy) and wait for it again each time; at
# CPython's 5 ms, 16 busy threads made each such wait up to 5 ms. At 1 ms, 16 readers on 2
# cores searched with a p99 of 76 ms instead of 113 in one side-by-side run
# (benchmarks/load_search_api.py --baseline).
GIL_SWITCH_S = 0.001


def add_parser(commands) -> None:
    serve = commands.add_parser("serve", help="serve the search page and JSON API of a collection")
    serve.add_argument(
        "--collection", "-c", type=Path, default=os.environ.get("CBIR_COLLECTION"),
        help="collection folder (else CBIR_COLLECTION)",
    )  # fmt: skip
    serve.add_argument(
        "--host", default=os.environ.get("CBIR_HOST", "127.0.0.1"),
        help="address to listen on (default 127.0.0.1: this machine only; else CBIR_HOST)",
    )  # fmt: skip
    serve.add_argument(
        "--port", type=int, default=os.environ.get("CBIR_PORT", "5000"),
        help="port (default 5000, 0 picks a free one; else CBIR_PORT)",
    )  # fmt: skip
    serve.add_argument(
        "--allowed-host", action="append", default=[], metavar="NAME",
        help="a host name (or address) clients reach the server by, besides the --host "
        "address and localhost; repeat for more (also CBIR_ALLOWED_HOSTS, comma separated)",
    )  # fmt: skip
    serve.add_argument(
        "--allow-writes", action="store_true",
        help="accept POST /api/images and DELETE (off by default; on when CBIR_WRITE_TOKEN "
        "is set, which a server reachable beyond this machine needs for writes)",
    )  # fmt: skip
    serve.add_argument(
        "--threads", type=int, default=16,
        help="request threads (default 16: more than the cores, so a short request such as "
        "/api/health shares the CPU with long ones instead of queueing behind them)",
    )  # fmt: skip
    add_backend_arguments(serve, choose=False)
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from threadpoolctl import threadpool_limits
    from waitress import create_server

    from cbir.web import WebConfig, create_app
    from cbir.web.service import EXTENSION_KEY

    if args.collection is None:
        raise CbirError("name the collection to serve with --collection DIR (or CBIR_COLLECTION)")
    if args.threads < 1:
        raise CbirError("--threads must be at least 1")
    threadpool_limits(limits=BLAS_THREADS, user_api="blas")  # for the life of the process
    sys.setswitchinterval(GIL_SWITCH_S)  # the same: a setting of the serving process
    config = WebConfig.from_env(
        args.collection, dict(args.backend_option), host=args.host,
        allowed_hosts=tuple(args.allowed_host), allow_writes=args.allow_writes,
    )  # fmt: skip
    app = create_app(config)  # the collection is loaded once, here, for every request thread
    service = app.extensions[EXTENSION_KEY]
    try:
        server = create_server(
            app, host=args.host, port=args.port, threads=args.threads, ident="cbir",
            max_request_body_size=config.max_upload_bytes + BODY_SLACK,
            inbuf_overflow=config.max_upload_bytes + BODY_SLACK + 1,
            outbuf_overflow=config.max_upload_bytes + BODY_SLACK + 1,  # image bytes served back
            recv_bytes=RECV_BYTES,
        )  # fmt: skip
    except OSError as error:
        service.close()
        raise CbirError(
            f"cannot listen on {args.host}:{args.port} ({error.strerror}); "
            "choose another --port or --host"
        ) from None
    host, port = getattr(server, "effective_host", args.host), server.effective_port
    shown = f"[{host}]" if ":" in str(host) else host
    writes = (
        "writes on (token needed)"
        if config.write_token
        else ("writes on" if args.allow_writes else "read-only")
    )
    print(
        f"cbir: serving {args.collection} ({service.count():,} images, {writes}) "
        f"on http://{shown}:{port}/",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        service.close()
    return 0


def _stop(*_: object) -> None:
    """SIGTERM (how tests, benchmarks and service managers stop us) closes cleanly, like Ctrl-C;
    a second one (a process group and its parent both passing it on) must not cut that short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt
