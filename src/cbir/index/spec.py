"""Index specs: a short string chooses the index structure, another its search settings.

In the spirit of faiss's index_factory, and with build-time and search-time parameters kept
apart (changing `ef` never needs a rebuild; changing `M` does). One grammar, and one set of
defaults (here), for every backend that builds an index structure: the `index` and `search`
settings of faiss, Milvus and Elasticsearch. Each backend declares the kinds it builds
(`index_kinds`): faiss auto, flat, hnsw, ivfpq; Milvus flat, hnsw, ivf; Elasticsearch flat,
hnsw (searched with knn, num_candidates = ef).

    index spec    "auto" | "flat" | "hnsw[:M=32,ef_construction=200]"
                  | "ivfpq[:nlist=1024,m=32,nbits=8]" | "ivf[:nlist=1024]"
    search spec   "" (defaults) | "ef=128" (hnsw, auto) | "nprobe=32,k_factor=4" (ivfpq)
                  | "nprobe=32" (ivf)

`parse_spec` reads both kinds of string; `str(spec)` writes the canonical form (every
parameter, in declared order), which parses back to an equal spec. Unknown names raise an
error that lists the valid ones. `resolve` says which structure a spec means at a given size:
"auto" is exact (flat) while an exact scan is cheap and HNSW beyond that, and "ivfpq" stays
flat until there are enough vectors to train its quantisers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from cbir.errors import CbirError, UnknownNameError

# kind -> build parameters with their defaults, in canonical order. HNSW's M=32 and
# ef_construction=200 reach recall@100 >= 0.99 on embedding-like data at ef=128 (see
# benchmarks/README.md); ivfpq's m must divide the dimension. ivf (Milvus's IVF_FLAT) shares
# ivfpq's lists.
BUILD_PARAMS: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {
        "auto": {},
        "flat": {},
        "hnsw": {"M": 32, "ef_construction": 200},
        "ivfpq": {"nlist": 1024, "m": 32, "nbits": 8},
        "ivf": {"nlist": 1024},
    }
)
# kind -> search parameters with their defaults. "auto" takes HNSW's (it may become one).
# ef is a floor: a search for k results explores at least k (plus over-fetch) candidates.
SEARCH_PARAMS: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {
        "auto": {"ef": 128},
        "flat": {},
        "hnsw": {"ef": 128},
        "ivfpq": {"nprobe": 32, "k_factor": 4},
        "ivf": {"nprobe": 32},
    }
)
# Smallest legal value of each parameter; nbits is also bounded above (faiss's PQ codes).
MINIMUM = {"M": 2, "ef_construction": 1, "nlist": 1, "m": 1, "nbits": 1, "ef": 1, "nprobe": 1,
           "k_factor": 1}  # fmt: skip
MAX_NBITS = 16

# "auto" switches from an exact scan to HNSW once the vectors fill AUTO_HNSW_BYTES: one exact
# single query scans them all, ~2 ms for 64 MiB here (50,000 x 256 float32 measured 1.8 ms),
# while HNSW answers in ~0.1-0.3 ms at recall@100 ~0.999 (benchmarks/README.md).
AUTO_HNSW_BYTES = 64 << 20
# faiss's k-means wants >= 39 training points per centroid (it warns below that): IVF lists
# and the 2**nbits PQ centroids alike. Until then an "ivfpq" index is an exact scan.
TRAIN_POINTS_PER_CENTROID = 39


@dataclass(frozen=True)
class IndexSpec:
    kind: str
    params: Mapping[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return format_spec(self.kind, self.params)


def parse_spec(
    text: str, search_for: str | None = None, kinds: Sequence[str] | None = None
) -> IndexSpec:
    """Parse an index spec ("hnsw:M=16") of one of `kinds` (default: every kind), or with
    `search_for=KIND` that kind's search spec ("ef=64"), filling in defaults. The one parser
    for both, so they read alike."""
    if not isinstance(text, str):
        raise CbirError(f"an index spec is a string like 'hnsw:M=32', got {text!r}")
    text = text.strip()
    if search_for is None:
        kind, _, body = text.partition(":")
        kind = kind.strip().lower()
        kinds = list(BUILD_PARAMS) if kinds is None else kinds
        if kind not in kinds:
            raise UnknownNameError(
                f"unknown index kind {kind!r}; choose one of: {', '.join(kinds)}"
            )
        table, what = BUILD_PARAMS[kind], f"index {kind!r}"
    else:
        kind, body = search_for, text
        table, what = SEARCH_PARAMS[kind], f"searching index {kind!r}"
    params = dict(table)
    for item in filter(None, (part.strip() for part in body.split(","))):
        name, equals, value = (piece.strip() for piece in item.partition("="))
        if name not in table:
            valid = ", ".join(table) or "none"
            raise UnknownNameError(
                f"unknown parameter {name!r} for {what}; valid parameters: {valid}"
            )
        if not (equals and value.isascii() and value.isdigit()) or int(value) < MINIMUM[name]:
            raise CbirError(f"{what}: {name} must be an integer >= {MINIMUM[name]}, got {item!r}")
        params[name] = int(value)
    if params.get("nbits", 0) > MAX_NBITS:
        raise CbirError(f"{what}: nbits must be at most {MAX_NBITS}, got {params['nbits']}")
    return IndexSpec(kind, params)


def parse_search(text: str, kind: str) -> dict[str, int]:
    """The search parameters for an index of `kind`, defaults filled in."""
    return dict(parse_spec(text, search_for=kind).params)


def format_spec(kind: str, params: Mapping[str, int]) -> str:
    """`kind:a=1,b=2` with every parameter, or just `kind` when it takes none."""
    body = ",".join(f"{name}={params[name]}" for name in BUILD_PARAMS[kind] if name in params)
    return f"{kind}:{body}" if body else kind


def format_search(params: Mapping[str, int]) -> str:
    return ",".join(f"{name}={value}" for name, value in params.items())


def training_size(spec: IndexSpec) -> int:
    """Vectors an index of this spec needs before it can be built (0: none)."""
    if spec.kind != "ivfpq":
        return 0
    return TRAIN_POINTS_PER_CENTROID * max(spec.params["nlist"], 2 ** spec.params["nbits"])


def resolve(spec: IndexSpec, n: int, dim: int) -> IndexSpec:
    """The structure `spec` means for an index of n vectors of `dim` floats."""
    if spec.kind == "auto":
        hnsw = n * dim * 4 >= AUTO_HNSW_BYTES
        return IndexSpec("hnsw", dict(BUILD_PARAMS["hnsw"])) if hnsw else IndexSpec("flat")
    if n < training_size(spec):
        return IndexSpec("flat")
    return spec
