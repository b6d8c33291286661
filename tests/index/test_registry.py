"""Backends as declared plugins: what each declares matches what it takes, and a backend
added by one file and one registration line (tests/index/toy_backend.py, "toy") is taken by
`create_index`, settings resolution and the CLI like a built-in one. The contract suite
(test_contract.py) runs over every registered backend, the toy included."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest

import tests.index.toy_backend  # noqa: F401 (registers "toy")
from cbir.cli import main
from cbir.errors import CbirError, UnknownNameError
from cbir.index import available, backend_class, backends, check_settings, create_index
from cbir.index.settings import settings_at_open, settings_for_new_collection
from cbir.index.spec import parse_spec


@pytest.mark.parametrize("name", available())
def test_each_declaration_matches_its_constructor(name: str) -> None:
    cls = backend_class(name)
    parameters = inspect.signature(cls.__init__).parameters
    assert cls.name == name
    assert [s.name for s in cls.declared_settings] == list(parameters)[
        3:
    ]  # after self, dim, metric
    for setting in cls.declared_settings:
        assert parameters[setting.name].default == setting.default, setting.name
        assert setting.secret == (setting.env is not None and setting.name != cls.connection)
    if cls.keeps_data:  # a server: where it is, its index's name there, how to start one
        assert cls.setting(cls.connection).env and cls.setting(cls.name_setting)
    if cls.index_kinds:  # the shared grammar: its default index spec parses
        parse_spec(cls.setting("index").default, kinds=cls.index_kinds)


def test_the_toy_backend_is_registered_by_its_one_line() -> None:
    assert "toy" in available() and backend_class("toy").name == "toy"
    assert backend_class("toy") in backends()
    with pytest.raises(UnknownNameError, match="'nope'; choose one of: .*'toy'"):
        backend_class("nope")


def test_create_index_takes_the_toy_and_checks_its_settings() -> None:
    index = create_index("toy", dim=3, metric="ip", index="flat")
    index.add(["a", "b"], np.eye(3, dtype=np.float32)[:2])
    assert index.search(np.eye(3, dtype=np.float32)[1], 2)[0] == [["b", "a"]]
    with pytest.raises(CbirError, match="unknown setting.s. ef for backend 'toy'.*: index, search"):
        create_index("toy", dim=3, ef=5)
    with pytest.raises(CbirError, match="setting index must be a string"):
        check_settings("toy", {"index": 5})
    with pytest.raises(CbirError, match="unknown index kind 'hnsw'; choose one of: flat"):
        check_settings("toy", {"index": "hnsw"})
    with pytest.raises(CbirError, match="looks like a secret"):
        check_settings("toy", {"password": "x"})


def test_settings_resolution_takes_the_toy(tmp_path: Path) -> None:
    stored = settings_for_new_collection("toy", {"index": "flat"})
    assert stored == {"index": "flat"}  # not a server: no connection, no index name
    assert settings_at_open("toy", stored, tmp_path, {"search": ""}) == (
        {"index": "flat", "search": ""},
        "toy",
    )


def test_the_cli_indexes_and_searches_through_the_toy(labelled_folder, tmp_path, capsys) -> None:
    collection = tmp_path / "col"
    assert main(["index", str(labelled_folder), "-c", str(collection), "-e", "gch",
                 "--backend", "toy", "--backend-option", "index=flat"]) == 0  # fmt: skip
    manifest = json.loads((collection / "manifest.json").read_text())
    assert manifest["backend"] == {"name": "toy", "settings": {"index": "flat"}}
    capsys.readouterr()
    query = next(labelled_folder.glob("red/*.png"))
    assert main(["search", str(query), "-c", str(collection), "-k", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["label"] == "red"
    # a bad option is one line, before any collection is written
    code = main(["index", str(labelled_folder), "-c", str(tmp_path / "bad"), "-e", "gch",
                 "--backend", "toy", "--backend-option", "nprobe=3"])  # fmt: skip
    error = capsys.readouterr().err
    assert code == 2 and "unknown setting(s) nprobe for backend 'toy'" in error
    assert len(error.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_the_cli_help_is_read_from_the_declarations(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["index", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for cls in backends():
        assert cls.name in text
    assert "toy: index=flat, search" in text and "$CBIR_MILVUS_URI" in text
    with pytest.raises(SystemExit):
        main(["index", "x", "--backend", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_an_older_cbirs_setting_names_say_how_they_are_written_today() -> None:
    with pytest.raises(CbirError, match=r"today written search=ef=200, index=hnsw:M=16,"):
        check_settings("elasticsearch", {"search": "knn", "num_candidates": 200})
    with pytest.raises(CbirError, match=r"today written index=hnsw:M=8,ef_construction=200, "):
        check_settings("milvus", {"index": "HNSW", "M": 8})
