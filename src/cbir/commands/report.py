"""`cbir report --out DIR RUN...`: benchmark runs compared side by side (HTML + Markdown)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(commands) -> None:
    report = commands.add_parser(
        "report", help="compare benchmark runs in a static HTML (and Markdown) report"
    )
    report.add_argument(
        "runs", nargs="+", type=Path, metavar="RUN_DIR", help="benchmark --out folders"
    )
    report.add_argument("--out", "-o", required=True, type=Path, help="folder for the report")
    report.add_argument("--title", default=None, help="the report's title")
    report.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cbir.evaluation.report import DEFAULT_TITLE, write_report

    files = write_report(args.runs, args.out, title=args.title or DEFAULT_TITLE)
    print(f"wrote {files.html} and {files.markdown} ({len(files.figures)} figures)")
    return 0
