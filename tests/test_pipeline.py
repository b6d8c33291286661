"""Indexing folders and datasets into collections: incremental, idempotent, robust."""

import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

from cbir.collection import Collection
from cbir.datasets import Dataset
from cbir.errors import CbirError
from cbir.features import get_extractor
from cbir.images import read_image_file
from cbir.pipeline import (
    ContentPlan,
    index_dataset,
    index_folder,
    prefetched,
    settle_input_size,
)
from tests.conftest import CLASS_COLOURS, noisy_image


@pytest.fixture
def collection(tmp_path):
    # the test images are 32x32, and so is the collection's input (photos would get 128x128)
    created = Collection.create(tmp_path / "col", get_extractor("gch", image_size=32))
    yield created
    created.close()


def write_png(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noisy_image(np.random.default_rng(seed), (90, 90, 90))).save(path)


def test_content_plan_rules():
    plan = ContentPlan({"a.png": "1", "b.png": "2"})
    assert plan.decide("a.png", "1") is None  # unchanged
    assert plan.decide("c.png", "2") is None  # b's content under another name
    assert plan.decide("a.png", "9") == "update"  # a's file changed
    assert plan.decide("d.png", "9") is None  # ... and that content is now known
    assert plan.decide("e.png", "5") == "add"
    assert plan.decide("f.png", "5") is None  # the same file twice in one run


def test_rerun_adds_nothing_and_small_batches_give_the_same_collection(
    labelled_folder, collection, tmp_path
):
    first = index_folder(labelled_folder, collection, batch_size=5)
    assert (first.added, first.skipped_known, first.failed) == (12, 0, [])
    again = index_folder(labelled_folder, collection, batch_size=5)
    assert (again.added, again.skipped_known) == (0, 12)
    with Collection.create(tmp_path / "one-batch", get_extractor("gch", image_size=32)) as other:
        index_folder(labelled_folder, other, batch_size=100)
        assert other.checksums() == collection.checksums()
        np.testing.assert_array_equal(
            other.index.vectors[np.argsort(other.index.ids())],
            collection.index.vectors[np.argsort(collection.index.ids())],
        )


def test_copies_are_one_entry_and_a_changed_file_is_an_update(tmp_path, collection):
    folder = tmp_path / "photos"
    for i in range(4):
        write_png(folder / f"p{i}.png", seed=i)
    (folder / "z-copy-of-p1.png").write_bytes((folder / "p1.png").read_bytes())
    report = index_folder(folder, collection, batch_size=2)
    assert (report.added, report.skipped_known) == (4, 1)
    assert "z-copy-of-p1.png" not in collection.known_ids()
    before = collection.get("p2.png").sha256
    write_png(folder / "p2.png", seed=99)  # the user edited a photo
    report = index_folder(folder, collection)
    assert (report.added, report.updated, report.skipped_known) == (0, 1, 4)
    assert collection.get("p2.png").sha256 != before and len(collection) == 4
    query = np.asarray(Image.open(folder / "p2.png").convert("RGB"))[None]
    assert collection.search_images(query, k=1)[0][0].id == "p2.png"


def test_unreadable_files_are_counted_and_strict_stops_after_what_committed(
    labelled_folder, collection
):
    (labelled_folder / "red" / "zz-broken.png").write_bytes(b"\x89PNG broken")
    report = index_folder(labelled_folder, collection, batch_size=4)
    assert report.added == 12 and len(report.failed) == 1
    assert "zz-broken.png" in report.failed[0][0]
    (labelled_folder / "blue" / "aa-broken.png").write_bytes(b"nope")
    (labelled_folder / "green" / "new.png").write_bytes(
        (labelled_folder / "red" / "red-0.png").read_bytes()
    )
    with pytest.raises(CbirError, match="aa-broken.png.*--strict"):
        index_folder(labelled_folder, collection, batch_size=4, strict=True)
    assert len(collection) == 12


def test_dataset_images_are_stored_and_indexing_is_idempotent(collection):
    rng = np.random.default_rng(0)
    images = np.stack([noisy_image(rng, colour) for colour in CLASS_COLOURS.values()] * 3)
    labels = np.arange(9) % 3
    dataset = Dataset([f"d{i}" for i in range(9)], images, labels, list(CLASS_COLOURS))
    report = index_dataset(dataset, collection, batch_size=4)
    assert report.added == 9 and len(collection) == 9
    again = index_dataset(dataset, collection, batch_size=4)
    assert (again.added, again.skipped_known) == (0, 9)
    stored = collection.image_bytes("d4")
    assert stored.startswith(b"\x89PNG")
    from io import BytesIO

    np.testing.assert_array_equal(np.asarray(Image.open(BytesIO(stored))), images[4])
    assert collection.stats()["labels"] == {"blue": 3, "green": 3, "red": 3}


