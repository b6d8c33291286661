"""No label leakage: a folder benchmark cross-fits an extractor that learns from labels,
refuses queries that took part in fitting, and says how every run was fitted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cbir.cli import main
from cbir.collection import Collection
from cbir.datasets import load_folder
from cbir.evaluation.cross_fit import stratified_folds
from cbir.evaluation.quality_run import BenchmarkOptions, run_folder_benchmark
from cbir.evaluation.report import write_report
from tests.test_batch_search import BOVW_SMALL, textured_folder

BOVW_PARAMS = {"vocabulary_size": 16, "vocabulary_images": 200}


@pytest.fixture
def photos(tmp_path):
    return textured_folder(tmp_path / "photos", 10, seed=7)


def test_folds_are_stratified_and_seeded():
    labels = np.repeat(np.arange(3), [10, 7, 4])
    folds = stratified_folds(labels, 5, seed=0)
    for label in range(3):  # each class spread evenly
        counts = np.bincount(folds[labels == label], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    assert (stratified_folds(labels, 5, seed=0) == folds).all()
    assert (stratified_folds(labels, 5, seed=1) != folds).any()


def test_a_supervised_extractor_is_cross_fitted_each_query_left_out_once(photos, tmp_path):
    kept = tmp_path / "kept"
    metrics = run_folder_benchmark(
        photos, tmp_path / "out", extractor_name="bovw", extractor_params=BOVW_PARAMS,
        options=BenchmarkOptions(collection_dir=kept, folds=3, n_examples=0),
    )  # fmt: skip
    assert metrics["supervised"] is True and metrics["folds"] == 3
    assert metrics["extractor_fit"].startswith("supervised, cross-fitted in 3 folds")
    with Collection.open(kept / "fold-1", read_only=True) as collection:
        images = load_folder(photos, collection.extractor.input_size).images
    left_out = np.zeros(len(images), dtype=np.int64)
    for fold in range(1, 4):
        with Collection.open(kept / f"fold-{fold}", read_only=True) as collection:
            assert len(collection) == 30  # every fold indexes every image
            fitted = collection.extractor.fit_record_.overlap(images)
            assert fitted.sum() == collection.extractor.fit_record_.n_images == 20
            left_out += ~fitted
    assert (left_out == 1).all()  # each image is outside exactly one fold's fitting data


def test_queries_that_took_part_in_fitting_are_refused(photos, tmp_path, capsys):
    collection = tmp_path / "col"
    assert main(["-q", "index", str(photos), "-c", str(collection), "-e", "bovw", *BOVW_SMALL]) == 0
    out = str(tmp_path / "out")
    assert main(["benchmark", "folder", str(photos), "--extractor-from", str(collection),
                 "--out", out]) == 2  # fmt: skip
    assert "30 of the 30 queries took part in fitting" in capsys.readouterr().err
    assert main(["benchmark", "folder", str(photos), "-e", "bovw", *BOVW_SMALL,
                 "--fit-on", str(photos), "--out", out]) == 2  # fmt: skip
    assert "took part in fitting" in capsys.readouterr().err
    other = textured_folder(tmp_path / "other", 6, seed=8)
    assert main(["-q", "benchmark", "folder", str(photos), "-e", "bovw", *BOVW_SMALL,
                 "--fit-on", str(other), "--out", out, "--examples", "0"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert f"extractor fit: supervised, fitted on {other.resolve()} (18 images)" in printed
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["supervised"] is True and "folds" not in metrics


def test_the_report_never_ranks_supervised_against_unsupervised(photos, tmp_path):
    runs = []
    for name, params in (("gch", {}), ("bovw", BOVW_PARAMS)):
        runs.append(tmp_path / name)
        run_folder_benchmark(
            photos, runs[-1], extractor_name=name, extractor_params=params,
            options=BenchmarkOptions(folds=3, n_examples=0),
        )  # fmt: skip
    markdown = write_report(runs, tmp_path / "report").markdown.read_text()
    unsupervised = markdown.split("### Unsupervised runs")[1].split("###")[0]
    supervised = markdown.split("### Supervised runs")[1].split("###")[0]
    assert "| gch" in unsupervised and "| bovw" not in unsupervised
    assert "| bovw" in supervised and "| gch" not in supervised
    assert "bovw: supervised, cross-fitted in 3 folds" in markdown
