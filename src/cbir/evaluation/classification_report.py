"""The classical classifiers' table behind `cbir classify-report` (REFERENCE.md section 6):
each feature fusion x classifier, a grid search with k-fold cross-validation on the training
images, accuracy and macro precision on train and test.

Everything of the report is here, from the image sample to its three files
(classification.json, .md, .csv) in the output folder, except the format of
classification.json: `cbir.evaluation.results` defines, writes and validates it, as it does for
every file of a run folder that `cbir report` reads back. (The linear classifiers the bovw
extractor fuses with are part of that extractor: `cbir.features.classical_classifiers`.)"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cbir.errors import UnknownNameError
from cbir.evaluation.results import write_classification
from cbir.features import get_extractor

if TYPE_CHECKING:
    from cbir.datasets import Cifar10

# The reference's three early fusions, plus our dense BoVW pipeline's features.
FUSIONS = ("hog+gch", "hog+sift", "hog+gch+sift", "bovw")


def _estimator(name: str, seed: int):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import LinearSVC

    return {
        "gaussian_nb": lambda: GaussianNB(),
        "logistic_regression": lambda: LogisticRegression(max_iter=1000, random_state=seed),
        "knn": lambda: KNeighborsClassifier(),
        "linear_svm": lambda: LinearSVC(max_iter=2000, random_state=seed),
        # one core per forest: the report runs beside other work and must stay reproducible
        "random_forest": lambda: RandomForestClassifier(n_jobs=1, random_state=seed),
    }[name]()


# name -> (small grid, the default; full grid, close to the reference's, behind --full-grid).
# The reference's kNN metrics minkowski/euclidean are the same metric, so we try cosine instead;
# its forest depths 50..100 never bind on a few thousand images, so None stands for them.
GRIDS: dict[str, tuple[dict[str, list[Any]], dict[str, list[Any]]]] = {
    "gaussian_nb": (
        {"var_smoothing": [1e-9, 1e-2]},
        {"var_smoothing": [1e-9, 1e-7, 1e-5, 1e-3, 1e-2, 1e-1, 1.0]},
    ),
    "logistic_regression": ({"C": [0.01, 1.0]}, {"C": [1e-4, 1e-3, 1e-2, 0.1, 1.0]}),
    "knn": (
        {"n_neighbors": [5, 20], "weights": ["distance"]},
        {
            "n_neighbors": [5, 10, 15, 20],
            "weights": ["uniform", "distance"],
            "metric": ["euclidean", "cosine"],
        },
    ),
    # small C: at C=1 the primal solver hits max_iter on standardised features, and C=1e-3 is
    # the best of the two on bovw
    "linear_svm": (
        {"C": [1e-3, 1e-2]},
        {"C": [1e-3, 1e-2, 0.1, 1.0, 10.0], "loss": ["hinge", "squared_hinge"]},
    ),
    "random_forest": (
        {"n_estimators": [100], "max_depth": [20, None]},
        {
            "n_estimators": [100, 300, 500],
            "max_depth": [20, None],
            "min_samples_split": [2, 5, 10],
            "min_samples_leaf": [1, 2, 4],
        },
    ),
}
CLASSIFIERS = tuple(GRIDS)


def check_classifiers(names: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in GRIDS]
    if unknown:
        raise UnknownNameError(
            f"unknown classifier(s) {', '.join(unknown)}; choose from {', '.join(CLASSIFIERS)}"
        )
    return names


def grid(name: str, full: bool = False) -> dict[str, list[Any]]:
    return GRIDS[check_classifiers((name,))[0]][int(full)]


def feature_blocks(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    bovw_params: dict[str, Any],
    needed: set[str] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (train, test) features for hog, gch, sift (reference 400-word counts), bovw
    (only the `needed` ones, default all); vocabularies are learnt on the training images."""

    def reference():
        return get_extractor("bovw-reference", class_fusion=False).fit(train)

    def dense():
        # the features themselves are the block: no classifier, no projection to fit
        params = {"class_fusion": False, "projection": "none", **bovw_params}
        return get_extractor("bovw", **params).fit(train, train_labels)

    makers = {
        "hog": lambda: get_extractor("hog").transform,
        # the reference's GCH: gray-level counts (the default gch is an HSV histogram)
        "gch": lambda: get_extractor("gch", space="gray", sqrt=False).transform,
        "sift": lambda: reference().word_histograms,
        "bovw": lambda: dense().features,
    }
    unknown = sorted(set(needed or ()) - set(makers))
    if unknown:
        raise UnknownNameError(f"unknown feature block(s) {unknown}; choose from {list(makers)}")
    blocks = {}
    for name in needed or makers:
        describe = makers[name]()  # fits what needs fitting, on the training images only
        blocks[name] = (describe(train), describe(test))
    return blocks