def test_prefetched_keeps_order_raises_where_the_error_was_and_stops_early():
    assert list(prefetched(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("boom")

    got = []
    with pytest.raises(ValueError, match="boom"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1]

    produced = []

    def endless():
        for i in range(10_000):
            produced.append(i)
            yield i

    for item in prefetched(endless(), depth=2):
        if item == 3:
            break
    time.sleep(0.05)
    assert len(produced) <= 8  # the producer stopped: it never ran far ahead
    assert not any(t.name == "cbir-prefetch" for t in threading.enumerate())


def test_in_memory_images_are_resized_as_their_files_would_be(tmp_path):
    """A dataset of another size than the extractor's input (CIFAR-10 for an ImageNet
    network) is resized batch by batch, to the very pixels decoding its files gives."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    dataset = Dataset([f"i{n}" for n in range(5)], images, np.zeros(5, np.int64), ["a"])
    extractor = get_extractor("hog", image_size=48)
    with Collection.create(tmp_path / "col", extractor) as collection:
        index_dataset(dataset, collection, batch_size=2)
        stored = collection.vectors_of(dataset.ids)
        assert collection.image_bytes("i0") is not None  # the original kept, not the resized
    for n, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{n}.png")
    from_files = np.stack([read_image_file(tmp_path / f"{n}.png", size=(48, 48)) for n in range(5)])
    np.testing.assert_array_equal(stored, extractor.transform(from_files))


# --- input sizes: settled once from the source, recorded, reused ------------------------------
def write_photos(root, n_per_class: int = 3):
    """Real photos (scikit-image's) as 384x256 JPEGs in two class folders, flipped and
    cropped so that no two files are the same."""
    import skimage.data

    photos = {"cat": skimage.data.chelsea(), "coffee": skimage.data.coffee()}
    for label, photo in photos.items():
        (root / label).mkdir(parents=True)
        for i in range(n_per_class):
            crop = photo[10 * i :, 15 * i :][:, :: 1 if i % 2 else -1]
            Image.fromarray(crop).resize((384, 256)).save(root / label / f"{i}.jpg", quality=90)
    return root


@pytest.mark.parametrize("name", ["gch", "hog"])
def test_a_collection_records_its_photo_size_and_reuses_it(tmp_path, name):
    photos = write_photos(tmp_path / "photos")
    extractor = get_extractor(name)
    assert settle_input_size(extractor, photos) is extractor
    assert extractor.input_size == (128, 128) == (extractor.photo_side,) * 2
    with Collection.create(tmp_path / "col", extractor) as created:
        index_folder(photos, created)
    manifest = json.loads((tmp_path / "col" / "manifest.json").read_text())
    assert manifest["extractor"]["params"]["image_size"] == 128
    with Collection.open(tmp_path / "col", read_only=True) as reopened:
        assert reopened.extractor.input_size == (128, 128)
        # a query file decoded at the recorded size finds its own indexed vector exactly
        query = read_image_file(photos / "cat" / "1.jpg", size=reopened.extractor.input_size)
        hit = reopened.search_images(query[None], k=1)[0][0]
        assert hit.id == "cat/1.jpg" and hit.score == pytest.approx(1.0, abs=1e-5)
        # and CIFAR-sized images do not change it
        settle_input_size(reopened.extractor, np.zeros((2, 32, 32, 3), np.uint8))
        assert reopened.extractor.input_size == (128, 128)


def test_cifar_sized_datasets_keep_their_32x32_and_files_get_the_photo_size(tmp_path):
    cifar = np.zeros((4, 32, 32, 3), np.uint8)
    for name in ("gch", "hog", "bovw"):
        assert settle_input_size(get_extractor(name), cifar).input_size == (32, 32)
    hog = settle_input_size(get_extractor("hog"), cifar)
    assert hog.params["image_size"] == 32 and hog.params["pixels_per_cell"] == 8  # as before
    assert settle_input_size(get_extractor("hog", image_size=64), cifar).input_size == (64, 64)
    # a folder is files, whatever their size: as `cbir index` makes its collection
    small = tmp_path / "small" / "red"
    small.mkdir(parents=True)
    Image.fromarray(noisy_image(np.random.default_rng(0), (200, 40, 40))).save(small / "a.png")
    assert settle_input_size(get_extractor("gch"), small.parent).input_size == (128, 128)


def test_a_folder_benchmark_describes_photos_at_the_photo_size(tmp_path):
    from cbir.evaluation.quality_run import BenchmarkOptions, run_folder_benchmark

    photos = write_photos(tmp_path / "photos")
    run_folder_benchmark(
        photos, tmp_path / "out", "gch", options=BenchmarkOptions(depth=5, n_examples=0)
    )
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["extractor"]["params"]["image_size"] == 128


@pytest.mark.parametrize(
    ("name", "size", "message"),
    [
        ("hog", "5000", "image_size=5000 of extractor 'hog' must be in"),
        ("gch", "-3", "image_size=-3 of extractor 'gch' must be in"),
        ("bovw", "8", "image_size=8 of extractor 'bovw' must be in"),
        ("hog", "12", "does not fit in 12x12 images"),
    ],
)
def test_a_bad_image_size_is_a_one_line_error(tmp_path, capsys, name, size, message):
    from cbir.cli import main

    photos = write_photos(tmp_path / "photos", n_per_class=1)
    args = ["index", str(photos), "-c", str(tmp_path / "c"), "-e", name, "-p", f"image_size={size}"]
    if name == "hog" and size == "12":
        args += ["-p", "pixels_per_cell=8"]
    assert main(["-q", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c").exists()
