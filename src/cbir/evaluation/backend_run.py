"""The benchmark's searches through another backend (`cbir benchmark --backend NAME`).

The exact embedded index still answers what needs every score (map_all, near-duplicates) and
serves as the yardstick: the backend gets the same vectors, its top-k run is the one scored,
and the run records how much of the exact top k it found (recall, identical rankings) and its
index and search times next to the embedded ones. A server backend gets a throwaway index of
its own (a Milvus Lite file in a temporary folder unless a server URI is given), dropped after.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cbir.evaluation import leave_one_out
from cbir.index import create_index
from cbir.index.settings import CONNECTIONS, check_storable


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
    check_storable(settings)  # metrics.json records them
    settings = dict(settings)
    with tempfile.TemporaryDirectory(prefix="cbir-bench-") as tmp:
        throwaway = name in CONNECTIONS and CONNECTIONS[name][2] not in settings
        if throwaway:
            settings[CONNECTIONS[name][2]] = f"cbir_bench_{secrets.token_hex(4)}"
        if name == "milvus" and "uri" not in settings:
            settings["uri"] = str(Path(tmp) / "benchmark.db")
        index = create_index(name, dim=vectors.shape[1], metric="cosine", **settings)
        try:
            started = time.perf_counter()
            index.add(list(ids), vectors)
            # a server merges / seals what a bulk load left, so searches do not compete with it
            getattr(index, "compact", lambda: None)()
            timings["backend_index_s"] = time.perf_counter() - started
            started = time.perf_counter()
            ranked, scores = leave_one_out.search(index, queries, depth, exclude)
            timings["backend_search_s"] = time.perf_counter() - started
            server = getattr(index, "last_search", None)  # a server backend's own account
            if server is not None and server.server_s is not None:
                timings["backend_server_s"] = server.server_s
        finally:
            if throwaway:
                index.drop()
            index.close()
    pairs = list(zip(ranked, exact_ids, strict=True))
    recall = [len(set(got) & set(want)) / len(want) if want else 1.0 for got, want in pairs]
    description = {
        "name": name,
        "settings": {k: v for k, v in settings.items() if k != "uri" or "://" in str(v)},
        f"recall_at_{depth}_vs_exact": float(np.mean(recall)),
        "identical_rankings": float(np.mean([got == want for got, want in pairs])),
    }
    return ranked, scores, description
