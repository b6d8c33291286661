"""The protocols every backend implements, and the checks they share.

- `VectorIndex`: add, search, delete, len, close and ids(), for every backend.
- `LocalIndex`: a VectorIndex held in this process, saved to and loaded from a folder
  (embedded, faiss).
- `RemoteIndex`: a VectorIndex whose vectors a server keeps between runs (Elasticsearch,
  Milvus): `keeps_data` is True, `drop()` deletes its index there, `compact()` waits for
  the server to index a bulk load, and `note_last_change()` hears when it last changed.

Which of the two a backend is, it declares (`keeps_data`, see `cbir.index.backend`); callers
read that declaration rather than probing an index for methods.

Results are ordered exactly as trec_eval orders a run: score descending, ties broken by
document id descending (byte-wise string comparison, like strcmp). A backend that cannot
break ties itself must over-fetch and re-sort with `order_hits`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Container, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from cbir.errors import CbirError, CollectionError, DimensionMismatchError

METRICS = ("cosine", "ip")
_SHOWN = 5  # ids quoted in an error message


@runtime_checkable
class VectorIndex(Protocol):
    dim: int
    metric: str

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Top-k for each query row: (ids per query, scores (Q, k') float32), k' <= k when
        the index holds fewer than k vectors."""
        ...

    def delete(self, ids: Sequence[str]) -> int: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...

    def ids(self) -> Iterable[str]:
        """Every id the index holds (a server's: a page at a time)."""
        ...


@runtime_checkable
class LocalIndex(VectorIndex, Protocol):
    keeps_data: ClassVar[Literal[False]]

    def save(self, folder: Path) -> None: ...

    @classmethod
    def load(cls, folder: Path) -> LocalIndex: ...

    def copy(self) -> LocalIndex:
        """An independent copy (Backend gives every backend one)."""
        ...


@runtime_checkable
class RemoteIndex(VectorIndex, Protocol):
    keeps_data: ClassVar[Literal[True]]  # a collection syncs it, never rebuilds it

    def drop(self) -> None:
        """Delete the whole index on the server (a collection being thrown away, tests)."""
        ...

    def compact(self) -> None:
        """After a bulk load: wait until the server has indexed it all (merged, sealed), so
        that searches do not compete with that work."""
        ...

    def note_last_change(self, changed_at: float | None) -> None:
        """When the server last changed (unix time, None: unknown), as the collection knows
        it: whether the first search must wait for the server to apply everything."""
        ...


def check_dim_and_metric(dim: object, metric: str) -> int:
    """What every backend's constructor checks: a positive integer dimension, a known metric."""
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise CbirError(f"index dimension must be a positive integer, got {dim!r}")
    if metric not in METRICS:
        raise CbirError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    return int(dim)


def check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise CbirError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_vectors(vectors: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    """(N, dim) float32, C-contiguous, finite; a clear error otherwise."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise DimensionMismatchError(
            f"{what} have shape {tuple(np.shape(vectors))}; this index holds {dim}-d vectors"
        )
    if not np.isfinite(array).all():
        raise DimensionMismatchError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(array)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero (they score 0 against everything)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def order_hits(ids: Sequence[str], scores: Sequence[float]) -> list[tuple[str, float]]:
    """trec_eval's order: score descending, then id descending."""
    # (score, id) tuples compare in C: a key function called per hit cost a third as much
    # again on a server backend's 125 candidates a query
    ranked = sorted(zip(scores, ids, strict=True), reverse=True)
    return [(id_, score) for score, id_ in ranked]


def check_ids(ids: Sequence[str]) -> list[str]:
    """Ids as a list of non-empty strings without NUL (numpy string arrays drop trailing NULs)."""
    if isinstance(ids, str | bytes):
        raise CbirError("ids must be a sequence of strings, not a single string")
    ids = list(ids)
    bad = [id_ for id_ in ids if not isinstance(id_, str) or not id_ or "\x00" in id_]
    if bad:
        raise CbirError(f"ids must be non-empty strings without NUL characters; got {quote(bad)}")
    return ids


def check_new_entries(
    ids: Sequence[str], vectors: np.ndarray, dim: int, present: Container[str]
) -> tuple[list[str], np.ndarray]:
    """What every backend's `add` checks before changing anything: valid ids, the right
    dimension, one vector per id, and no id repeated or already `present` (nothing is added
    when one check fails)."""
    ids = check_ids(ids)
    vectors = check_vectors(vectors, dim)
    if len(ids) != len(vectors):
        raise CbirError(f"got {len(ids)} ids for {len(vectors)} vectors; they must match")
    repeated = [id_ for id_, n in Counter(ids).items() if n > 1]
    if repeated:
        raise CbirError(f"duplicate ids in one batch, nothing added: {quote(repeated)}")
    already = [id_ for id_ in ids if id_ in present]
    if already:
        raise CbirError(
            f"{len(already)} id(s) already in the index, nothing added: {quote(already)}; "
            "delete them first to replace their vectors"
        )
    return ids, vectors


def quote(items: Sequence[Any]) -> str:
    """The first few items for an error message, and how many more there are."""
    shown = ", ".join(repr(item) for item in items[:_SHOWN])
    return shown + (f" (and {len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def read_index_meta(folder: Path, name: str, expected: dict[str, type]) -> dict[str, Any]:
    """A saved index's JSON description, with every `expected` field of the right type
    (never a bool for an int); a clear CollectionError otherwise. Backends check the values."""
    path = Path(folder) / name
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise CollectionError(f"no saved index in {folder}: {name} is missing") from error
    except (OSError, ValueError) as error:
        raise CollectionError(f"cannot read {path}: {error}") from error
    if not isinstance(meta, dict) or any(
        not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool)
        for key, kind in expected.items()
    ):
        raise CollectionError(f"{path} is malformed; expected fields {sorted(expected)}")
    if meta.get("metric", METRICS[0]) not in METRICS:
        raise CollectionError(f"{path} is malformed: unknown metric {meta['metric']!r}")
    return meta


def check_saved_ids(ids: np.ndarray, count: int, folder: Path, file: str, meta_file: str) -> None:
    """The saved id array holds exactly the `count` string ids the index's JSON promises."""
    if ids.dtype.kind != "U" or ids.shape != (count,):
        raise CollectionError(
            f"index in {folder} is inconsistent: {file} holds {ids.dtype} {ids.shape}, "
            f"{meta_file} promises {count} string ids"
        )
