"""The `cbir` command line: a thin layer over the library.

Each command lives in its own module under `cbir.commands`; heavy imports happen inside the
handlers so that `cbir --help` stays instant. A CbirError becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from cbir import __version__
from cbir.commands import COMMAND_MODULES
from cbir.errors import CbirError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cbir", description="Content-based image retrieval: index images, find look-alikes."
    )
    parser.add_argument("--version", action="version", version=f"cbir {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from cbir.progress import set_quiet

    set_quiet(args.quiet)
    try:
        return args.handler(args)
    except CbirError as error:
        print(f"cbir: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cbir: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
