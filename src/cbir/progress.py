"""Progress bars on stderr for long steps; silent when stderr is not a terminal or --quiet."""

from __future__ import annotations

import sys

from tqdm import tqdm

_quiet = False


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def progress_bar(total: int | None, description: str, unit: str = "img") -> tqdm:
    disable = _quiet or not sys.stderr.isatty()
    return tqdm(
        total=total, desc=description, unit=unit, unit_scale=True, disable=disable,
        file=sys.stderr, dynamic_ncols=True, leave=False,
    )  # fmt: skip
