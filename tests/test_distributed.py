"""Feature extraction on Ray (local mode): the same vectors, in the same order, as in-process."""

import argparse
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'cbir[ray]')")

import ray  # noqa: E402

from cbir.collection import Collection  # noqa: E402
from cbir.commands.ray_options import add_ray_argument, describer_from_args  # noqa: E402
from cbir.distributed import RayDescriber, describe_on_ray  # noqa: E402
from cbir.errors import CbirError  # noqa: E402
from cbir.features import get_extractor  # noqa: E402
from cbir.pipeline import index_folder  # noqa: E402
from tests.conftest import CLASS_COLOURS, noisy_image  # noqa: E402

# Ray's own DataContext warns about its own deprecated fields; nothing here sets them.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


def test_a_ray_it_started_is_stopped_again():
    """Runs first, before the shared Ray below exists."""
    images = np.random.default_rng(1).integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    extractor = get_extractor("gch")
    vectors = describe_on_ray(extractor, images, address="local", num_cpus=2)
    np.testing.assert_array_equal(vectors, extractor.transform(images))
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the whole file: starting it takes seconds."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("name", ["gch", "hog"])
def test_vectors_equal_transform_in_order(local_ray, name):
    images = np.random.default_rng(3).integers(0, 256, size=(203, 32, 32, 3), dtype=np.uint8)
    extractor = get_extractor(name)
    # Small blocks: several workers, blocks finishing in any order.
    vectors = describe_on_ray(extractor, images, batch_size=16)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, extractor.transform(images), rtol=0, atol=1e-6)
    assert ray.is_initialized()  # a Ray it only joined is left running


def test_index_folder_through_ray_matches_local(local_ray, tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "photos"
    for label, colour in CLASS_COLOURS.items():
        (folder / label).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(noisy_image(rng, colour)).save(folder / label / f"{label}-{i}.png")
    collections = {}
    with RayDescriber(batch_size=8) as describer:
        for how, route in (("local", None), ("ray", describer)):
            with Collection.create(tmp_path / how, get_extractor("hog")) as collection:
                report = index_folder(folder, collection, batch_size=25, describer=route)
                assert (report.added, report.failed) == (60, [])
                order = np.argsort(collection.index.ids())
                collections[how] = (
                    np.asarray(collection.index.ids())[order],
                    collection.index.vectors[order],
                )
    np.testing.assert_array_equal(collections["ray"][0], collections["local"][0])
    np.testing.assert_allclose(collections["ray"][1], collections["local"][1], atol=1e-6)


def test_unreachable_cluster_is_a_clear_error_and_fast(local_ray):
    started = time.perf_counter()
    with pytest.raises(CbirError, match="cannot reach the Ray cluster"):
        describe_on_ray(
            get_extractor("gch"), np.zeros((2, 32, 32, 3), np.uint8), "ray://127.0.0.1:1"
        )
    assert time.perf_counter() - started < 10


def test_ray_flag(monkeypatch):
    parser = argparse.ArgumentParser()
    add_ray_argument(parser)
    assert describer_from_args(parser.parse_args([])) is None
    monkeypatch.setenv("CBIR_RAY_ADDRESS", "ray://head:10001")
    bare = describer_from_args(parser.parse_args(["--ray"]))
    given = describer_from_args(parser.parse_args(["--ray", "local"]))
    try:
        assert bare.session.address == "ray://head:10001"  # the environment fills a bare flag
        assert given.session.address == "local"
    finally:
        bare.close()
        given.close()


class LateRay:
    """Ray's module surface as `RaySession` uses it, whose node misses the startup deadline
    `failures` times: the real failure depends on machine load and cannot be produced on
    demand."""

    def __init__(self, failures: int) -> None:
        self.failures, self.inits, self.shutdowns = failures, 0, 0

    def is_initialized(self) -> bool:
        return False

    def init(self, **_options) -> None:
        self.inits += 1
        if self.inits <= self.failures:
            raise Exception("The current node timed out during startup.")

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.mark.parametrize(("failures", "started"), [(1, True), (2, False)])
def test_a_local_ray_late_at_startup_is_tried_twice(monkeypatch, failures, started):
    from cbir import distributed

    late = LateRay(failures)
    monkeypatch.setattr(distributed, "import_ray", lambda: late)
    session = distributed.RaySession("local")
    if started:
        assert session.connect() is late
    else:
        with pytest.raises(CbirError, match="could not start a local Ray: The current node"):
            session.connect()
    assert late.inits == 2 and late.shutdowns == failures  # each late start cleaned up
