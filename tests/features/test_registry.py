"""Extractor registry, parameter handling and save/load round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cbir.errors import CbirError, UnknownNameError
from cbir.features import available, get_extractor, load_extractor
from cbir.features.base import PARAMS_FILE

BUILT_IN = {"gch": {"bins": 64}, "hog": {"orientations": 12, "pixels_per_cell": 4}}


def test_built_ins_are_available() -> None:
    assert {"gch", "hog"} <= set(available())


def test_unknown_extractor_lists_choices() -> None:
    with pytest.raises(UnknownNameError) as error:
        get_extractor("sift-magic")
    message = str(error.value)
    assert "sift-magic" in message
    assert all(name in message for name in available())


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_unknown_parameter_lists_valid_ones(name: str) -> None:
    with pytest.raises(CbirError) as error:
        get_extractor(name, colour_space="hsv")
    message = str(error.value)
    assert "colour_space" in message
    assert all(key in message for key in get_extractor(name).params)


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_params_are_complete_and_json_serialisable(name: str) -> None:
    extractor = get_extractor(name, **BUILT_IN[name])
    defaults = get_extractor(name).params
    assert set(extractor.params) == set(defaults)
    assert extractor.params == {**defaults, **BUILT_IN[name]}
    assert json.loads(json.dumps(extractor.describe())) == {
        "name": name,
        "params": extractor.params,
    }


def test_numpy_integers_become_plain_ints() -> None:
    extractor = get_extractor("gch", space="gray", bins=np.int64(32))
    assert type(extractor.params["bins"]) is int
    assert extractor.dim == 32


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    extractor = get_extractor(name, **BUILT_IN[name])
    extractor.save(tmp_path / "extractor")
    assert json.loads((tmp_path / "extractor" / PARAMS_FILE).read_text())["name"] == name
    loaded = load_extractor(tmp_path / "extractor")
    assert type(loaded) is type(extractor)
    assert loaded.params == extractor.params
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.transform(images), extractor.transform(images))
