"""Adding an extractor is one file and one registration line (tests/features/toy_extractor.py):
the contract suite runs over it (test_contract.py), and `get_extractor`, `cbir index` and
`cbir search` take it by name like a built-in one."""

from __future__ import annotations

import json

import pytest

from cbir.cli import main
from cbir.errors import CbirError
from cbir.features import available, get_extractor

from . import toy_extractor


def test_the_toy_is_registered_by_its_one_line() -> None:
    assert "toy" in available()
    extractor = get_extractor("toy", grid=2)
    assert isinstance(extractor, toy_extractor.Thumbnail) and extractor.name == "toy"
    assert extractor.dim == 12 and extractor.params == {"grid": 2}
    with pytest.raises(CbirError, match="parameter grid=3 of extractor 'toy' must divide 32"):
        get_extractor("toy", grid=3)


def test_cbir_index_and_search_take_the_toy(labelled_folder, tmp_path, capsys) -> None:
    collection = tmp_path / "toy"
    assert main(["index", str(labelled_folder), "-c", str(collection), "-e", "toy",
                 "-p", "grid=2"]) == 0  # fmt: skip
    assert "the collection holds 12 images" in capsys.readouterr().out
    manifest = json.loads((collection / "manifest.json").read_text())
    assert manifest["extractor"] == {"name": "toy", "params": {"grid": 2}}
    assert manifest["dim"] == 12

    query = labelled_folder / "green" / "green-0.png"
    assert main(["search", str(query), "-c", str(collection), "-k", "4"]) == 0
    ranked = [line.split() for line in capsys.readouterr().out.splitlines()]
    ranked = [row for row in ranked if row and row[0].isdigit()]
    assert [row[2] for row in ranked] == ["green"] * 4  # its own class first, itself at 1
    assert ranked[0][3].endswith("green-0.png")
