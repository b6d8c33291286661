"""Every metric agrees with trec_eval itself (pytrec_eval), per query and on the mean, to 1e-6.

The runs are built to hit trec_eval's corners: scores drawn from a handful of values (ties
everywhere, -0.0 against 0.0), ids that sort differently as strings and as numbers ('d9' > 'd10'),
rankings shorter than the depth or empty, queries with no relevant document retrieved, and R below
10 as well as above the depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import pytrec_eval

from cbir.evaluation.metrics import average_precision_full, mean_metrics, per_query_metrics
from cbir.evaluation.trec import (
    read_qrels,
    read_run,
    tiebreak_ranks,
    trec_order,
    write_qrels,
    write_run,
)

TOLERANCE = 1e-6
MEASURES = {"map_cut", "P", "ndcg_cut", "recip_rank", "map"}
SCORE_VALUES = np.array([-1.5, -0.0, 0.0, 1 / 3, 0.5, 2.0], dtype=np.float32)


@dataclass
class Case:
    query_ids: list[str]
    ranked_ids: list[list[str]]  # trec order
    scores: list[np.ndarray]
    qrels: dict[str, dict[str, int]]
    n_relevant: np.ndarray

    def pytrec_run(self) -> dict[str, dict[str, float]]:
        return {
            qid: dict(zip(ids, map(float, scores), strict=True))
            for qid, ids, scores in zip(self.query_ids, self.ranked_ids, self.scores, strict=True)
        }

    def relevance(self, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Our input: relevance in trec order, padded to `depth`, and each ranking's length."""
        relevance = np.zeros((len(self.query_ids), depth), dtype=bool)
        for row, (qid, ids) in enumerate(zip(self.query_ids, self.ranked_ids, strict=True)):
            judged = self.qrels.get(qid, {})
            relevance[row, : len(ids)] = [judged.get(doc, 0) >= 1 for doc in ids]
        return relevance, np.array([len(ids) for ids in self.ranked_ids])


