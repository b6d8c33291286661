"""Feature extraction in this process vs through a local Ray (Ray Data), side by side.

    nice -n 10 .venv/bin/python benchmarks/ray_describe.py [--n 20000] [--extractors gch hog]
        [--num-cpus CORES] [--out benchmarks/results/ray-describe.json]

Describes N random CIFAR-size (32x32) images with each extractor: in this process (batches
of 1024, as `cbir index` does) and with `cbir.distributed.RayDescriber` on a local Ray with
every core, in one call (the Ray start is timed apart: a cluster is started once). Also times
one 1,024-image call through Ray, the fixed cost each `cbir index --ray` batch pays. Checks
that both routes give the same vectors. Prints and saves JSON.

On one machine Ray can only add overhead (serialising, worker start, one process per core
instead of numpy's threads); it pays off when the cluster has more machines than this one.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from cbir.distributed import RayDescriber, RaySession
from cbir.features import get_extractor
from cbir.pipeline import describe
from cbir.speed.measure import load_average, machine, save_result, stopwatch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "ray-describe.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--extractors", nargs="+", default=["gch", "hog"])
    parser.add_argument("--num-cpus", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    images = np.random.default_rng(0).integers(0, 256, size=(args.n, 32, 32, 3), dtype=np.uint8)
    result: dict = {
        "benchmark": "ray-describe",
        "params": {"n": args.n, "num_cpus": args.num_cpus, "load_average_1m": [load_average()]},
        "machine": machine(),
        "runs": [],
    }
    session = RaySession("local", num_cpus=args.num_cpus)
    with stopwatch() as start:
        session.connect()
    result["ray_start_s"] = round(start["s"], 2)
    with session:
        for name in args.extractors:
            extractor = get_extractor(name)
            with stopwatch() as local:
                expected = describe(extractor, images)
            with RayDescriber("local") as describer:
                with stopwatch() as on_ray:
                    vectors = describer(extractor, images)
                with stopwatch() as one_batch:
                    describer(extractor, images[:1024])
            run = {
                "extractor": name,
                "dim": extractor.dim,
                "local_images_per_s": round(args.n / local["s"]),
                "ray_images_per_s": round(args.n / on_ray["s"]),
                "ray_over_local": round(local["s"] / on_ray["s"], 2),
                "local_s": round(local["s"], 2),
                "ray_s": round(on_ray["s"], 2),
                "ray_1024_batch_s": round(one_batch["s"], 2),
                "max_abs_difference": float(np.abs(vectors - expected).max()),
            }
            result["runs"].append(run)
            print(json.dumps(run))
    result["params"]["load_average_1m"].append(load_average())
    save_result(args.out, result)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
