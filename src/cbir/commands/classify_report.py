"""`cbir classify-report cifar10 --out DIR`: the classical classifiers' accuracy / precision
table (each feature fusion x classifier, train and test) as Markdown, CSV and
classification.json in DIR. A subsample by default, so that it finishes in minutes."""

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
    import numpy as np

    from cbir.datasets import load_cifar10
    from cbir.evaluation.results import write_classification
    from cbir.features.classical_report import (
        CLASSIFIERS,
        FUSIONS,
        check_classifiers,
        classification_rows,
        csv_table,
        feature_blocks,
        markdown_table,
    )

    # checked before the minutes of feature extraction
    classifiers = check_classifiers(
        tuple(args.classifiers.split(",")) if args.classifiers else CLASSIFIERS
    )
    data = load_cifar10(args.data)
    rng = np.random.default_rng(args.seed)
    train = np.sort(rng.choice(len(data.train.images), min(args.train, len(data.train.images)),
                               replace=False))  # fmt: skip
    # random samples: the JPEG mirror stores images sorted by class
    test = np.sort(rng.choice(len(data.test.images), min(args.test, len(data.test.images)),
                              replace=False))  # fmt: skip
    fusions = tuple(args.fusions.split(",")) if args.fusions else FUSIONS
    train_labels, test_labels = data.train.labels[train], data.test.labels[test]
    needed = {part for fusion in fusions for part in fusion.split("+")}
    blocks = feature_blocks(
        data.train.images[train], train_labels, data.test.images[test], dict(args.bovw_param),
        needed,
    )  # fmt: skip
    rows = classification_rows(
        blocks, train_labels, test_labels, fusions, classifiers,
        folds=args.folds, seed=args.seed, full_grid=args.full_grid,
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    selection = (
        f"{args.folds}-fold stratified grid search ({'full' if args.full_grid else 'small'} "
        f"grid) on {len(train):,} training images; tested on {len(test):,} images"
    )
    write_classification(args.out, rows, dataset="CIFAR-10 (JPEG mirror)", selection=selection)
    table = markdown_table(rows)
    (args.out / "classification.md").write_text(table + "\n")
    (args.out / "classification.csv").write_text(csv_table(rows))
    print(table)
    print(json.dumps({"wrote": str(args.out / "classification.json")}))
    return 0
