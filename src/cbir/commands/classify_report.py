"""`cbir classify-report cifar10 --out DIR`: the classical classifiers' accuracy / precision
table (each feature fusion x classifier, train and test) as Markdown, CSV and
classification.json in DIR. A subsample by default, so that it finishes in minutes. The report
itself is `cbir.evaluation.classification_report`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cbir.commands import parse_param


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "classify-report", help="classical classifiers' accuracy/precision table"
    )
    parser.add_argument("dataset", choices=["cifar10"])
    parser.add_argument("--data", type=Path, help="folder holding CIFAR-10 (else CBIR_DATA_DIR)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the tables")
    parser.add_argument("--train", type=int, default=5000, help="training images (default 5000)")
    parser.add_argument("--test", type=int, default=2000, help="test images (default 2000)")
    parser.add_argument("--fusions", default=None, help="comma-separated, e.g. hog+sift,bovw")
    parser.add_argument(
        "--classifiers", default=None,
        help="comma-separated, from gaussian_nb, logistic_regression, knn, linear_svm, "
        "random_forest (default all)",
    )  # fmt: skip
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    parser.add_argument(
        "--full-grid", action="store_true",
        help="the larger grids, close to the reference's (slow: hours for random_forest)",
    )  # fmt: skip
    parser.add_argument(
        "--bovw-param", "-p", action="append", type=parse_param, default=[], metavar="KEY=VALUE",
        help="parameter of the bovw features, repeatable",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cbir.datasets import load_cifar10
    from cbir.evaluation.classification_report import (
        CLASSIFIERS,
        FUSIONS,
        check_classifiers,
        write_classification_report,
    )
    from cbir.evaluation.results import CLASSIFICATION_FILE

    # checked before the minutes of feature extraction
    classifiers = check_classifiers(
        tuple(args.classifiers.split(",")) if args.classifiers else CLASSIFIERS
    )
    table = write_classification_report(
        args.out, load_cifar10(args.data), n_train=args.train, n_test=args.test,
        fusions=tuple(args.fusions.split(",")) if args.fusions else FUSIONS,
        classifiers=classifiers, folds=args.folds, full_grid=args.full_grid,
        bovw_params=dict(args.bovw_param), seed=args.seed,
    )  # fmt: skip
    print(table)
    print(json.dumps({"wrote": str(args.out / CLASSIFICATION_FILE)}))
    return 0
