import numpy as np

from cbir.evaluation.results import read_classification, write_classification
from cbir.features.classical_report import classification_rows, csv_table, markdown_table


def test_classification_rows_are_valid_classification_json(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    signal = np.eye(3)[labels] * 3
    blocks = {
        "hog": (signal + rng.normal(size=(90, 3)), signal + rng.normal(size=(90, 3))),
        "gch": (rng.normal(size=(90, 4)), rng.normal(size=(90, 4))),
    }
    rows = classification_rows(blocks, labels, labels, fusions=("hog", "hog+gch"))
    assert [(r["features"], r["classifier"]) for r in rows] == [
        ("hog", "logistic_regression"), ("hog", "linear_svm"),
        ("hog+gch", "logistic_regression"), ("hog+gch", "linear_svm"),
    ]  # fmt: skip
    assert all(row["test_accuracy"] > 0.8 for row in rows)
    path = write_classification(tmp_path, rows, dataset="tiny", selection="3-fold")
    assert read_classification(path)["results"] == rows
    assert markdown_table(rows).count("\n") == len(rows) + 1
    assert csv_table(rows).count("\n") == len(rows) + 1
