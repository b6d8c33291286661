"""`cbir benchmark folder`: leave-one-out over a labelled folder, judged by trec_eval itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval
from PIL import Image

from cbir.cli import main
from cbir.collection import Collection
from cbir.datasets import Dataset
from cbir.errors import CbirError
from cbir.evaluation.metrics import IPREC_RECALL_LEVELS
from cbir.evaluation.quality_run import BenchmarkOptions, run_benchmark, run_folder_benchmark
from cbir.evaluation.trec import read_run
from cbir.features import get_extractor
from cbir.features.base import Extractor

from .conftest import CLASSES, PLANTED_COPY, PLANTED_ORIGINAL

N_IMAGES = sum(count for count, _ in CLASSES.values()) + 1  # + the planted copy
TREC_MEASURES = {
    "map_cut.100", "P.10", "P.100", "ndcg_cut.10", "recip_rank", "map", "iprec_at_recall",
}  # fmt: skip
OURS_TO_TREC = {
    "map_cut_100": "map_cut_100", "P_10": "P_10", "P_100": "P_100",
    "ndcg_cut_10": "ndcg_cut_10", "recip_rank": "recip_rank", "map_all": "map",
}  # fmt: skip


def read_per_query(run_dir: Path) -> dict[str, dict[str, str]]:
    lines = (run_dir / "per_query.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:]]
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def leave_one_out_qrels(ids: list[str]) -> dict[str, dict[str, int]]:
    """Relevant = same class folder, the query itself excepted; R = 0 queries are absent."""
    label = {doc: doc.split("/")[0] for doc in ids}
    qrels = {q: {d: 1 for d in ids if d != q and label[d] == label[q]} for q in ids}
    return {q: docs for q, docs in qrels.items() if docs}


def test_folder_run_files_and_counts(folder_runs):
    out = folder_runs["hog"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "leave-one-out"
    assert metrics["n_queries"] == metrics["n_index"] == N_IMAGES
    assert metrics["skipped"] == {"unlabelled": 1, "unreadable": 1}
    assert metrics["n_queries_without_relevant"] == 1  # the "solo" class
    assert metrics["n_queries_evaluated"] == N_IMAGES - 1
    assert metrics["extractor_fit"] == "not needed"
    assert metrics["map_cut_ceiling"] == 1.0  # every R is below the depth
    for name in ("P_10", "map_all", "map_cut_100", "map_at_100_normalised", "ndcg_cut_10"):
        assert 0 < metrics[name] <= 1, name
    assert metrics["iprec_at_recall"]["recall"] == list(IPREC_RECALL_LEVELS)

    run = read_run(out / "run.txt")
    assert len(run) == N_IMAGES
    for query, docs in run.items():
        assert query not in docs  # left out of its own results
        assert len(docs) == N_IMAGES - 1  # depth 100 > N - 1: the whole ranking of the others
    # Spaces in file names are percent-encoded so that the TREC files stay well-formed.
    assert PLANTED_COPY.replace(" ", "%20") in run


def test_folder_run_agrees_with_trec_eval(folder_runs):
    """Every measure per query and on the mean, map_all and the precision-recall curve
    included (the run holds each query's whole ranking), with and without near-duplicates."""
    out = folder_runs["hog"]
    metrics = json.loads((out / "metrics.json").read_text())
    per_query = read_per_query(out)
    run = read_run(out / "run.txt")
    qrels = leave_one_out_qrels(list(run))
    theirs = pytrec_eval.RelevanceEvaluator(qrels, TREC_MEASURES).evaluate(run)
    assert set(theirs) == {q for q, row in per_query.items() if int(row["n_relevant"]) > 0}
    for query, values in theirs.items():
        for ours, trec in OURS_TO_TREC.items():
            assert float(per_query[query][ours]) == pytest.approx(values[trec], abs=1e-6)

    iprec_names = [f"iprec_at_recall_{level:.2f}" for level in IPREC_RECALL_LEVELS]

    def check_means(summary: dict, queries: list[str]) -> None:
        assert summary["n_queries_evaluated"] == len(queries)
        for ours, trec in OURS_TO_TREC.items():
            expected = np.mean([theirs[q][trec] for q in queries])
            assert summary[ours] == pytest.approx(expected, abs=1e-6), ours
        curve = [np.mean([theirs[q][name] for q in queries]) for name in iprec_names]
        assert summary["iprec_at_recall"]["precision"] == pytest.approx(curve, abs=1e-6)

    check_means(metrics, list(theirs))
    kept = [q for q in theirs if per_query[q]["near_duplicate"] == "0"]
    assert 0 < len(kept) < len(theirs)
    check_means(metrics["without_near_duplicates"], kept)


def test_planted_copy_is_the_only_near_duplicate_pair(folder_runs):
    out = folder_runs["gch"]
    flagged = {q for q, row in read_per_query(out).items() if row["near_duplicate"] == "1"}
    pair = {PLANTED_ORIGINAL.replace(" ", "%20"), PLANTED_COPY.replace(" ", "%20")}
    assert flagged == pair
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["near_duplicates"]["count"] == 2
    rows = (out / "near_duplicates.tsv").read_text().splitlines()[1:]
    assert {tuple(row.split("\t")[::2][:2]) for row in rows} == {tuple(pair), tuple(pair)[::-1]}


def test_examples_are_saved_for_the_report(folder_runs):
    examples = json.loads((folder_runs["hog"] / "examples" / "examples.json").read_text())
    assert len(examples["queries"]) == 4
    assert len({q["label"] for q in examples["queries"]}) == 3  # one per class; never "solo"
    for query in examples["queries"]:
        assert (folder_runs["hog"] / "examples" / query["thumbnail"]).is_file()
        assert len(query["results"]) == 10
        for result in query["results"]:
            assert result["id"] != query["id"]
            assert result["relevant"] == (result["label"] == query["label"])


def test_extractor_from_a_collection(image_folder, tmp_path, capsys):
    collection = tmp_path / "col"
    extractor = get_extractor("gch", bins=16)
    Collection.create(collection, extractor).close()
    out = tmp_path / "run"
    code = main([
        "-q", "benchmark", "folder", str(image_folder), "--extractor-from", str(collection),
        "--out", str(out), "--examples", "0", "--near-duplicate-threshold", "2",
    ])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["extractor"] == {"name": "gch", "params": extractor.params}
    assert metrics["extractor_fit"].startswith("loaded from collection")
    assert "near_duplicates" not in metrics and not (out / "examples").exists()
    assert "leave-one-out" in capsys.readouterr().out

    code = main([
        "benchmark", "folder", str(image_folder), "--extractor-from", str(collection), "-e", "hog",
        "--out", str(out),
    ])  # fmt: skip
    assert code == 2
    assert "built with extractor 'gch'" in capsys.readouterr().err


class CentredPixels(Extractor):
    """A real extractor that needs fitting: pixels minus the mean image it was fitted on."""

    name = "centred-pixels"
    needs_fit = True

    @property
    def dim(self) -> int:
        return 8 * 8 * 3

    @property
    def input_size(self) -> tuple[int, int]:
        return (8, 8)

    def fit(self, images, labels=None) -> CentredPixels:
        self.fitted_on_ = len(images)
        self.mean_ = np.asarray(images, dtype=np.float32).mean(axis=0).ravel()
        return self

    def _extract_batch(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).astype(np.float32) - self.mean_


def three_classes_of_four(seed: int) -> Dataset:
    """Twelve random 8x8 images, four per class."""
    labels = np.repeat(np.arange(3), 4)
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    ids = [f"c{label}/{i}" for i, label in enumerate(labels)]
    return Dataset(ids, pixels, labels, ["a", "b", "c"])


def leave_one_out_run(images: Dataset, extractor: Extractor, out: Path) -> dict:
    return run_benchmark(
        images, images, extractor, out, BenchmarkOptions(depth=5, n_examples=0),
        leave_one_out_queries=True,
    )  # fmt: skip


def test_an_extractor_that_needs_fitting_is_fitted_on_the_folder(tmp_path):
    images = three_classes_of_four(seed=3)
    extractor = CentredPixels()
    metrics = leave_one_out_run(images, extractor, tmp_path)
    assert extractor.fitted_on_ == 12
    # it learns without labels, so fitting on every image (queries included) leaks no label
    assert metrics["extractor_fit"] == (
        "fitted (no labels) on the benchmark, queries included (12 images) (no label used)"
    )
    assert metrics["supervised"] is False
    assert metrics["n_queries_evaluated"] == 12


class QueriesApart(CentredPixels):
    """Describes queries by another route, as the CNN does with `query_tta`."""

    name = "queries-apart"
    query_images = 0

    @property
    def distinct_queries(self) -> bool:
        return True

    def _extract_query_batch(self, images: np.ndarray) -> np.ndarray:
        self.query_images += len(images)
        return self._extract_batch(images)


def test_queries_go_through_the_query_route_even_when_leaving_one_out(tmp_path):
    images = three_classes_of_four(seed=4)
    extractor = QueriesApart()
    metrics = leave_one_out_run(images, extractor, tmp_path)
    assert extractor.query_images == 12 and "extract_queries_s" in metrics["timings"]
    leave_one_out_run(images, CentredPixels(), tmp_path / "plain")
    assert read_run(tmp_path / "run.txt") == read_run(tmp_path / "plain" / "run.txt")


def test_user_errors(tmp_path, capsys):
    flat = tmp_path / "flat"
    (flat / "only").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(flat / name)
    with pytest.raises(CbirError, match="no class subfolders"):
        run_folder_benchmark(flat, tmp_path / "out")
    Image.new("RGB", (8, 8)).save(flat / "only" / "c.png")
    with pytest.raises(CbirError, match="at least two images"):
        run_folder_benchmark(flat, tmp_path / "out")
    assert (
        main(["benchmark", "folder", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    )
    assert "is not a folder of images" in capsys.readouterr().err
