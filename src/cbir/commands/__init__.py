"""One module per `cbir` command. Each module defines `add_parser(commands)` that adds its
sub-parser and sets `handler`; `cli.py` lists the modules. Heavy imports stay inside handlers.

Options that several commands share are defined here (`ray_options.py` holds `--ray`), so a
command never imports another command's module."""

from __future__ import annotations

import argparse
import json
from typing import Any

# The order here is the order `cbir --help` lists the commands in.
COMMAND_MODULES = (
    "cbir.commands.index",
    "cbir.commands.search",
    "cbir.commands.delete",
    "cbir.commands.stats",
    "cbir.commands.verify",
    "cbir.commands.serve",
    "cbir.commands.benchmark",
    "cbir.commands.bench",
    "cbir.commands.report",
    "cbir.commands.extractors",
    "cbir.commands.train",
    "cbir.commands.tune",
    "cbir.commands.dev",
    "cbir.commands.vocabulary",
    "cbir.commands.classify_report",
)


def parse_param(text: str) -> tuple[str, Any]:
    """`key=value`, the value read as JSON when it parses (numbers, booleans, lists)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def add_extractor_arguments(parser: argparse.ArgumentParser, default: str | None) -> None:
    """--extractor NAME and repeatable --param KEY=VALUE, shared by every command that
    describes images."""
    suffix = f"; default {default}" if default else ""
    parser.add_argument(
        "--extractor", "-e", default=default,
        help=f"feature extractor (see `cbir extractors`){suffix}",
    )  # fmt: skip
    parser.add_argument(
        "--param", "-p", action="append", type=parse_param, default=[], metavar="KEY=VALUE",
        help="extractor parameter, repeatable (e.g. -p image_size=64)",
    )  # fmt: skip


def add_wait_argument(parser: argparse.ArgumentParser) -> None:
    """--wait SECONDS, shared by the commands that write to a collection."""
    parser.add_argument(
        "--wait", type=float, metavar="SECONDS",
        help="when another process is writing the collection, wait this long for it "
        "(default 10, or CBIR_LOCK_TIMEOUT), then give up",
    )  # fmt: skip


def add_backend_arguments(parser: argparse.ArgumentParser, choose: bool) -> None:
    """--backend NAME (`choose`: where the command makes a new index) and repeatable
    --backend-option KEY=VALUE, described from the backends' declarations (`cbir.index`).
    Credentials never go here: they come from the environment."""
    from cbir.index import DEFAULT_BACKEND, available, backends, describe_options

    if choose:
        servers = [cls for cls in backends() if cls.keeps_data and cls.connection]
        reach = "; ".join(
            f"{cls.name} at --backend-option {cls.connection}=... or "
            f"${cls.setting(cls.connection).env}, else {cls.setting(cls.connection).default}"
            for cls in servers
        )
        parser.add_argument(
            "--backend", default=DEFAULT_BACKEND, choices=available(),
            help=f"where the vectors live (default {DEFAULT_BACKEND}); servers: {reach}",
        )  # fmt: skip
    parser.add_argument(
        "--backend-option", action="append", type=parse_param, default=[], metavar="KEY=VALUE",
        help="backend setting, repeatable (e.g. index=hnsw:M=16,ef_construction=200, "
        f"search=ef=128): {describe_options()}"
        + ("" if choose else "; for this run only, the collection keeps its own"),
    )  # fmt: skip
