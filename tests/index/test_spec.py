"""Index and search specs: parsing, defaults, canonical round trip, errors, auto choice."""

from __future__ import annotations

import pytest

from cbir.errors import CbirError, UnknownNameError
from cbir.index import spec as spec_module
from cbir.index.spec import (
    AUTO_HNSW_BYTES,
    IndexSpec,
    format_search,
    parse_search,
    parse_spec,
    resolve,
    training_size,
)


def test_defaults_are_filled_in() -> None:
    assert parse_spec("hnsw") == IndexSpec("hnsw", {"M": 32, "ef_construction": 200})
    assert parse_spec("hnsw:M=16") == IndexSpec("hnsw", {"M": 16, "ef_construction": 200})
    assert parse_spec("ivfpq:m=8") == IndexSpec("ivfpq", {"nlist": 1024, "m": 8, "nbits": 8})
    assert parse_spec("flat") == IndexSpec("flat") and parse_spec("auto") == IndexSpec("auto")
    assert parse_search("", "hnsw") == {"ef": 128}
    assert parse_search("nprobe=4", "ivfpq") == {"nprobe": 4, "k_factor": 4}
    assert parse_search("", "flat") == {}


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("auto", "auto"),
        ("flat", "flat"),
        ("hnsw", "hnsw:M=32,ef_construction=200"),
        ("hnsw:ef_construction=50,M=8", "hnsw:M=8,ef_construction=50"),
        (" HNSW : M = 16 , ", "hnsw:M=16,ef_construction=200"),
        ("ivfpq:nlist=1024,m=32", "ivfpq:nlist=1024,m=32,nbits=8"),
        ("ivfpq:nbits=4,nlist=7", "ivfpq:nlist=7,m=32,nbits=4"),
    ],
)
def test_round_trip(text: str, canonical: str) -> None:
    spec = parse_spec(text)
    assert str(spec) == canonical
    assert parse_spec(str(spec)) == spec
    assert str(parse_spec(canonical)) == canonical


@pytest.mark.parametrize(
    ("text", "kind", "canonical"),
    [("", "hnsw", "ef=128"), ("ef=64", "auto", "ef=64"),
     ("k_factor=2, nprobe=8", "ivfpq", "nprobe=8,k_factor=2"), ("", "flat", "")],
)  # fmt: skip
def test_search_round_trip(text: str, kind: str, canonical: str) -> None:
    params = parse_search(text, kind)
    assert format_search(params) == canonical
    assert parse_search(format_search(params), kind) == params


def test_unknown_kind_lists_the_choices() -> None:
    with pytest.raises(UnknownNameError, match="auto, flat, hnsw, ivfpq"):
        parse_spec("annoy:trees=10")


@pytest.mark.parametrize(
    ("text", "kind", "valid"),
    [
        ("hnsw:ef=10", None, "M, ef_construction"),  # a search parameter where a build one goes
        ("ivfpq:M=8", None, "nlist, m, nbits"),  # names are case-sensitive, like faiss's
        ("flat:M=8", None, "none"),
        ("nprobe=4", "hnsw", "ef"),
        ("ef=4", "flat", "none"),
    ],
)
def test_unknown_parameter_lists_the_valid_ones(text: str, kind: str | None, valid: str) -> None:
    with pytest.raises(UnknownNameError, match=f"valid parameters: {valid}$"):
        parse_spec(text, search_for=kind)


@pytest.mark.parametrize(
    "text",
    ["hnsw:M=1", "hnsw:M=abc", "hnsw:M", "hnsw:M=", "hnsw:M=-3", "hnsw:M=3.5", "hnsw:M=²",
     "ivfpq:nbits=17", "ivfpq:nlist=0"],
)  # fmt: skip
def test_bad_values(text: str) -> None:
    with pytest.raises(CbirError):
        parse_spec(text)


def test_not_a_string() -> None:
    with pytest.raises(CbirError):
        parse_spec(None)  # type: ignore[arg-type]


def test_auto_switches_to_hnsw_at_the_threshold() -> None:
    for dim in (64, 256, 512):
        first_hnsw = AUTO_HNSW_BYTES // (4 * dim)
        assert resolve(parse_spec("auto"), first_hnsw - 1, dim) == IndexSpec("flat")
        assert resolve(parse_spec("auto"), first_hnsw, dim) == parse_spec("hnsw")
    assert AUTO_HNSW_BYTES // (4 * 256) == 65_536  # the figure the docs quote


def test_auto_threshold_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec_module, "AUTO_HNSW_BYTES", 4 * 8 * 100)
    assert resolve(parse_spec("auto"), 99, 8).kind == "flat"
    assert resolve(parse_spec("auto"), 100, 8).kind == "hnsw"


def test_ivfpq_is_flat_until_it_can_train() -> None:
    spec = parse_spec("ivfpq:nlist=100,m=4,nbits=8")
    assert training_size(spec) == 39 * 256  # the PQ's 256 centroids need more than 100 lists
    assert training_size(parse_spec("ivfpq:nlist=1024,m=4")) == 39 * 1024
    assert resolve(spec, training_size(spec) - 1, 16) == IndexSpec("flat")
    assert resolve(spec, training_size(spec), 16) == spec
    for fixed in ("flat", "hnsw:M=8"):
        assert resolve(parse_spec(fixed), 10**9, 16) == parse_spec(fixed)
        assert resolve(parse_spec(fixed), 0, 16) == parse_spec(fixed)


def test_a_backend_takes_only_the_kinds_it_declares() -> None:
    assert parse_spec("ivf", kinds=("flat", "ivf")) == IndexSpec("ivf", {"nlist": 1024})
    assert parse_search("", "ivf") == {"nprobe": 32}  # ivfpq's lists and probes: one default
    with pytest.raises(UnknownNameError, match="'ivfpq'; choose one of: flat, hnsw$"):
        parse_spec("ivfpq", kinds=("flat", "hnsw"))
