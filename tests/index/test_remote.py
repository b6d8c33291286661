"""What the server backends share (`cbir.index.remote`): ordering a query's candidates."""

from __future__ import annotations

import numpy as np

from cbir.evaluation.trec import write_run
from cbir.index.remote import top_k


def test_scores_equal_in_float32_tie_and_break_by_id(tmp_path) -> None:
    # Elasticsearch's 0.1 parsed from JSON and a float32 0.1 recomputed here differ as
    # Python floats but are one float32: they tie, and the tie goes to the higher id.
    server, recomputed = 0.1, float(np.float32(0.1))
    assert server != recomputed and np.float32(server) == np.float32(recomputed)
    ids, scores = top_k(["b", "a", "c"], [server, recomputed, 0.5], k=3, complete=True,
                        tolerance=1e-6)  # fmt: skip
    assert ids == ["c", "b", "a"]
    write_run(tmp_path / "run.txt", ["q"], [ids], np.array([scores], np.float32), tag="t")


def test_the_elasticsearch_client_json_round_trips_floats_exactly() -> None:
    from cbir.index.elasticsearch_json import serializers

    values = np.random.default_rng(1).standard_normal(256).astype(np.float32).tolist()
    body = {"query_vector": values, "id": "ü/ß"}
    for mimetype, serializer in serializers().items():
        line = serializer.dumps(body if "ndjson" not in mimetype else [body, body])
        back = serializer.loads(line)
        assert (back if "ndjson" not in mimetype else back[1]) == body


def test_near_ties_and_inexact_scores_are_rescored_from_the_vectors() -> None:
    from cbir.index.remote import rescore_near_ties

    query = np.array([0.6, 0.8], np.float32)
    stored = {
        "a": np.array([1.0, 0.0], np.float32),  # 0.6
        "b": np.array([0.0, 1.0], np.float32),  # 0.8
        "c": np.array([0.6, 0.8], np.float32),  # 1.0
        "n": np.array([-1.0, 0.0], np.float32),  # -0.6
    }
    asked: list[set[str]] = []

    def vectors_of(ids: set[str]) -> dict[str, np.ndarray]:
        asked.append(ids)
        return {id_: stored[id_] for id_ in ids if id_ != "gone"}

    # the server's rounding: b and c 2e-7 apart (near-tied), "n" from an inexact map, "gone"
    # deleted since (it keeps its score), "a" far from all and exact (left alone)
    answers = [(["c", "b", "a", "n", "gone"], [0.8000002, 0.8, 0.59, -0.59999, -2.0])]
    rescore_near_ties(query[None], answers, vectors_of, 1e-6, lambda s: s < 0)
    assert asked == [{"b", "c", "n", "gone"}]  # one request for the whole batch
    assert answers[0][1] == [1.0, float(np.float32(0.8)), 0.59, float(np.float32(-0.6)), -2.0]
