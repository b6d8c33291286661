"""Elasticsearch request bodies and response parsing, as pure functions (no client, no I/O).

The reference mapping: id, filename, path, label (keywords) and `features`, an indexed
dense_vector. Cosine collections use `similarity: cosine` and the reference exact query,
`cosineSimilarity(params.query_vector, 'features') + 1.0` (script scores must not be
negative); inner-product collections use `max_inner_product` and a positive, monotone map of
`dotProduct`. Exact searches sort by score, then by `id` descending (keyword order is byte
order, strcmp's), which is the VectorIndex order. Answers are lean: per hit, its id and
its exact similarity, never `_source` or the vector.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

MAX_DIMS = 4096  # Elasticsearch 8.12's limit for an indexed dense_vector
MAX_RESULT_WINDOW = 10_000  # the default index.max_result_window
MAX_NUM_CANDIDATES = 10_000  # Elasticsearch 8.12 refuses more knn candidates
MAX_ID_BYTES = 512  # longer document ids fail the whole bulk request, so they are checked first

COSINE_SCRIPT = (
    # zero vectors cannot be indexed with cosine similarity: such documents carry no
    # `features` and score 0, as they do in every other backend
    "doc['features'].size() == 0 ? 1.0 : cosineSimilarity(params.query_vector, 'features') + 1.0"
)
IP_SCRIPT = (  # inner products may be negative: a positive map that keeps their order
    "double d = dotProduct(params.query_vector, 'features'); "
    "return d >= 0 ? d + 1.0 : 1.0 / (1.0 - d);"
)
CONSTANT_SCRIPT = "1.0"  # a zero query under cosine: every document scores 0
# the exact similarity of a returned hit, summed in float64 from the stored float32 vector
# (the same value for identical vectors wherever they are stored); 0 for a zero vector
SIMILARITY_SCRIPT = (
    "if (doc['features'].size() == 0) { return 0.0; } "
    "float[] v = doc['features'].vectorValue; def q = params.query_vector; double s = 0; "
    "for (int i = 0; i < v.length; ++i) { s += v[i] * (double) q[i]; } return s;"
)
# what a lean msearch response keeps: the server's time, each hit's sort values (score, id)
# and similarity, and any per-search error; `status` keeps one entry per search even when
# none has a hit
FILTER_PATH = [
    "took",
    "responses.status",
    "responses.hits.hits.sort",
    "responses.hits.hits.fields.similarity",
    "responses.error",
]


def index_body(
    dim: int, metric: str, shards: int, replicas: int, graph: dict[str, int] | None
) -> dict[str, Any]:
    """The index's settings and mapping. Elasticsearch 8.12 builds an HNSW graph for every
    indexed dense_vector: `graph` ({"M", "ef_construction"}) sets its parameters for an hnsw
    index; a flat (exact) index leaves them to Elasticsearch's defaults (m=16,
    ef_construction=100, what cbir set before index specs existed)."""
    keyword = {"type": "keyword"}
    features: dict[str, Any] = {
        "type": "dense_vector",
        "dims": dim,
        "index": True,
        "similarity": "cosine" if metric == "cosine" else "max_inner_product",
    }
    if graph is not None:
        options = {"m": graph["M"], "ef_construction": graph["ef_construction"]}
        features["index_options"] = {"type": "hnsw", **options}
    return {
        "settings": {"number_of_shards": shards, "number_of_replicas": replicas},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "id": keyword,
                "filename": keyword,
                "path": keyword,
                "label": keyword,
                "features": features,
            },
        },
    }


def mapped_vector(mapping_response: dict[str, Any], index: str) -> tuple[int, str] | None:
    """(dims, similarity) of `features` from a get_mapping response; None when absent."""
    try:
        field = mapping_response[index]["mappings"]["properties"]["features"]
    except (KeyError, TypeError):
        return None
    return int(field["dims"]), str(field.get("similarity", ""))


def index_actions(index: str, ids: Sequence[str], vectors: np.ndarray) -> Iterator[dict[str, Any]]:
    """Bulk `create` actions (an existing id fails rather than being overwritten), made as
    the bulk helper sends them: 50,000 vectors as Python floats at once would take ~400 MB."""
    for id_, vector in zip(ids, vectors, strict=True):
        source: dict[str, Any] = {"id": id_}
        if vector.any():
            source["features"] = vector.tolist()  # float32 -> shortest repr: exact round trip
        yield {"_op_type": "create", "_index": index, "_id": id_, "_source": source}


def delete_actions(index: str, ids: Sequence[str]) -> list[dict[str, Any]]:
    return [{"_op_type": "delete", "_index": index, "_id": id_} for id_ in ids]


def exact_search(query: np.ndarray, metric: str, size: int) -> dict[str, Any]:
    if metric == "cosine":
        source = COSINE_SCRIPT if query.any() else CONSTANT_SCRIPT
    else:
        source = IP_SCRIPT
    script_score = {
        "query": {"match_all": {}},
        "script": {"source": source, "params": {"query_vector": query.tolist()}},
    }
    return lean({"size": size, "query": {"script_score": script_score}}, query)


def knn_search(query: np.ndarray, metric: str, size: int, num_candidates: int) -> dict[str, Any]:
    """Approximate search: the `knn` query clause (HNSW, `num_candidates` per shard). Zero
    vectors are not in the HNSW graph, so they join through a clause scoring them what knn
    scores a similarity of 0 (0.5 for cosine, 1.0 for max_inner_product)."""
    if metric == "cosine" and not query.any():
        return exact_search(query, metric, size)  # knn refuses a zero query vector
    knn = {
        "field": "features",
        "query_vector": query.tolist(),
        "num_candidates": min(max(num_candidates, size), MAX_NUM_CANDIDATES),
    }
    zero_docs = {"bool": {"must_not": {"exists": {"field": "features"}}}}
    boost = 0.5 if metric == "cosine" else 1.0
    either = [{"knn": knn}, {"constant_score": {"filter": zero_docs, "boost": boost}}]
    return lean({"size": size, "query": {"bool": {"should": either}}}, query)


def lean(body: dict[str, Any], query: np.ndarray) -> dict[str, Any]:
    """A search that answers each hit with its id and exact similarity only: sorted by the
    server's score, then by `id` descending (the VectorIndex order); no _source, no vectors.
    The server's score is a float (and, for script_score, offset), so the similarity comes
    from SIMILARITY_SCRIPT, computed for the returned hits only."""
    similarity = {
        "script": {"source": SIMILARITY_SCRIPT, "params": {"query_vector": query.tolist()}}
    }
    return {
        **body,
        "sort": [{"_score": "desc"}, {"id": "desc"}],
        "_source": False,
        "stored_fields": "_none_",
        "script_fields": {"similarity": similarity},
        "track_total_hits": False,
    }


def parse_hits(response: dict[str, Any]) -> tuple[list[str], list[float]]:
    """(ids, exact similarities) of one lean search response (see FILTER_PATH)."""
    hits = response.get("hits", {}).get("hits", [])
    return [hit["sort"][1] for hit in hits], [hit["fields"]["similarity"][0] for hit in hits]


def bulk_errors(items: Sequence[dict[str, Any]]) -> dict[str, str]:
    """id -> reason (shortened), for each failed bulk item."""
    failed = {}
    for item in items:
        (result,) = item.values()
        error = result.get("error")
        if error:
            reason = error.get("reason", error) if isinstance(error, dict) else error
            failed[str(result.get("_id"))] = str(reason)[:200]
    return failed
