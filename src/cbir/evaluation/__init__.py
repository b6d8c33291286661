"""Evaluation: TREC run and qrels files, and trec_eval-exact retrieval metrics."""

from cbir.evaluation.metrics import average_precision_full, mean_metrics, per_query_metrics
from cbir.evaluation.trec import (
    format_score,
    read_qrels,
    read_run,
    tiebreak_ranks,
    trec_order,
    write_qrels,
    write_run,
)

__all__ = [
    "average_precision_full",
    "format_score",
    "mean_metrics",
    "per_query_metrics",
    "read_qrels",
    "read_run",
    "tiebreak_ranks",
    "trec_order",
    "write_qrels",
    "write_run",
]