def classification_rows(
    blocks: dict[str, tuple[np.ndarray, np.ndarray]],
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    fusions: tuple[str, ...] = FUSIONS,
    classifiers: tuple[str, ...] = CLASSIFIERS,
    folds: int = 5,
    seed: int = 0,
    full_grid: bool = False,
) -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_limits

    check_classifiers(classifiers)
    # one BLAS thread, like n_jobs=1: on busy cores OpenBLAS's spinning threads made a
    # logistic regression on the bovw features 40x slower (106 s instead of 2.7 s a fit)
    with threadpool_limits(limits=1):
        return _rows(
            blocks, train_labels, test_labels, fusions, classifiers, folds, seed, full_grid
        )


def _rows(blocks, train_labels, test_labels, fusions, classifiers, folds, seed, full_grid):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rows = []
    for fusion in fusions:
        parts = fusion.split("+")
        train = np.hstack([blocks[part][0] for part in parts])
        test = np.hstack([blocks[part][1] for part in parts])
        for name in classifiers:
            # standardised, unlike the reference: unscaled counts next to HOG stall lbfgs and
            # let the 256 raw GCH counts dominate kNN distances
            pipeline = Pipeline([("scale", StandardScaler()), ("model", _estimator(name, seed))])
            params = {f"model__{key}": values for key, values in grid(name, full_grid).items()}
            # an int cv is stratified k-fold for classifiers (unshuffled, hence deterministic)
            search = GridSearchCV(pipeline, params, cv=folds, n_jobs=1).fit(train, train_labels)
            train_pred, test_pred = search.predict(train), search.predict(test)
            best = {key.split("__")[-1]: value for key, value in search.best_params_.items()}
            rows.append({
                "features": fusion,
                "classifier": name,
                "train_accuracy": float((train_pred == train_labels).mean()),
                "test_accuracy": float((test_pred == test_labels).mean()),
                "train_macro_precision": _macro_precision(train_labels, train_pred),
                "test_macro_precision": _macro_precision(test_labels, test_pred),
                "params": best,
                "cv_accuracy": float(search.best_score_),
            })  # fmt: skip
    return rows


def _macro_precision(truth: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import precision_score

    return float(precision_score(truth, predicted, average="macro", zero_division=0))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| Features | Classifier | Acc train / test | Macro prec. train / test | Params |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['features']} | {row['classifier']} "
            f"| {row['train_accuracy']:.1%} / {row['test_accuracy']:.1%} "
            f"| {row['train_macro_precision']:.1%} / {row['test_macro_precision']:.1%} "
            f"| {', '.join(f'{k}={v}' for k, v in row['params'].items())} |"
        )
    return "\n".join(lines)


def csv_table(rows: list[dict[str, Any]]) -> str:
    keys = ["features", "classifier", "train_accuracy", "test_accuracy",
            "train_macro_precision", "test_macro_precision", "cv_accuracy"]  # fmt: skip
    lines = [",".join(keys)]
    lines += [",".join(str(row[key]) for key in keys) for row in rows]
    return "\n".join(lines) + "\n"


def write_classification_report(
    out: Path,
    data: Cifar10,
    *,
    n_train: int = 5000,
    n_test: int = 2000,
    fusions: tuple[str, ...] = FUSIONS,
    classifiers: tuple[str, ...] = CLASSIFIERS,
    folds: int = 5,
    full_grid: bool = False,
    bovw_params: dict[str, Any] | None = None,
    seed: int = 0,
) -> str:
    """The whole report on a seeded random sample of CIFAR-10 (`n_train` training images,
    `n_test` test images): classification.json, classification.md and classification.csv in
    `out`. Returns the Markdown table."""
    check_classifiers(classifiers)
    rng = np.random.default_rng(seed)
    # random samples: the JPEG mirror stores images sorted by class
    train = np.sort(rng.choice(len(data.train.images), min(n_train, len(data.train.images)),
                               replace=False))  # fmt: skip
    test = np.sort(rng.choice(len(data.test.images), min(n_test, len(data.test.images)),
                              replace=False))  # fmt: skip
    train_labels, test_labels = data.train.labels[train], data.test.labels[test]
    needed = {part for fusion in fusions for part in fusion.split("+")}
    blocks = feature_blocks(
        data.train.images[train], train_labels, data.test.images[test], bovw_params or {}, needed
    )
    rows = classification_rows(
        blocks, train_labels, test_labels, fusions, classifiers,
        folds=folds, seed=seed, full_grid=full_grid,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    selection = (
        f"{folds}-fold stratified grid search ({'full' if full_grid else 'small'} "
        f"grid) on {len(train):,} training images; tested on {len(test):,} images"
    )
    write_classification(out, rows, dataset="CIFAR-10 (JPEG mirror)", selection=selection)
    table = markdown_table(rows)
    (out / "classification.md").write_text(table + "\n")
    (out / "classification.csv").write_text(csv_table(rows))
    return table
