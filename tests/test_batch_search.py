"""`cbir index` + `cbir search --batch` give the benchmark's figures: one pipeline.

The benchmark builds its collection through the indexing code and searches it through the
collection's own search, so a user who indexes a folder and runs its queries gets the very
run the benchmark scored: the same lines, and the same metrics to 1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cbir.cli import main
from cbir.evaluation.metrics import mean_metrics, per_query_metrics
from cbir.evaluation.trec import read_qrels, read_run, trec_order

PATTERNS = ("rows", "columns", "checks")
BOVW_SMALL = ["-p", "vocabulary_size=16", "-p", "vocabulary_images=200"]


def textured_image(rng: np.random.Generator, pattern: str, size: int = 32) -> np.ndarray:
    """Stripes or checks of a random period and colour, with noise: a class is a texture."""
    period = int(rng.integers(3, 7))
    y, x = np.mgrid[:size, :size]
    cells = {"rows": y // period, "columns": x // period, "checks": y // period + x // period}
    mask = (cells[pattern] % 2).astype(bool)
    colour = rng.integers(60, 200, 3)
    image = np.where(mask[..., None], colour, 255 - colour) + rng.integers(-30, 31, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def textured_folder(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for pattern in PATTERNS:
        (root / pattern).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(textured_image(rng, pattern)).save(root / pattern / f"{i:02d}.png")
    return root


@pytest.fixture
def split(tmp_path) -> tuple[Path, Path]:
    return textured_folder(tmp_path / "index", 10, seed=1), textured_folder(
        tmp_path / "queries", 4, seed=2
    )


def scored(run_file: Path, qrels_file: Path, depth: int) -> dict[str, float]:
    """The project's metrics of a run file against its qrels."""
    run, qrels = read_run(run_file), read_qrels(qrels_file)
    relevance = np.zeros((len(run), depth), dtype=bool)
    n_retrieved = np.zeros(len(run), dtype=np.int64)
    n_relevant = np.zeros(len(run), dtype=np.int64)
    for row, (query, docs) in enumerate(sorted(run.items())):
        ids = list(docs)
        ordered = [ids[i] for i in trec_order(ids, list(docs.values()))][:depth]
        relevant = qrels.get(query, {})
        relevance[row, : len(ordered)] = [relevant.get(doc, 0) > 0 for doc in ordered]
        n_retrieved[row] = len(ordered)
        n_relevant[row] = sum(value > 0 for value in relevant.values())
    per_query = per_query_metrics(relevance, n_relevant, depth, n_retrieved=n_retrieved)
    return mean_metrics(per_query, n_relevant)


@pytest.mark.parametrize(
    "extractor", [["-e", "gch"], ["-e", "bovw", *BOVW_SMALL]], ids=["gch", "bovw-fused"]
)
def test_index_and_batch_search_give_the_benchmark_figures(split, tmp_path, extractor):
    index_folder, queries = split
    depth = 20
    collection, run, qrels = tmp_path / "col", tmp_path / "run.txt", tmp_path / "qrels.txt"
    assert main(["-q", "index", str(index_folder), "-c", str(collection), *extractor]) == 0
    assert main([
        "-q", "search", "--batch", str(queries), "-c", str(collection), "--run", str(run),
        "--qrels", str(qrels), "--depth", str(depth),
    ]) == 0  # fmt: skip
    out = tmp_path / "bench"
    assert main([
        "-q", "benchmark", "folder", str(index_folder), "--queries", str(queries),
        "--out", str(out), "--depth", str(depth), "--examples", "0", *extractor,
    ]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.read_text() == (out / "run.txt").read_text()  # the very same run, line for line
    mine = scored(run, qrels, depth)
    for name in ("map_cut_20", "P_10", "ndcg_cut_10", "recip_rank", "map_at_20_normalised"):
        assert mine[name] == pytest.approx(metrics[name], abs=1e-6), name
    assert metrics["supervised"] == (extractor[1] == "bovw")
    if extractor[1] == "bovw":  # fitted on the index folder, its queries apart: honest
        assert metrics["extractor_fit"].startswith("supervised, fitted on the index images")
        assert "+class_fusion" in run.read_text().split()[5]


def test_batch_search_leaves_each_query_out_of_its_own_results(split, tmp_path):
    index_folder, _ = split
    collection, run = tmp_path / "col", tmp_path / "run.txt"
    assert main(["-q", "index", str(index_folder), "-c", str(collection), "-e", "gch"]) == 0
    assert main([
        "-q", "search", "--batch", str(index_folder), "-c", str(collection), "--run", str(run),
        "--exclude-self", "--depth", "5",
    ]) == 0  # fmt: skip
    rankings = read_run(run)
    assert len(rankings) == 30
    assert all(query not in docs and len(docs) == 5 for query, docs in rankings.items())


def test_batch_search_user_errors(split, tmp_path, capsys):
    index_folder, queries = split
    collection = tmp_path / "col"
    assert main(["-q", "index", str(index_folder), "-c", str(collection), "-e", "gch"]) == 0
    assert main(["search", "--batch", str(queries), "-c", str(collection)]) == 2
    assert "--batch needs --run FILE" in capsys.readouterr().err
    assert main(["search", "-c", str(collection)]) == 2
    assert "give a query IMAGE, or --batch" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["search", "--batch", str(empty), "-c", str(collection), "--run", "r"]) == 2
    assert "holds no images" in capsys.readouterr().err
