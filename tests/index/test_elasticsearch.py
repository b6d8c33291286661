"""Elasticsearch backend: request bodies (pure), and behaviour the contract suite does not
cover, against a live server (tests.servers.live starts one; skipped, with the reason, when
it cannot be obtained)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from cbir.errors import CbirError, DimensionMismatchError
from cbir.index import create_index
from cbir.index import elasticsearch_requests as req
from cbir.servers import free_port
from tests.index.batching import check_batches_match_the_exact_index
from tests.servers.live import elasticsearch_url  # noqa: F401 (fixture)


# --- pure request building -------------------------------------------------------------------
def test_reference_mapping_and_settings() -> None:
    graph = {"M": 24, "ef_construction": 80}
    body = req.index_body(64, "cosine", shards=2, replicas=1, graph=graph)
    assert body["settings"] == {"number_of_shards": 2, "number_of_replicas": 1}
    properties = body["mappings"]["properties"]
    assert {"id", "filename", "path", "label", "features"} <= set(properties)
    features = properties["features"]
    assert features["dims"] == 64 and features["index"] is True
    assert features["similarity"] == "cosine"
    assert features["index_options"] == {"type": "hnsw", "m": 24, "ef_construction": 80}
    ip = req.index_body(8, "ip", 1, 0, None)["mappings"]["properties"]["features"]
    assert ip["similarity"] == "max_inner_product"
    assert "index_options" not in ip  # flat: Elasticsearch's own m=16, ef_construction=100


def test_exact_query_scores_the_cosine_plus_one_sorted_by_score_then_id() -> None:
    body = req.exact_search(np.array([1.0, 0.0], np.float32), "cosine", 10)
    scored, zero_docs = body["query"]["bool"]["should"]
    script = scored["script_score"]["script"]
    assert script["source"] == "dotProduct(params.query_vector, 'features') + 1.0"
    assert scored["script_score"]["query"] == {"exists": {"field": "features"}}
    assert script["params"]["query_vector"] == [1.0, 0.0]
    # zero vectors (no `features`) join at the score of a similarity of 0
    assert zero_docs == {"constant_score": {"filter": req.ZERO_DOCS}}
    assert body["sort"] == [{"_score": "desc"}, {"id": "desc"}]
    zero = req.exact_search(np.zeros(2, np.float32), "cosine", 10)
    assert zero["query"] == {"constant_score": {"filter": {"match_all": {}}, "boost": 1.0}}


@pytest.mark.parametrize("mode", ["exact", "knn"])
def test_answers_are_lean_ids_and_scores_only(mode: str) -> None:
    query = np.array([0.6, 0.8], np.float32)
    body = (
        req.exact_search(query, "cosine", 10)
        if mode == "exact"
        else req.knn_search(query, "cosine", 10, 100)
    )
    assert body["_source"] is False and body["stored_fields"] == "_none_"
    assert "script_fields" not in body and "docvalue_fields" not in body
    assert req.FILTER_PATH == [
        "took", "responses.status", "responses.hits.hits.sort", "responses.error"
    ]  # fmt: skip
    # what a filtered response holds: sort values (float32 score, id) per hit
    sent = [0.95, 0.25] if mode == "knn" else [1.9, 0.5]  # knn: (1 + c) / 2; script: c + 1
    response = {"hits": {"hits": [{"sort": [sent[0], "b"]}, {"sort": [sent[1], "a"]}]}}
    ids, scores = req.parse_hits(response, "cosine", knn=mode == "knn")
    assert ids == ["b", "a"]
    assert np.allclose(scores, [0.9, -0.5], atol=1e-7)
    assert req.parse_hits({}, "cosine", knn=False) == ([], [])  # filter_path drops no hits


@pytest.mark.parametrize("knn", [False, True])
def test_server_scores_map_back_to_similarities(knn: bool) -> None:
    """Each map the server applies, inverted: a similarity in, its float32 score, the
    similarity back within float32 rounding (and exactly where the map is exact)."""
    cosines = np.array([-1.0, -0.3, 0.0, 0.25, 0.999999, 1.0], np.float32)
    score = (1 + cosines.astype(np.float64)) / 2 if knn else cosines.astype(np.float64) + 1
    back = req.similarities(score.astype(np.float32), "cosine", knn)
    assert np.allclose(back, cosines, rtol=0, atol=1.2e-7)
    assert back[2] == 0.0 and back[-1] == 1.0
    products = np.array([-50.0, -1.0, -1e-3, 0.0, 0.5, 3.0, 1e4], np.float64)
    mapped = np.where(products >= 0, products + 1, 1 / (1 - products)).astype(np.float32)
    back = req.similarities(mapped, "ip", knn)
    assert np.allclose(back, products, rtol=1e-6, atol=1e-7)
    assert list(np.argsort(back)) == list(np.argsort(products))


def test_stored_vectors_of_an_mget_response() -> None:
    response = {
        "docs": [
            {"_id": "a", "found": True, "_source": {"features": [0.5, 0.25]}},
            {"_id": "z", "found": True, "_source": {}},  # a zero vector: indexed without it
            {"_id": "gone", "found": False},
        ]
    }
    found = req.vectors(response, dim=2)
    assert set(found) == {"a", "z"}
    assert found["a"].dtype == np.float32 and found["a"].tolist() == [0.5, 0.25]
    assert found["z"].tolist() == [0.0, 0.0]


def test_knn_query_takes_num_candidates() -> None:
    knn = req.knn_search(np.ones(3, np.float32), "ip", 20, num_candidates=200)["query"]
    assert knn["bool"]["should"][0]["knn"]["num_candidates"] == 200
    wide = req.knn_search(np.ones(3, np.float32), "ip", 300, 200)["query"]
    assert wide["bool"]["should"][0]["knn"]["num_candidates"] == 300


def test_zero_vectors_are_sent_without_features() -> None:
    actions = list(req.index_actions("i", ["a", "b"], np.array([[0, 0], [0.5, 1]], np.float32)))
    assert "features" not in actions[0]["_source"] and actions[0]["_op_type"] == "create"
    assert actions[1]["_source"]["features"] == [0.5, 1.0]


def test_bulk_errors_name_each_failed_document() -> None:
    items = [
        {"create": {"_id": "ok", "status": 201}},
        {"create": {"_id": "bad", "status": 400, "error": {"reason": "too long"}}},
    ]
    assert req.bulk_errors(items) == {"bad": "too long"}


def test_dimension_above_the_server_limit_is_refused() -> None:
    with pytest.raises(DimensionMismatchError, match="4096"):
        create_index("elasticsearch", dim=req.MAX_DIMS + 1, url="http://127.0.0.1:9")


def test_unreachable_server_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(CbirError, match="not reachable"):
        create_index("elasticsearch", dim=4, url=url, timeout=2)


# --- live server -----------------------------------------------------------------------------
@pytest.fixture
def index_name(elasticsearch_url: str) -> Iterator[str]:  # noqa: F811
    name = f"test_{uuid.uuid4().hex}"
    yield name
    index = _open(elasticsearch_url, name, dim=None)
    if index is not None:
        index.drop()
        index.close()


def _open(url: str, name: str, dim: int | None = 4, **settings):
    if dim is None:  # whatever dims the index has: only for dropping it
        import elasticsearch

        elasticsearch.Elasticsearch(url).indices.delete(index=name, ignore_unavailable=True)
        return None
    return create_index("elasticsearch", dim=dim, url=url, index_name=name, **settings)


@pytest.mark.server
def test_index_persists_and_a_wrong_dimension_is_refused(
    elasticsearch_url: str,  # noqa: F811
    index_name: str,
) -> None:
    first = _open(elasticsearch_url, index_name)
    first.add(["a", "b"], np.eye(4, dtype=np.float32)[:2])
    first.close()
    again = _open(elasticsearch_url, index_name)
    assert len(again) == 2
    assert again.search(np.eye(4, dtype=np.float32)[1], 1)[0] == [["b"]]
    again.close()
    with pytest.raises(DimensionMismatchError, match=index_name):
        _open(elasticsearch_url, index_name, dim=8)


@pytest.mark.server
@pytest.mark.parametrize(("spec", "shards"), [("flat", 2), ("hnsw", 1), ("flat:", 1)])
def test_a_flat_index_splits_its_scan_over_two_shards_unless_told(
    elasticsearch_url: str,  # noqa: F811
    index_name: str,
    spec: str,
    shards: int,
) -> None:
    import elasticsearch

    told = {"shards": 1} if spec.endswith(":") else {}
    index = _open(elasticsearch_url, index_name, index=spec.rstrip(":"), **told)
    settings = elasticsearch.Elasticsearch(elasticsearch_url).indices.get_settings(index=index_name)
    assert settings[index_name]["settings"]["index"]["number_of_shards"] == str(shards)
    # ids and exact order hold across shards: the coordinating node merges by (score, id)
    vectors = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 1, 0, 0]], np.float32)
    index.add(["b", "a", "c", "d"], vectors)
    assert index.search(np.array([1, 0, 0, 0], np.float32), 4)[0] == [["b", "a", "c", "d"]]
    index.close()


@pytest.mark.server
def test_per_document_errors_are_reported(elasticsearch_url: str, index_name: str) -> None:  # noqa: F811
    index = _open(elasticsearch_url, index_name)
    with pytest.raises(CbirError, match="at most 512 bytes"):  # checked before sending
        index.add(["fine", "x" * 600], np.ones((2, 4), np.float32))
    assert len(index) == 0
    # a document created by someone else between the presence check and the bulk request
    index.add(["a"], np.ones((1, 4), np.float32))
    failed = index._bulk(req.index_actions(index_name, ["a", "b"], np.ones((2, 4), np.float32)))
    assert list(failed) == ["a"] and "already exists" in failed["a"]
    index.close()


@pytest.mark.server
def test_missing_index_is_a_clear_error(elasticsearch_url: str, index_name: str) -> None:  # noqa: F811
    index = _open(elasticsearch_url, index_name)
    index.add(["a"], np.ones((1, 4), np.float32))
    index.drop()
    with pytest.raises(CbirError, match="missing"):
        index.search(np.ones(4, np.float32), 1)
    index.close()


@pytest.mark.server
@pytest.mark.parametrize("spec", ["flat", "hnsw"])
def test_batches_answer_as_one_request_and_as_the_exact_index(
    elasticsearch_url: str,  # noqa: F811
    index_name: str,
    spec: str,
) -> None:
    search = "ef=1000" if spec == "hnsw" else ""  # knn: every vector a candidate
    settings = {"index": spec, "search": search, "batch": 7}
    index = _open(elasticsearch_url, index_name, dim=8, metric="ip", **settings)
    check_batches_match_the_exact_index(index, seed=6)
    index.search(np.ones((3, 8), np.float32), 5)
    assert index.last_search.server_s is not None  # the server's own `took`
    index.close()


@pytest.mark.server
def test_a_batch_the_server_refuses_is_one_clear_error(
    elasticsearch_url: str,  # noqa: F811
    index_name: str,
) -> None:
    import elasticsearch

    index = _open(elasticsearch_url, index_name, dim=64, batch=500)
    index.add(["a", "b"], np.eye(64, dtype=np.float32)[:2])
    client = elasticsearch.Elasticsearch(elasticsearch_url)
    # the in-flight request breaker refuses bodies over its limit (~20 kB per 64-d query)
    client.cluster.put_settings(transient={"network.breaker.inflight_requests.limit": "100kb"})
    try:
        assert index.search(np.eye(64, dtype=np.float32)[1], 1)[0] == [["b"]]
        with pytest.raises(CbirError, match="refused a batch of 500 queries"):
            index.search(np.ones((500, 64), np.float32), 1)
    finally:
        client.cluster.put_settings(transient={"network.breaker.inflight_requests.limit": None})
        client.close()
    index.close()


# --- settings stored by an older cbir ----------------------------------------------------------
@pytest.mark.parametrize(
    ("stored", "today"),
    [
        ({"url": "u", "index_name": "n"}, {"url": "u", "index_name": "n"}),  # exact, then and now
        ({"search": "exact", "hnsw_m": 24}, {"index": "flat", "search": ""}),
        ({"search": "knn"}, {"index": "hnsw:M=16,ef_construction=100", "search": "ef=100"}),
        (
            {"search": "knn", "num_candidates": 200, "hnsw_m": 8, "ef_construction": 50},
            {"index": "hnsw:M=8,ef_construction=50", "search": "ef=200"},
        ),
        ({"index": "hnsw", "search": "ef=64"}, {"index": "hnsw", "search": "ef=64"}),
    ],
)
def test_old_settings_read_as_specs_with_the_old_defaults(stored: dict, today: dict) -> None:
    from cbir.index.elasticsearch import ElasticsearchIndex

    assert ElasticsearchIndex.upgrade(stored) == today
