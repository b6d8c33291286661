"""`cbir extractors`: what can describe images, and with which parameters."""

from __future__ import annotations

import argparse
import json


def add_parser(commands) -> None:
    extractors = commands.add_parser("extractors", help="list the available extractors")
    extractors.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cbir.features import available, get_extractor
    from cbir.features.presets import PRESETS

    for name in available():
        extractor = get_extractor(name)
        fit = "needs fit" if extractor.needs_fit else "no fit"
        knobs = extractor.get_knobs()  # never change the vectors: not part of a collection
        runtime = f"  runtime {json.dumps(knobs, sort_keys=True)}" if knobs else ""
        print(f"{name:<16} {fit:<10} {json.dumps(extractor.params, sort_keys=True)}{runtime}")
    print("\npresets (-e NAME; -p values override them):")
    for name, preset in PRESETS.items():
        flags = " ".join(f"-p {key}={json.dumps(value)}" for key, value in preset.params.items())
        print(f"{name:<16} = {preset.extractor} {flags}\n{'':<16}   {preset.measured}")
    return 0
