"""`cbir bench search` and its parts: synthetic data, meters, the JSON it writes.

Tiny sizes only: these prove the benchmark measures what it says, not how fast anything is
(figures of speed live in benchmarks/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cbir.cli import main
from cbir.errors import CbirError
from cbir.index.spec import parse_spec
from cbir.speed.data import Mixture
from cbir.speed.measure import latencies_ms, machine, recall
from cbir.speed.search import SearchBenchmark, run_search_benchmark


def test_mixture_is_seeded_normalised_and_clustered() -> None:
    mixture = Mixture(32, clusters=8, seed=5)
    first, again = mixture.sample(3000, 0), mixture.sample(3000, 0)
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.float32 and first.shape == (3000, 32)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    queries = mixture.sample(100, 1)
    assert not np.isin(queries[:, 0], first[:, 0]).any()  # another draw, not a subset
    assert not np.array_equal(Mixture(32, clusters=8, seed=6).sample(10, 0), first[:10])
    # clustered: a point's nearest neighbours are far closer than a random pair
    cosines = first[:200] @ first.T
    nearest = np.sort(cosines, axis=1)[:, -11:-1].mean()
    assert nearest > 0.7 > 0.2 > abs(cosines.mean())
    # embedding-like: a few principal directions carry most of the variance within a cluster
    spectrum = np.linalg.svd(mixture.sample(2000, 2) - first.mean(0), compute_uv=False) ** 2
    assert spectrum[:8].sum() > 0.5 * spectrum.sum()


def test_recall() -> None:
    assert recall([["a", "b"], ["c", "d"]], [["b", "a"], ["c", "x"]]) == 0.75
    assert recall([[]], [[]]) == 1.0


def test_latencies_are_positive_and_ordered() -> None:
    calls = []
    figures = latencies_ms(calls.append, np.zeros((30, 4), np.float32))
    assert len(calls) == 30 + 5  # the warm-up calls are not timed
    assert all(call.shape == (1, 4) for call in calls)
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]


def test_machine_description() -> None:
    info = machine()
    assert info["cpu"] and info["cores"] >= 1 and info["numpy"] == np.__version__
    assert isinstance(info["openblas_env"], dict)


@pytest.mark.parametrize(("spec", "perfect"), [("flat", True), ("hnsw:M=8", False)])
def test_run_search_benchmark(spec: str, perfect: bool, tmp_path: Path) -> None:
    config = SearchBenchmark(n=2000, dim=16, queries=60, single=20, k=10, index=spec, seed=1)
    result = run_search_benchmark(config, workdir=tmp_path)
    exact, ann, params = result["exact"], result["ann"], result["params"]
    for figures in (exact, ann):
        assert figures["build_s"] > 0 and figures["memory_mb"] > 0
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
        assert figures["qps_batch"] == pytest.approx(60 / figures["batch_s"], rel=0.02)
    assert ann["active"] == str(parse_spec(spec))
    assert (ann["recall_at_10"] == 1.0) if perfect else (0.9 <= ann["recall_at_10"] <= 1.0)
    assert ann["memory_mb"] > 2000 * 16 * 4 / 2**20  # it holds the vectors
    assert {"n", "dim", "queries", "spec", "seed", "threads", "cpu", "data"} <= params.keys()
    assert (params["n"], params["dim"], params["seed"], params["spec"]) == (2000, 16, 1, spec)
    assert result["speedup_p50"] > 0 and result["speedup_batch"] > 0
    assert list(tmp_path.iterdir()) == []  # the scratch indexes are cleaned up
    json.dumps(result)  # plain JSON all the way down


def test_invalid_configuration() -> None:
    with pytest.raises(CbirError, match="queries"):
        run_search_benchmark(SearchBenchmark(n=10, dim=4, queries=0))


def test_cli_prints_a_table_and_writes_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "results" / "run.json"
    argv = ["bench", "search", "--n", "800", "--dim", "8", "--queries", "30", "--single", "10",
            "--k", "5", "--index", "hnsw:M=8,ef_construction=40", "--search", "ef=32",
            "--sweep", "ef=64", "--sweep", "ef=8",
            "--out", str(out), "--workdir", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "exact (ExactIndex)" in printed and "faiss hnsw:M=8,ef_construction=40" in printed
    assert "recall@5" in printed and str(out) in printed
    result = json.loads(out.read_text())
    assert {"p50_ms", "p99_ms", "qps_batch", "build_s"} <= result["exact"].keys()
    assert {"build_s", "p50_ms", "p99_ms", "qps_batch", "recall_at_5", "memory_mb"} <= result[
        "ann"
    ].keys()
    assert result["ann"]["search"] == "ef=32"
    assert [point["search"] for point in result["sweep"]] == ["ef=64", "ef=8"]
    assert all(0 < point["recall_at_5"] <= 1 for point in result["sweep"])
    assert "searched with ef=64" in printed


def test_cli_rejects_a_bad_spec_at_once(capsys) -> None:
    assert main(["bench", "search", "--n", "10", "--dim", "4", "--index", "hnsw:X=1"]) == 2
    assert "valid parameters: M, ef_construction" in capsys.readouterr().err
    assert main(["bench", "search", "--n", "10", "--dim", "4", "--sweep", "nprobe=2"]) == 2
    assert "valid parameters: ef" in capsys.readouterr().err
