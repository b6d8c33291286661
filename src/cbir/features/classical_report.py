"""The classical classifiers' table (REFERENCE.md section 6): each feature fusion x classifier,
a small grid search on the training images, accuracy and macro precision on train and test;
rows in the format of classification.json."""

from __future__ import annotations

from typing import Any

import numpy as np

from cbir.features import get_extractor

# The reference's three early fusions, plus our dense BoVW pipeline's features.
FUSIONS = ("hog+gch", "hog+sift", "hog+gch+sift", "bovw")
GRIDS: dict[str, dict[str, list[Any]]] = {
    "logistic_regression": {"C": [0.01, 1.0]},
    "linear_svm": {"C": [0.01, 1.0]},
}


def feature_blocks(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, bovw_params: dict[str, Any]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (train, test) features for hog, gch, sift (reference 400-word counts), bovw;
    vocabularies are learnt on the training images only."""
    hog, gch = get_extractor("hog"), get_extractor("gch")
    reference = get_extractor("bovw-reference", class_fusion=False).fit(train)
    dense = get_extractor("bovw", class_fusion=False, **bovw_params).fit(train, train_labels)
    return {
        "hog": (hog.transform(train), hog.transform(test)),
        "gch": (gch.transform(train), gch.transform(test)),
        "sift": (reference.word_histograms(train), reference.word_histograms(test)),
        "bovw": (dense.features(train), dense.features(test)),
    }


def classification_rows(
    blocks: dict[str, tuple[np.ndarray, np.ndarray]],
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    fusions: tuple[str, ...] = FUSIONS,
    classifiers: tuple[str, ...] = tuple(GRIDS),
    folds: int = 3,
    seed: int = 0,
) -> list[dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    models = {
        "logistic_regression": LogisticRegression(max_iter=1000, random_state=seed),
        "linear_svm": LinearSVC(max_iter=2000, random_state=seed),
    }
    rows = []
    for fusion in fusions:
        parts = fusion.split("+")
        train = np.hstack([blocks[part][0] for part in parts])
        test = np.hstack([blocks[part][1] for part in parts])
        for name in classifiers:
            # standardised, unlike the reference: unscaled counts next to HOG stall lbfgs
            pipeline = make_pipeline(StandardScaler(), models[name])
            grid = {f"{type(models[name]).__name__.lower()}__{key}": values
                    for key, values in GRIDS[name].items()}  # fmt: skip
            search = GridSearchCV(pipeline, grid, cv=folds, n_jobs=1).fit(train, train_labels)
            train_pred, test_pred = search.predict(train), search.predict(test)
            params = {key.split("__")[-1]: value for key, value in search.best_params_.items()}
            rows.append({
                "features": fusion,
                "classifier": name,
                "train_accuracy": float((train_pred == train_labels).mean()),
                "test_accuracy": float((test_pred == test_labels).mean()),
                "train_macro_precision": _macro_precision(train_labels, train_pred),
                "test_macro_precision": _macro_precision(test_labels, test_pred),
                "params": params,
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
