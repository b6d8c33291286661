"""The command line, run as a user runs it: a real `cbir` process on generated files."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cbir.collection import Collection
from cbir.evaluation.trec import read_run, write_qrels


def cbir(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cbir.cli", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300,
    )  # fmt: skip


def test_help_lists_commands():
    result = cbir("--help")
    assert result.returncode == 0
    for command in ("benchmark", "index", "search", "delete", "stats", "verify"):
        assert command in result.stdout


def test_index_then_search(labelled_folder, tmp_path):
    collection = tmp_path / "col"
    first = cbir("index", str(labelled_folder), "--collection", str(collection), "-e", "gch")
    assert first.returncode == 0, first.stderr
    assert "added 12" in first.stdout
    again = cbir("index", str(labelled_folder), "--collection", str(collection))
    assert "added 0, already indexed 12" in again.stdout  # idempotent by content checksum
    query = labelled_folder / "green" / "green-0.png"
    result = cbir("search", str(query), "--collection", str(collection), "-k", "4", "--json")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)["results"]
    assert len(hits) == 4 and set(hits[0]) == {"id", "score", "label", "path"}
    assert hits[0]["id"] == "green/green-0.png" and hits[0]["score"] == pytest.approx(1, abs=1e-5)
    assert all(hit["label"] == "green" for hit in hits)  # colour classes separate under gch
    table = cbir("search", str(query), "--collection", str(collection), "-k", "2")
    assert "green/green-0.png" in table.stdout.splitlines()[0]


def test_unreadable_images_are_skipped_and_counted(labelled_folder, tmp_path):
    (labelled_folder / "red" / "broken.png").write_bytes(b"\x89PNG broken")
    result = cbir("index", str(labelled_folder), "--collection", str(tmp_path / "c"))
    assert result.returncode == 0 and "unreadable 1" in result.stdout
    assert "broken.png" in result.stderr
    strict = cbir("index", str(labelled_folder), "-c", str(tmp_path / "d"), "--strict")
    assert strict.returncode == 2 and "broken.png" in strict.stderr


def test_extractor_mismatch_is_refused(labelled_folder, tmp_path):
    cbir("index", str(labelled_folder), "-c", str(tmp_path / "c"), "-e", "gch")
    result = cbir("index", str(labelled_folder), "-c", str(tmp_path / "c"), "-e", "hog")
    assert result.returncode == 2 and "built with extractor 'gch'" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["search", "nope.png", "-c", "nowhere"], "not a collection"),
        (["index", "nowhere", "-c", "col", "-e", "nonsense"], "unknown extractor 'nonsense'"),
        (
            ["benchmark", "cifar10", "--out", "out", "--data", "empty-dir", "--no-download"],
            "CBIR_DATA_DIR",
        ),
    ],
)
def test_user_errors_are_one_line_exit_2(args, message, tmp_path):
    (tmp_path / "empty-dir").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "cbir.cli", *args], capture_output=True, text=True,
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["gch", "hog"])
def test_indexing_cifar10_keeps_its_32x32_images_at_their_size(official_cifar, tmp_path, name):
    # gch and hog describe files at a photo size; CIFAR-10 indexed from the dataset stays
    # 32x32, as `cbir benchmark cifar10` describes it
    collection = tmp_path / "c"
    result = cbir(
        "index", "cifar10", "-c", str(collection), "-e", name,
        "--data", str(official_cifar.parent),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((collection / "manifest.json").read_text())
    assert manifest["extractor"]["params"]["image_size"] == 32


def test_benchmark_on_official_format_agrees_with_trec_eval(official_cifar, tmp_path):
    import pytrec_eval

    out = tmp_path / "run"
    result = cbir(
        "benchmark", "cifar10", "--extractor", "hog", "--out", str(out),
        "--data", str(official_cifar.parent), "--depth", "25",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_queries"] == 30 and metrics["n_index"] == 100
    assert metrics["dataset"] == "CIFAR-10 (official)" and metrics["extractor"]["name"] == "hog"
    assert set(metrics["timings"]) >= {"extract_s", "index_s", "search_s", "evaluate_s", "total_s"}
    run = read_run(out / "run.txt")
    assert len(run) == 30 and all(len(docs) == 25 for docs in run.values())

    # Score the written run with trec_eval itself, from qrels built the official way.
    from cbir.datasets import load_cifar10

    data = load_cifar10(official_cifar.parent, download=False)
    qrels_path = tmp_path / "qrels.txt"
    write_qrels(qrels_path, data.test.ids, data.test.labels, data.train.ids, data.train.labels)
    qrels = {}
    for line in qrels_path.read_text().splitlines():
        qid, _, doc, rel = line.split()
        qrels.setdefault(qid, {})[doc] = int(rel)
    evaluator = pytrec_eval.RelevanceEvaluator(
        qrels, {"map_cut.25", "P.10", "ndcg_cut.10", "recip_rank"}
    )
    trec = evaluator.evaluate(run)
    for ours, theirs in (
        ("map_cut_25", "map_cut_25"),
        ("P_10", "P_10"),
        ("ndcg_cut_10", "ndcg_cut_10"),
        ("recip_rank", "recip_rank"),
    ):
        expected = np.mean([values[theirs] for values in trec.values()])
        assert metrics[ours] == pytest.approx(expected, abs=1e-6), ours
    rows = (out / "per_query.tsv").read_text().splitlines()
    assert len(rows) == 31 and rows[0].startswith("query_id\tlabel\tn_relevant")


@pytest.mark.dataset
def test_full_cifar10_gch_benchmark_agrees_with_trec_eval(real_data_dir, tmp_path):
    """The benchmark the README promises, on the real data, with trec_eval as the judge on a
    sample of queries (full qrels would be 50 million lines)."""
    import pytrec_eval

    out = tmp_path / "gch"
    result = cbir(
        "benchmark", "cifar10", "-e", "gch", "--out", str(out), "--data", str(real_data_dir)
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_queries"] == 10_000 and metrics["n_index"] == 50_000
    assert 0 < metrics["map_cut_100"] <= 0.02
    assert 0 < metrics["map_at_100_normalised"] <= 1
    print(result.stdout)

    from cbir.datasets import load_cifar10

    data = load_cifar10(real_data_dir)
    run = read_run(out / "run.txt")
    assert len(run) == 10_000
    sample = data.test.ids[::100]  # 100 queries, 10 per class
    label_of_query = dict(zip(data.test.ids, data.test.labels.tolist(), strict=True))
    by_label = {}
    for doc, label in zip(data.train.ids, data.train.labels.tolist(), strict=True):
        by_label.setdefault(label, {})[doc] = 1
    qrels = {q: by_label[label_of_query[q]] for q in sample}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"map_cut.100", "P.10"}).evaluate(
        {q: run[q] for q in sample}
    )
    per_query = {}
    lines = (out / "per_query.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    for line in lines[1:]:
        values = dict(zip(header, line.split("\t"), strict=True))
        per_query[values["query_id"]] = values
    for q in sample:
        assert float(per_query[q]["map_cut_100"]) == pytest.approx(trec[q]["map_cut_100"], abs=1e-6)
        assert float(per_query[q]["P_10"]) == pytest.approx(trec[q]["P_10"], abs=1e-6)
    assert Path(out / "run.txt").stat().st_size > 0


def test_stats_delete_and_verify(labelled_folder, tmp_path):
    collection = str(tmp_path / "col")
    assert cbir("index", str(labelled_folder), "-c", collection).returncode == 0
    stats = json.loads(cbir("stats", "-c", collection, "--json").stdout)
    assert stats["count"] == 12 and stats["labels"] == {"blue": 4, "green": 4, "red": 4}
    assert "12 images" in cbir("stats", "-c", collection).stdout
    deleted = cbir("delete", "-c", collection, "red/red-0.png", "red/red-1.jpg", "nope")
    assert deleted.returncode == 0 and "deleted 2; the collection holds 10" in deleted.stdout
    assert "'nope'" in deleted.stderr
    query = labelled_folder / "red" / "red-0.png"
    found = json.loads(cbir("search", str(query), "-c", collection, "-k", "12", "--json").stdout)
    ids = {hit["id"] for hit in found["results"]}
    assert len(ids) == 10 and not ids & {"red/red-0.png", "red/red-1.jpg"}
    verify = cbir("verify", "-c", collection)
    assert verify.returncode == 0 and "OK" in verify.stdout
    conn = sqlite3.connect(tmp_path / "col" / "metadata.sqlite")
    with conn:
        conn.execute("DELETE FROM vectors WHERE id = 'blue/blue-2.webp'")
    conn.close()
    broken = cbir("verify", "-c", collection)
    assert broken.returncode == 1 and "DAMAGED" in broken.stdout
    assert "1 image rows without a vector: 'blue/blue-2.webp'" in broken.stdout
    report = json.loads(cbir("verify", "-c", collection, "--json").stdout)
    assert report["ok"] is False and report["counts"]["vectors"] == 9
    assert cbir("verify", "-c", str(tmp_path / "nothing")).returncode == 2


def test_a_second_writer_gets_a_clear_error(labelled_folder, tmp_path):
    folder = tmp_path / "col"
    cbir("index", str(labelled_folder), "-c", str(folder))
    with Collection.open(folder, writer=True):  # this test process is writing
        for args in (["index", str(labelled_folder)], ["delete", "red/red-0.png"]):
            result = cbir(*args, "-c", str(folder), "--wait", "0.2")
            assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
            assert f"being written by process {os.getpid()}" in result.stderr
    assert cbir("delete", "red/red-0.png", "-c", str(folder)).returncode == 0


def test_extractor_parameters_must_match_the_collection(labelled_folder, tmp_path):
    folder = str(tmp_path / "col")
    cbir("index", str(labelled_folder), "-c", folder, "-e", "gch", "-p", "bins=64")
    same = cbir("index", str(labelled_folder), "-c", folder, "-p", "bins=64")
    assert same.returncode == 0 and "already indexed 12" in same.stdout
    other = cbir("index", str(labelled_folder), "-c", folder, "-p", "bins=32")
    assert other.returncode == 2 and "was built with gch" in other.stderr


def test_a_killed_run_verifies_and_resumes(labelled_folder, tmp_path):
    folder = tmp_path / "col"
    run = subprocess.Popen(
        [sys.executable, "-m", "cbir.cli", "index", str(labelled_folder), "-c", str(folder),
         "--batch-size", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while not (folder / "manifest.json").exists() and run.poll() is None:
        time.sleep(0.005)
    time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    assert cbir("verify", "-c", str(folder)).returncode == 0
    resumed = cbir("index", str(labelled_folder), "-c", str(folder))
    assert resumed.returncode == 0 and "the collection holds 12 images" in resumed.stdout
