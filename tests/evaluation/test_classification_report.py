"""`cbir classify-report`: the classical classifiers' table, from the feature blocks to its
three files."""

import numpy as np
import pytest

from cbir.datasets import Cifar10, Dataset
from cbir.errors import CbirError
from cbir.evaluation.classification_report import (
    CLASSIFIERS,
    classification_rows,
    csv_table,
    grid,
    markdown_table,
    write_classification_report,
)
from cbir.evaluation.results import read_classification, write_classification


def _blocks(n_per_class=30, seed=0):
    """Three classes separable in 'hog' (a shifted one-hot plus noise); 'gch' is pure noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n_per_class)
    signal = np.eye(3)[labels] * 3
    n = len(labels)
    blocks = {
        "hog": (signal + rng.normal(size=(n, 3)), signal + rng.normal(size=(n, 3))),
        "gch": (rng.normal(size=(n, 4)), rng.normal(size=(n, 4))),
    }
    return blocks, labels


def test_classification_rows_are_valid_classification_json(tmp_path):
    blocks, labels = _blocks()
    classifiers = ("logistic_regression", "linear_svm")
    rows = classification_rows(blocks, labels, labels, ("hog", "hog+gch"), classifiers)
    # one row per (fusion, classifier), fusions outer
    assert [(r["features"], r["classifier"]) for r in rows] == [
        ("hog", "logistic_regression"), ("hog", "linear_svm"),
        ("hog+gch", "logistic_regression"), ("hog+gch", "linear_svm"),
    ]  # fmt: skip
    assert all(row["test_accuracy"] > 0.8 for row in rows)
    path = write_classification(tmp_path, rows, dataset="tiny", selection="5-fold")
    assert read_classification(path)["results"] == rows
    assert markdown_table(rows).count("\n") == len(rows) + 1
    assert csv_table(rows).count("\n") == len(rows) + 1


def test_every_classifier_learns_a_separable_problem():
    blocks, labels = _blocks()
    rows = classification_rows(blocks, labels, labels, fusions=("hog",))
    assert [row["classifier"] for row in rows] == list(CLASSIFIERS) == [
        "gaussian_nb", "logistic_regression", "knn", "linear_svm", "random_forest",
    ]  # fmt: skip
    for row in rows:
        assert row["test_accuracy"] > 0.85, row
        assert row["test_macro_precision"] > 0.85, row
        assert row["cv_accuracy"] > 0.8, row
        # the chosen parameters come from the default (small) grid
        small = grid(row["classifier"])
        assert set(row["params"]) == set(small)
        assert all(row["params"][key] in small[key] for key in small)


def test_full_grid_is_larger_and_is_searched():
    for name in CLASSIFIERS:
        small, full = grid(name), grid(name, full=True)
        assert set(small) <= set(full)
        assert np.prod([len(v) for v in full.values()]) > np.prod([len(v) for v in small.values()])
    # kNN's full grid is the cheap one to search: its metric is only in the full grid
    blocks, labels = _blocks()
    (row,) = classification_rows(blocks, labels, labels, ("hog",), ("knn",), full_grid=True)
    assert row["params"]["metric"] in {"euclidean", "cosine"}
    assert row["test_accuracy"] > 0.85


def test_folds_are_honoured():
    blocks, labels = _blocks(n_per_class=4)
    # 5-fold needs 5 images per class; 3-fold works on 4
    (row,) = classification_rows(blocks, labels, labels, ("hog",), ("gaussian_nb",), folds=3)
    assert row["test_accuracy"] > 0.8
    with pytest.raises(ValueError):
        classification_rows(blocks, labels, labels, ("hog",), ("gaussian_nb",), folds=5)


def test_unknown_classifier_is_a_clear_error():
    blocks, labels = _blocks()
    with pytest.raises(CbirError, match="svm_rbf.*choose from.*random_forest"):
        classification_rows(blocks, labels, labels, ("hog",), ("knn", "svm_rbf"))
    with pytest.raises(CbirError, match="unknown classifier"):
        grid("xgboost")


def test_cli_rejects_an_unknown_classifier_before_loading_data(tmp_path, capsys):
    from cbir.cli import main

    # no data folder exists: the name is checked first, so the error is about the classifier
    argv = ["classify-report", "cifar10", "--data", str(tmp_path / "none"),
            "--out", str(tmp_path / "out"), "--classifiers", "knn,bayes"]  # fmt: skip
    assert main(argv) == 2
    assert "unknown classifier(s) bayes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _gray_split(n_per_class: int, seed: int) -> Dataset:
    """Three classes of 32x32 images a gray-level histogram tells apart."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], n_per_class)
    levels = np.array([40, 128, 215])[labels]
    noise = rng.integers(-15, 16, size=(len(labels), 32, 32, 3))
    images = np.clip(levels[:, None, None, None] + noise, 0, 255).astype(np.uint8)
    ids = [f"{i}" for i in range(len(labels))]
    return Dataset(ids, images, labels.astype(np.int64), ["dark", "mid", "light"])


def test_the_report_samples_the_images_and_writes_its_three_files(tmp_path):
    data = Cifar10(_gray_split(10, seed=0), _gray_split(6, seed=1), source="synthetic")
    out = tmp_path / "report"
    table = write_classification_report(
        out, data, n_train=24, n_test=12, fusions=("gch",), classifiers=("gaussian_nb",),
        folds=3,
    )  # fmt: skip
    payload = read_classification(out / "classification.json")
    (row,) = payload["results"]
    assert (row["features"], row["classifier"]) == ("gch", "gaussian_nb")
    assert row["test_accuracy"] > 0.9
    assert "on 24 training images; tested on 12 images" in payload["selection"]
    assert (out / "classification.md").read_text() == table + "\n"
    assert (out / "classification.csv").read_text() == csv_table(payload["results"])
