"""TREC run and qrels files: trec_eval's order, exact score text, round trips, validation."""

from __future__ import annotations

import numpy as np
import pytest

from cbir.evaluation.trec import (
    format_score,
    read_qrels,
    read_run,
    tiebreak_ranks,
    trec_order,
    write_qrels,
    write_run,
)


def test_trec_order_breaks_ties_by_id_descending_as_strings():
    ids = ["d9", "d10", "d2", "d1"]
    # As strings d9 > d2 > d10, unlike the numbers.
    assert trec_order(ids, [1.0, 1.0, 1.0, 2.0]) == [3, 0, 2, 1]


def test_trec_order_ties_negative_and_positive_zero():
    assert trec_order(["a", "b", "c"], [-0.0, 0.0, -1.0]) == [1, 0, 2]


def test_trec_order_compares_scores_as_float32():
    # Distinct as float64, equal once written as float32: the id decides, as in trec_eval.
    assert trec_order(["a", "b"], [1.0 + 1e-9, 1.0]) == [1, 0]


def test_trec_order_rejects_nan_and_mismatched_lengths():
    with pytest.raises(ValueError, match="NaN"):
        trec_order(["a", "b"], [1.0, float("nan")])
    with pytest.raises(ValueError, match="2 ids but 1 scores"):
        trec_order(["a", "b"], [1.0])


def test_format_score_round_trips_float32_and_keeps_neighbours_apart():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.standard_normal(1000).astype(np.float32),
            np.array([1 / 3, -0.0, 1e-40, 3e38, np.inf, -np.inf], dtype=np.float32),
        ]
    )
    for value in values:
        text = format_score(value)
        assert np.float32(float(text)) == value
        above = np.nextafter(value, np.float32(np.inf))
        if np.isfinite(above):
            # trec_eval parses into a double: adjacent float32 must stay strictly ordered.
            assert float(format_score(above)) > float(text)


def test_tiebreak_ranks_are_ascending_string_ranks():
    assert tiebreak_ranks(["d9", "d10", "d1"]).tolist() == [2, 1, 0]


def test_write_run_writes_trec_lines(tmp_path):
    path = tmp_path / "run.txt"
    write_run(path, ["q1", "q2"], [["d9", "d10"], ["d3"]], [[0.5, 0.5], [1 / 3]], tag="hog")
    assert path.read_text() == (
        "q1 Q0 d9 1 0.5 hog\nq1 Q0 d10 2 0.5 hog\nq2 Q0 d3 1 0.333333343 hog\n"
    )


def test_write_run_read_run_round_trip_with_short_and_empty_lists(tmp_path):
    rng = np.random.default_rng(1)
    query_ids = [f"q{i}" for i in range(6)]
    ranked_ids, scores = [], []
    for length in [5, 0, 3, 5, 1, 5]:
        ids = [f"d{j}" for j in rng.choice(40, size=length, replace=False)]
        values = rng.choice([-0.0, 0.25, 1 / 3, 2.0], size=length).astype(np.float32)
        order = trec_order(ids, values)
        ranked_ids.append([ids[i] for i in order])
        scores.append(values[order])
    path = tmp_path / "run.txt"
    write_run(path, query_ids, ranked_ids, scores)

    run = read_run(path)
    assert "q1" not in run  # an empty ranking writes no lines
    for qid, ids, values in zip(query_ids, ranked_ids, scores, strict=True):
        if not ids:
            continue
        assert list(run[qid]) == ids
        assert np.array_equal(np.float32(list(run[qid].values())), values)
    ranks = [int(line.split()[3]) for line in path.read_text().splitlines() if line[:2] == "q0"]
    assert ranks == [1, 2, 3, 4, 5]


def test_write_run_takes_a_padded_score_array(tmp_path):
    path = tmp_path / "run.txt"
    scores = np.array([[3.0, 2.0, 1.0], [5.0, -np.inf, -np.inf]], dtype=np.float32)
    write_run(path, ["a", "b"], [["x", "y", "z"], ["y"]], scores)
    assert read_run(path) == {"a": {"x": 3.0, "y": 2.0, "z": 1.0}, "b": {"y": 5.0}}


@pytest.mark.parametrize(
    ("ranked_ids", "scores", "message"),
    [
        ([["a", "b"]], [[1.0, 2.0]], "not descending"),
        ([["a", "b"]], [[1.0, 1.0]], "descending id order"),
        ([["b", "b"]], [[2.0, 1.0]], "appears twice"),
        ([["a b"]], [[1.0]], "whitespace"),
        ([[""]], [[1.0]], "empty"),
        ([["a", "b"]], [[1.0]], "2 ids but 1 scores"),
        ([["a"]], [[float("nan")]], "NaN"),
    ],
)
def test_write_run_refuses_what_trec_eval_would_read_differently(
    tmp_path, ranked_ids, scores, message
):
    path = tmp_path / "run.txt"
    with pytest.raises(ValueError, match=message):
        write_run(path, ["q"], ranked_ids, scores)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_qrels_lists_every_same_label_document(tmp_path):
    path = tmp_path / "qrels.txt"
    lines = write_qrels(
        path,
        query_ids=["q0", "q1", "q2", "q3", "q4"],
        # q2 unlabelled (None), q3 unlabelled (-1), q4 a label no index document has.
        query_labels=[0, 1, None, -1, 7],
        index_ids=["a", "b", "c", "d", "e"],
        index_labels=np.array([0, 1, 0, -1, 1]),
    )
    assert lines == 4
    assert path.read_text() == "q0 0 a 1\nq0 0 c 1\nq1 0 b 1\nq1 0 e 1\n"
    assert read_qrels(path) == {"q0": {"a": 1, "c": 1}, "q1": {"b": 1, "e": 1}}


def test_write_qrels_replaces_an_old_file_whole(tmp_path):
    path = tmp_path / "qrels.txt"
    path.write_text("old\n")
    assert write_qrels(path, ["q"], [None], ["a"], [0]) == 0
    assert path.read_text() == ""
    assert [p.name for p in tmp_path.iterdir()] == ["qrels.txt"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("q1 Q0 d1 1 0.5\n", "expected 6 fields, found 5"),
        ("q1 Q0 d1 1 high tag\n", "not a number"),
        ("q1 Q0 d1 1 0.5 t\nq1 Q0 d1 2 0.4 t\n", "repeats"),
    ],
)
def test_read_run_reports_the_bad_line(tmp_path, text, message):
    path = tmp_path / "run.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_run(path)


def test_read_qrels_keeps_judged_non_relevant_documents(tmp_path):
    path = tmp_path / "qrels.txt"
    path.write_text("q1 0 a 1\n\nq1 0 b 0\nq2 0 a 2\n")
    assert read_qrels(path) == {"q1": {"a": 1, "b": 0}, "q2": {"a": 2}}
