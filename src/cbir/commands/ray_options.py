"""`--ray [ADDRESS]`, for the commands that describe many images (`cbir index`): the option,
and the describer it asks for (the work itself is `cbir.distributed`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from cbir.distributed import ADDRESS_ENV, RayDescriber, import_ray

if TYPE_CHECKING:  # the CLI builds its parser from this module: keep the import light
    from cbir.pipeline import Describer


def add_ray_argument(parser: argparse.ArgumentParser) -> None:
    """`--ray [ADDRESS]`: describe the images on a Ray cluster."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",  # the bare flag: $CBIR_RAY_ADDRESS, else a local Ray
        default=None,
        metavar="ADDRESS",
        help=(
            "extract features on a Ray cluster (Ray Data): ADDRESS is 'auto', "
            f"'ray://HOST:10001' or 'local'; without one, ${ADDRESS_ENV}, else a Ray started "
            f"on this machine. Needs the ray extra: pip install 'cbir[ray]'"
        ),
    )


def describer_from_args(args: argparse.Namespace) -> Describer | None:
    """The describer `--ray` asks for, or None (describe in this process)."""
    address = getattr(args, "ray", None)
    if address is None:
        return None
    import_ray()  # a missing Ray is reported before any work starts
    return RayDescriber(address or None)