def random_case(rng: np.random.Generator, depth: int, n_queries: int = 60) -> Case:
    n_docs = 3 * depth
    doc_ids = [f"d{j}" for j in range(n_docs)]
    case = Case([], [], [], {}, np.zeros(n_queries, dtype=np.int64))
    for q in range(n_queries):
        qid = f"q{q}"
        r = int(rng.choice([0, 1, 3, 9, 10, 25, depth + 7]))
        relevant = set(rng.choice(n_docs, size=r, replace=False).tolist())
        length = int(rng.choice([0, 1, 4, depth // 2, depth, depth]))
        # Some rankings retrieve no relevant document at all.
        pool = [j for j in range(n_docs) if j not in relevant] if q % 7 == 3 else range(n_docs)
        retrieved = rng.choice(pool, size=min(length, len(pool)), replace=False)
        ids = [doc_ids[j] for j in retrieved]
        scores = rng.choice(SCORE_VALUES, size=len(ids))
        order = trec_order(ids, scores)
        case.query_ids.append(qid)
        case.ranked_ids.append([ids[i] for i in order])
        case.scores.append(scores[order])
        if r:
            judged = {doc_ids[j]: 1 for j in relevant}
            # Judged non-relevant documents count in no measure.
            judged.update(
                {doc_ids[j]: 0 for j in range(n_docs) if j % 11 == 0 and j not in relevant}
            )
            case.qrels[qid] = judged
            case.n_relevant[q] = r
    return case


def evaluate(qrels, run, measures=MEASURES) -> dict[str, dict[str, float]]:
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


def assert_agrees(
    ours: dict[str, np.ndarray],
    query_ids: list[str],
    n_relevant: np.ndarray,
    depth: int,
    theirs: dict[str, dict[str, float]],
) -> None:
    # trec_eval leaves out queries absent from the qrels; ours score them 0.
    assert set(theirs) == {qid for qid, r in zip(query_ids, n_relevant, strict=True) if r > 0}
    names = ["P_10", f"P_{depth}", f"map_cut_{depth}", "ndcg_cut_10", "recip_rank"]
    for row, (qid, r) in enumerate(zip(query_ids, n_relevant, strict=True)):
        if qid not in theirs:
            assert all(ours[name][row] == 0.0 for name in ours)
            continue
        for name in names:
            assert ours[name][row] == pytest.approx(theirs[qid][name], abs=TOLERANCE), (qid, name)
        # trec_eval has no normalised map@k; it is the same sum over min(R, depth) instead of R.
        normalised = theirs[qid][f"map_cut_{depth}"] * r / min(r, depth)
        assert ours[f"map_at_{depth}_normalised"][row] == pytest.approx(normalised, abs=TOLERANCE)

    means = mean_metrics(ours, n_relevant)
    assert means["n_queries_evaluated"] == len(theirs)
    for name in names:
        their_mean = np.mean([values[name] for values in theirs.values()])
        assert means[name] == pytest.approx(their_mean, abs=TOLERANCE), name


@pytest.mark.parametrize(("depth", "seed"), [(20, 0), (20, 1), (100, 2)])
def test_top_k_metrics_agree_with_trec_eval(depth, seed):
    case = random_case(np.random.default_rng(seed), depth)
    relevance, n_retrieved = case.relevance(depth)
    ours = per_query_metrics(relevance, case.n_relevant, depth, n_retrieved=n_retrieved)
    # An empty ranking stays in the run, as trec_eval -c would count it.
    theirs = evaluate(case.qrels, case.pytrec_run())
    assert_agrees(ours, case.query_ids, case.n_relevant, depth, theirs)


def test_case_generator_reaches_the_corners():
    case = random_case(np.random.default_rng(0), depth=20)
    relevance, n_retrieved = case.relevance(20)
    ranked = n_retrieved > 0
    assert (ranked & (case.n_relevant > 0) & ~relevance.any(axis=1)).any()
    assert ((n_retrieved > 0) & (n_retrieved < 20)).any() and (n_retrieved == 0).any()
    assert (case.n_relevant > 20).any() and ((case.n_relevant > 0) & (case.n_relevant < 10)).any()
    tied = [len(set(s.tolist())) < len(s) for s in case.scores]
    assert sum(tied) > 10


def test_files_written_and_read_back_agree_with_trec_eval(tmp_path):
    """Labels -> qrels file, scores -> run files; trec_eval reads the files, we read the arrays."""
    rng = np.random.default_rng(5)
    depth, n_index, n_queries = 20, 150, 14
    index_ids = [f"d{j}" for j in rng.permutation(n_index)]
    index_labels = rng.integers(0, 5, size=n_index)
    index_labels[:6] = -1  # unlabelled index images are relevant to nothing
    query_ids = [f"q{i}" for i in range(n_queries)]
    query_labels = rng.integers(0, 5, size=n_queries)
    query_labels[:2] = [-1, 7]  # unlabelled, and a label with no index image: R = 0
    scores = rng.choice(SCORE_VALUES, size=(n_queries, n_index))
    scores[3] = rng.standard_normal(n_index).astype(np.float32)  # scores needing 9 digits

    full_order = [trec_order(index_ids, row) for row in scores]
    full_ids = [[index_ids[i] for i in order] for order in full_order]
    full_scores = np.stack([row[order] for row, order in zip(scores, full_order, strict=True)])
    write_run(tmp_path / "full.txt", query_ids, full_ids, full_scores)
    top_ids = [ids[:depth] for ids in full_ids]
    write_run(tmp_path / "top.txt", query_ids, top_ids, full_scores[:, :depth])
    n_lines = write_qrels(tmp_path / "qrels.txt", query_ids, query_labels, index_ids, index_labels)

    relevant = query_labels[:, None] == index_labels[None, :]
    relevant[query_labels == -1] = False
    n_relevant = relevant.sum(axis=1)
    assert n_lines == n_relevant.sum()
    qrels = read_qrels(tmp_path / "qrels.txt")

    top_relevance = np.take_along_axis(relevant, np.array(full_order)[:, :depth], axis=1)
    ours = per_query_metrics(top_relevance, n_relevant, depth)
    theirs = evaluate(qrels, read_run(tmp_path / "top.txt"))
    assert_agrees(ours, query_ids, n_relevant, depth, theirs)

    # map_all: trec_eval's map on a run that lists every index document.
    map_all = average_precision_full(scores, relevant, tiebreak_ranks(index_ids))
    their_map = evaluate(qrels, read_run(tmp_path / "full.txt"), {"map"})
    for qid, ap, r in zip(query_ids, map_all, n_relevant, strict=True):
        assert ap == pytest.approx(their_map[qid]["map"], abs=TOLERANCE) if r else ap == 0.0


@pytest.mark.parametrize("seed", [6, 7])
def test_average_precision_full_agrees_with_trec_eval_map(seed):
    rng = np.random.default_rng(seed)
    n_docs, n_queries = 400, 12
    ids = [f"d{j}" for j in rng.permutation(n_docs)]
    extremes = np.array([-np.inf, -1e-40, 1e-40, 3e38, np.inf], dtype=np.float32)
    scores = rng.choice(np.concatenate([SCORE_VALUES, extremes]), size=(n_queries, n_docs))
    relevant = rng.random((n_queries, n_docs)) < rng.choice([0.005, 0.05, 0.5], size=(n_queries, 1))
    relevant[0] = False

    ours = average_precision_full(scores, relevant, tiebreak_ranks(ids))
    qrels = {
        f"q{q}": {ids[j]: 1 for j in np.flatnonzero(row)}
        for q, row in enumerate(relevant)
        if row.any()
    }
    run = {f"q{q}": dict(zip(ids, map(float, row), strict=True)) for q, row in enumerate(scores)}
    theirs = evaluate(qrels, run, {"map"})
    assert ours[0] == 0.0 and "q0" not in theirs
    for q in range(1, n_queries):
        assert ours[q] == pytest.approx(theirs[f"q{q}"]["map"], abs=TOLERANCE)
