"""Elasticsearch request bodies and response parsing, as pure functions (no client, no I/O).

The reference mapping: id, filename, path, label (keywords) and `features`, an indexed
dense_vector. Cosine collections use `similarity: cosine` and, for exact searches, the
reference query's score, the cosine + 1.0 (script scores must not be negative), computed as
a dot product of unit vectors; inner-product collections use `max_inner_product` and a
positive, monotone map of `dotProduct`. Exact searches sort by score, then by `id`
descending (keyword order is byte order, strcmp's), which is the VectorIndex order.
Answers are lean: per hit, its id and the server's float32 score (its sort values), never
`_source` or the vector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

MAX_DIMS = 4096  # Elasticsearch 8.12's limit for an indexed dense_vector
MAX_RESULT_WINDOW = 10_000  # the default index.max_result_window
MAX_NUM_CANDIDATES = 10_000  # Elasticsearch 8.12 refuses more knn candidates
MAX_ID_BYTES = 512  # longer document ids fail the whole bulk request, so they are checked first

# exact scores: script scores must not be negative, so similarities are mapped, in order,
# onto positive values (`similarities` maps them back). Vectors are stored unit length for
# cosine, where the dot product is the cosine: `dotProduct` scores half as fast again as
# `cosineSimilarity`, which recomputes each document's norm.
COSINE_SCRIPT = "dotProduct(params.query_vector, 'features') + 1.0"
IP_SCRIPT = (  # inner products may be negative: a positive map that keeps their order
    "double d = dotProduct(params.query_vector, 'features'); "
    "return d >= 0 ? d + 1.0 : 1.0 / (1.0 - d);"
)
# zero vectors cannot be indexed with cosine similarity: such documents carry no `features`
# and join each search through this clause, scored what a similarity of 0 maps to
ZERO_DOCS = {"bool": {"must_not": {"exists": {"field": "features"}}}}
# what a lean msearch response keeps: the server's time, each hit's sort values (score, id),
# and any per-search error; `status` keeps one entry per search even when none has a hit
FILTER_PATH = ["took", "responses.status", "responses.hits.hits.sort", "responses.error"]


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
    """Exact search: script_score over every document with a vector, plus the zero-vector
    documents through ZERO_DOCS (scored 1.0: a similarity of 0 under either map)."""
    if metric == "cosine" and not query.any():
        return everything_at(1.0, size)  # a zero query: every similarity is 0
    script_score = {
        "query": {"exists": {"field": "features"}},
        "script": {
            "source": COSINE_SCRIPT if metric == "cosine" else IP_SCRIPT,
            "params": {"query_vector": query.tolist()},
        },
    }
    either = [{"script_score": script_score}, {"constant_score": {"filter": ZERO_DOCS}}]
    return lean({"size": size, "query": {"bool": {"should": either}}})


def knn_search(query: np.ndarray, metric: str, size: int, num_candidates: int) -> dict[str, Any]:
    """Approximate search: the `knn` query clause (HNSW, `num_candidates` per shard). Zero
    vectors are not in the HNSW graph, so they join through a clause scoring them what knn
    scores a similarity of 0 (0.5 for cosine, 1.0 for max_inner_product)."""
    if metric == "cosine" and not query.any():
        return everything_at(0.5, size)  # knn refuses a zero query vector; all score 0
    knn = {
        "field": "features",
        "query_vector": query.tolist(),
        "num_candidates": min(max(num_candidates, size), MAX_NUM_CANDIDATES),
    }
    boost = 0.5 if metric == "cosine" else 1.0
    either = [{"knn": knn}, {"constant_score": {"filter": ZERO_DOCS, "boost": boost}}]
    return lean({"size": size, "query": {"bool": {"should": either}}})


def everything_at(score: float, size: int) -> dict[str, Any]:
    """Every document at one score: the answer to a zero query, which ties them all."""
    constant = {"constant_score": {"filter": {"match_all": {}}, "boost": score}}
    return lean({"size": size, "query": constant})


def lean(body: dict[str, Any]) -> dict[str, Any]:
    """A search that answers each hit with its sort values only: the server's score, then
    `id` (descending, the VectorIndex order); no _source, no stored fields, no vectors."""
    return {
        **body,
        "sort": [{"_score": "desc"}, {"id": "desc"}],
        "_source": False,
        "stored_fields": "_none_",
        "track_total_hits": False,
    }


def parse_hits(response: dict[str, Any], metric: str, knn: bool) -> tuple[list[str], list[float]]:
    """(ids, similarities) of one lean search response (see FILTER_PATH)."""
    hits = response.get("hits", {}).get("hits", [])
    scores = np.array([hit["sort"][0] for hit in hits], dtype=np.float32)
    return [hit["sort"][1] for hit in hits], similarities(scores, metric, knn).tolist()


def similarities(scores: np.ndarray, metric: str, knn: bool) -> np.ndarray:
    """The similarities behind the server's float32 scores: script scores map a cosine c to
    c + 1; knn scores it (1 + c) / 2; an inner product d, in either, scores d + 1 when
    d >= 0, else 1 / (1 - d). The inverses of the first two are exact float32 arithmetic,
    so a similarity is off by the score's own rounding only (at most 1.2e-7 for cosines);
    near-tie rescoring covers that, and `inexact` marks what the third loses."""
    if metric == "cosine":
        return (2 * scores - 1) if knn else (scores - 1)
    wide = scores.astype(np.float64)
    safe = np.where(wide > 0, wide, 1.0)  # scores are positive; guards the division only
    return np.where(wide >= 1, wide - 1, 1 - 1 / safe).astype(np.float32)


def inexact(metric: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """Which similarities `similarities` recovers only approximately, for rescoring: the
    negative inner products, scored 1 / (1 - d), whose inverse loses float32 bits."""
    if metric == "cosine":
        return None
    return lambda similarities: similarities < 0


def vectors(response: dict[str, Any], dim: int) -> dict[str, np.ndarray]:
    """id -> stored vector of an mget response (`_source` features only); a document
    without `features` (a zero vector) is zeros, a missing one is left out."""
    found = {}
    for doc in response.get("docs", []):
        if doc.get("found"):
            values = doc.get("_source", {}).get("features")
            found[doc["_id"]] = (
                np.zeros(dim, np.float32) if values is None else np.asarray(values, np.float32)
            )
    return found


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
