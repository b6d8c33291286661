"""The contract every registered extractor keeps, checked on each (`available()`, the toy one
of tests/features/toy_extractor.py included): fitted where it learns, on a tiny labelled set,
its vectors have its declared dimension, are finite float32, the same for the same input,
survive a save/load unchanged, and do not depend on its runtime knobs; its parameters round
trip through `get_params()` and bad ones are one-line CbirErrors."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from cbir.errors import CbirError, UnknownNameError
from cbir.features import available, get_extractor, load_extractor
from cbir.features.base import PARAMS_FILE, Extractor

from . import toy_extractor  # noqa: F401  registers "toy"

# name -> (parameters that keep it fast, one value out of range)
CASES = {
    "gch": ({}, {"bins": 0}),
    "hog": ({"orientations": 12}, {"orientations": 0}),
    "bovw": (
        {
            "vocabulary_size": 8,
            "vocabulary_images": 30,
            "max_iter": 200,
            "classes": 3,
            "threads": 1,
        },
        {"pyramid_levels": 0},
    ),  # fmt: skip
    "bovw-reference": (
        {
            "vocabulary_size": 8,
            "kmeans_n_init": 1,
            "kmeans_max_iter": 20,
            "max_iter": 300,
            "classes": 3,
            "threads": 1,
        },
        {"vocabulary_size": 1},
    ),  # fmt: skip
    # the committed default weights; class fusion and query TTA take every route
    "cnn": ({"class_fusion": True, "query_tta": 1, "bf16": False, "threads": 1}, {"tta": 3}),
    "efficientnet": ({"image_size": 64, "bf16": False, "threads": 1}, {"image_size": 16}),
    "toy": ({"grid": 2}, {"grid": 3}),
}
NAMES = available()


def labelled_images(side: int, per_class: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Three easy classes (horizontal stripes, vertical stripes, a checkerboard) plus noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side] // max(1, side // 8)
    patterns = [y % 2, x % 2, (y + x) % 2]
    images = [np.repeat((pattern * 180 + rng.integers(0, 60, (side, side)))[..., None], 3, 2)
              for pattern in patterns for _ in range(per_class)]  # fmt: skip
    return np.asarray(images, np.uint8), np.repeat(np.arange(3), per_class)


def fitted(name: str) -> tuple[Extractor, np.ndarray, np.ndarray]:
    """A new extractor of `name` and its tiny labelled images, fitted on them if it learns."""
    extractor = get_extractor(name, **CASES[name][0])
    images, labels = labelled_images(extractor.settle_image_size(32).input_size[0])
    if extractor.needs_fit:
        extractor.fit(images, labels)
    return extractor, images, labels


@functools.cache
def shared(name: str) -> tuple[Extractor, np.ndarray, np.ndarray]:
    """One fitted extractor per name for the checks that do not change it."""
    return fitted(name)


def every_route(extractor: Extractor, images: np.ndarray, labels: np.ndarray) -> dict:
    """The vectors of index images (with and without their labels) and of queries."""
    return {
        "transform": extractor.transform(images),
        "transform_query": extractor.transform_query(images),
        "transform_index": extractor.transform_index(images, labels),
    }


def test_every_registered_extractor_has_a_case() -> None:
    assert set(NAMES) == set(CASES)


@pytest.mark.parametrize("name", NAMES)
def test_vectors_have_the_declared_dimension_and_are_finite_float32(name: str) -> None:
    extractor, images, labels = shared(name)
    for route, vectors in every_route(extractor, images, labels).items():
        assert vectors.shape == (len(images), extractor.dim), route
        assert vectors.dtype == np.float32 and np.isfinite(vectors).all(), route
    assert extractor.transform(images[:0]).shape == (0, extractor.dim)


@pytest.mark.parametrize("name", NAMES)
def test_the_same_input_gives_the_same_vectors(name: str) -> None:
    extractor, images, labels = shared(name)
    first, again = every_route(extractor, images, labels), every_route(extractor, images, labels)
    refitted = every_route(*fitted(name))  # fitting is seeded too
    for route in first:
        np.testing.assert_array_equal(again[route], first[route], err_msg=route)
        np.testing.assert_array_equal(refitted[route], first[route], err_msg=route)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_keeps_the_vectors(name: str, tmp_path: Path) -> None:
    extractor, images, labels = shared(name)
    extractor.save(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / PARAMS_FILE).read_text())["name"] == name
    loaded = load_extractor(tmp_path / "saved")
    assert type(loaded) is type(extractor) and loaded.dim == extractor.dim
    assert loaded.get_params() == extractor.get_params()
    assert loaded.get_knobs() == extractor.get_knobs()
    before, after = every_route(extractor, images, labels), every_route(loaded, images, labels)
    for route in before:
        np.testing.assert_array_equal(after[route], before[route], err_msg=route)


@pytest.mark.parametrize("name", NAMES)
def test_runtime_knobs_do_not_change_the_vectors(name: str) -> None:
    extractor, images, labels = shared(name)
    knobs = {key: 1 if value != 1 else 2 for key, value in extractor.get_knobs().items()}
    if not knobs:
        pytest.skip(f"{name} has no runtime knobs")
    other = fitted(name)[0].set_knobs(**knobs)
    assert other.get_knobs() == {**extractor.get_knobs(), **knobs}
    assert other.get_params() == extractor.get_params()
    before, after = every_route(extractor, images, labels), every_route(other, images, labels)
    for route in before:
        # a network's batch size and threads change only the order of float32 sums
        np.testing.assert_allclose(after[route], before[route], rtol=0, atol=1e-6, err_msg=route)


@pytest.mark.parametrize("name", NAMES)
def test_parameters_round_trip_through_get_params(name: str) -> None:
    extractor = get_extractor(name, **CASES[name][0])
    params = extractor.get_params()
    assert json.loads(json.dumps(params)) == params  # plain JSON values
    assert not set(params) & set(extractor.get_knobs())  # knobs are kept apart
    again = get_extractor(name, **params, **extractor.get_knobs())
    assert again.get_params() == params and again.get_knobs() == extractor.get_knobs()
    assert extractor.comparable_params({**params, **extractor.get_knobs()}) == params
    assert extractor.describe()["name"] == name


@pytest.mark.parametrize("name", NAMES)
def test_bad_parameters_are_one_line_errors(name: str) -> None:
    def error(**params) -> str:
        with pytest.raises(CbirError) as raised:
            get_extractor(name, **params)
        assert not isinstance(raised.value, UnknownNameError)
        assert "\n" not in str(raised.value)
        return str(raised.value)

    unknown = error(no_such_parameter=1)
    assert "no_such_parameter" in unknown and f"extractor {name!r}" in unknown
    extractor = get_extractor(name)
    assert all(key in unknown for key in [*extractor.get_params(), *extractor.get_knobs()])
    for key in [*extractor.get_params(), *extractor.get_knobs()]:
        assert f"parameter {key}=" in error(**{key: object()})  # of no declared type
    (key, value), = CASES[name][1].items()  # fmt: skip
    assert error(**{key: value}).startswith(f"parameter {key}={value!r} of extractor {name!r}")


def test_unknown_extractor_lists_choices() -> None:
    with pytest.raises(UnknownNameError) as error:
        get_extractor("sift-magic")
    message = str(error.value)
    assert "sift-magic" in message and all(name in message for name in available())


def test_numpy_scalars_become_plain_values() -> None:
    extractor = get_extractor("gch", space="gray", bins=np.int64(32), sqrt=np.bool_(False))
    assert type(extractor.params["bins"]) is int and extractor.params["sqrt"] is False
    assert extractor.dim == 32


def test_parameters_written_by_earlier_versions_read_as_today() -> None:
    """Collections written before parameters were typed hold sentinels ("" for the default
    weights, -1 for "as tta"), lists as "a,b" and runtime knobs among the parameters: they
    build the same extractor and compare equal."""
    earlier = {"weights": "", "arch": "", "layer": "", "query_tta": -1, "classifiers": "",
               "batch_size": 64, "threads": 1, "class_fusion": True}  # fmt: skip
    extractor = get_extractor("cnn", **earlier)
    assert extractor.get_params() == get_extractor("cnn", class_fusion=True).get_params()
    assert extractor.get_knobs() == {"batch_size": 64, "threads": 1}
    assert extractor.comparable_params(earlier) == {
        "weights": None, "arch": None, "layer": None, "query_tta": None, "classifiers": [],
        "class_fusion": True,
    }  # fmt: skip
    committee = {"class_fusion": True, "classifiers": "wide,wide-seed1"}
    assert get_extractor("cnn", **committee).params["classifiers"] == ["wide", "wide-seed1"]
    assert extractor.comparable_params(committee)["classifiers"] == ["wide", "wide-seed1"]
    assert get_extractor("cnn-committee").params["classifiers"] == ["wide", "wide-seed1"]
    assert get_extractor("efficientnet", weights="").params["weights"] is None
