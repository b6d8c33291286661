"""The class-fusion classifier of a classical extractor, on its own: fitted on CIFAR-10's
50,000 training images, asked to predict the 10,000 test images.

    .venv/bin/python benchmarks/classifier_accuracy.py [--extractor bovw-reference]
        [-p KEY=VALUE ...] [--out benchmarks/results/classifier-accuracy-NAME.json]

This is the reproduction check of `bovw-reference` against the reference's 60% train / 56%
test accuracy (HOG + SIFT word counts, logistic regression): the same extractor that
`cbir benchmark` uses, not the standardised pipeline of `cbir classify-report`. With class
fusion, a query's class in its vector is this prediction, so the test accuracy bounds what
class fusion can give at depth 100. Prints and saves JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cbir.commands import parse_param
from cbir.datasets import load_cifar10
from cbir.evaluation.quality_run import dataset_label
from cbir.features import get_extractor
from cbir.speed.measure import load_average, machine, save_result, stopwatch

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extractor", default="bovw-reference")
    parser.add_argument("--param", "-p", action="append", type=parse_param, default=[])
    parser.add_argument("--data", type=Path, help="folder holding CIFAR-10 (else CBIR_DATA_DIR)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    params = dict(args.param)
    tag = "-".join([args.extractor] + [f"{k}-{v}" for k, v in sorted(params.items())])
    out = args.out or ROOT / "benchmarks" / "results" / f"classifier-accuracy-{tag}.json"

    data = load_cifar10(args.data)
    load_before = load_average()
    extractor = get_extractor(args.extractor, **params)
    with stopwatch() as fit:
        extractor.fit(data.train.images, data.train.labels)
    with stopwatch() as predict:
        predicted = extractor.predict(data.test.images)
    result = {
        "benchmark": "classifier-accuracy",
        "dataset": dataset_label(data.source),
        "params": {
            "extractor": extractor.describe(),
            "load_average_1m": [load_before, load_average()],
        },
        "machine": machine(),
        "train_accuracy": round(float(extractor.fit_report_["train_accuracy"]), 4),
        "test_accuracy": round(float(np.mean(predicted == data.test.labels)), 4),
        "fit_s": round(fit["s"], 1),
        "predict_images_per_s": round(len(predicted) / predict["s"], 1),
    }
    print({key: result[key] for key in ("dataset", "train_accuracy", "test_accuracy", "fit_s")})
    save_result(out, result)


if __name__ == "__main__":
    main()
