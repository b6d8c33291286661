"""The benchmark's searches through another backend (`cbir benchmark --backend NAME`).

The exact embedded index still answers what needs every score (map_all, near-duplicates) and
serves as the yardstick: the backend gets the same vectors, its top-k run is the one scored,
and the run records how much of the exact top k it found (recall, identical rankings) and its
index and search times next to the embedded ones. A server backend gets a throwaway index of
its own, dropped after; a connection relative to a folder (a Milvus Lite file, unless a server
is given) lives in a temporary one (`Backend.locate`).
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from cbir.evaluation import leave_one_out
from cbir.index import RemoteIndex, backend_class, create_index
from cbir.index.remote import TimedSearches
from cbir.index.settings import check_storable


def search_with_backend(
    name: str,
    settings: dict[str, Any],
    ids: Sequence[str],
    vectors: np.ndarray,
    queries: np.ndarray,
    depth: int,
    exclude: Sequence[str] | None,
    exact_ids: list[list[str]],
    timings: dict[str, float],
) -> tuple[list[list[str]], np.ndarray, dict[str, Any]]:
    """(ranked ids, scores, description for metrics.json) of the queries run through backend
    `name`; `timings` gains backend_index_s and backend_search_s (and backend_server_s, the time a
    server reports it spent, where it reports one)."""
    check_storable(name, settings)  # metrics.json records them
    cls = backend_class(name)
    settings = dict(settings)
    with tempfile.TemporaryDirectory(prefix="cbir-bench-") as tmp:
        throwaway = cls.keeps_data and cls.name_setting not in settings
        if throwaway:
            settings[cls.name_setting] = f"cbir_bench_{secrets.token_hex(4)}"
        # what metrics.json records: a server's URL, never a scratch file's path
        given = {k: v for k, v in settings.items() if k != cls.connection or "://" in str(v)}
        if cls.keeps_data and cls.connection not in settings:
            settings[cls.connection] = cls.default_connection()
        index = create_index(
            name, dim=vectors.shape[1], metric="cosine", **cls.locate(settings, Path(tmp))
        )
        try:
            started = time.perf_counter()
            index.add(list(ids), vectors)
            # a server merges / seals what a bulk load left, so searches do not compete with it
            if cls.keeps_data:
                cast(RemoteIndex, index).compact()
            timings["backend_index_s"] = time.perf_counter() - started
            started = time.perf_counter()
            ranked, scores = leave_one_out.search(index, queries, depth, exclude)
            timings["backend_search_s"] = time.perf_counter() - started
            if isinstance(index, TimedSearches) and index.last_search.server_s is not None:
                timings["backend_server_s"] = index.last_search.server_s  # the server's account
        finally:
            if throwaway:
                cast(RemoteIndex, index).drop()
            index.close()
    pairs = list(zip(ranked, exact_ids, strict=True))
    recall = [len(set(got) & set(want)) / len(want) if want else 1.0 for got, want in pairs]
    description = {
        "name": name,
        "settings": given,
        f"recall_at_{depth}_vs_exact": float(np.mean(recall)),
        "identical_rankings": float(np.mean([got == want for got, want in pairs])),
    }
    return ranked, scores, description
