import hashlib
import http.server
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from cbir.datasets import (
    CIFAR10_CLASSES,
    OFFICIAL_TARBALL,
    load_cifar10,
    load_folder,
    scan_folder,
    user_cache_dir,
)
from cbir.errors import ChecksumError, DataNotFoundError

from .conftest import encode, make_tarball, noisy_image


def test_official_batches_folder(official_cifar):
    data = load_cifar10(official_cifar.parent, download=False)
    assert data.train.images.shape == (100, 32, 32, 3)
    assert data.test.images.shape == (30, 32, 32, 3)
    assert data.train.ids[:2] == ["train-0", "train-1"] and data.test.ids[-1] == "test-29"
    assert data.train.labels[:3].tolist() == [0, 1, 2]
    # Row layout: 1024 red, then 1024 green, then 1024 blue values, row-major.
    batch = pickle.loads((official_cifar / "data_batch_2").read_bytes())
    first = batch[b"data"][0]
    pixel = data.train.images[20, 0, 1]  # batch 2 starts at position 20; row 0, column 1
    assert pixel.tolist() == [first[1], first[1024 + 1], first[2048 + 1]]


def test_official_tarball_equals_folder(official_cifar, tmp_path):
    folder_data = load_cifar10(official_cifar.parent, download=False, use_cache=False)
    tar_dir = tmp_path / "tarball"
    tar_dir.mkdir()
    make_tarball(official_cifar, tar_dir / OFFICIAL_TARBALL)
    tar_data = load_cifar10(tar_dir, download=False)
    np.testing.assert_array_equal(folder_data.train.images, tar_data.train.images)
    assert tar_data.test.ids == folder_data.test.ids


def make_mirror(root: Path) -> Path:
    rng = np.random.default_rng(2)
    for split, count in (("train", 3), ("test", 2)):
        for label in CIFAR10_CLASSES:
            folder = root / "cifar10-jpeg" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                image = noisy_image(rng, (CIFAR10_CLASSES.index(label) * 25, 100, 100))
                (folder / f"{i:04d}.jpg").write_bytes(encode(image, "JPEG"))
    return root / "cifar10-jpeg"


def test_jpeg_mirror_folder_and_tarball(tmp_path):
    mirror = make_mirror(tmp_path / "a")
    from_folder = load_cifar10(mirror.parent, download=False, use_cache=False)
    assert len(from_folder.train) == 30 and len(from_folder.test) == 20
    assert from_folder.test.ids[:3] == [
        "test-airplane-0000",
        "test-airplane-0001",
        "test-automobile-0000",
    ]
    assert from_folder.test.labels[:3].tolist() == [0, 0, 1]
    (tmp_path / "b").mkdir()
    make_tarball(mirror, tmp_path / "b" / "cifar10-jpeg.tar.gz")
    from_tar = load_cifar10(tmp_path / "b", download=False)
    np.testing.assert_array_equal(from_tar.train.images, from_folder.train.images)


def test_environment_variable_is_used(official_cifar, monkeypatch):
    monkeypatch.setenv("CBIR_DATA_DIR", str(official_cifar.parent))
    assert len(load_cifar10(download=False).train) == 100


def test_second_load_comes_from_the_cache(official_cifar):
    first = load_cifar10(official_cifar.parent, download=False)
    cached = list((user_cache_dir() / "arrays").glob("*.npz"))
    assert len(cached) == 1
    for name in ("data_batch_1", "test_batch"):  # the source could not be read again
        (official_cifar / name).write_bytes(b"broken")
    second = load_cifar10(official_cifar.parent, download=False)
    np.testing.assert_array_equal(first.train.images, second.train.images)


def test_nothing_found_names_both_options(tmp_path):
    with pytest.raises(DataNotFoundError, match="--data DIR.*CBIR_DATA_DIR"):
        load_cifar10(tmp_path, download=False)


def test_hostile_pickle_is_refused(official_cifar):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    (official_cifar / "test_batch").write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(DataNotFoundError, match="refusing to load builtins.print"):
        load_cifar10(official_cifar.parent, download=False)


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving files from a folder."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_verifies_checksum_and_loads(official_cifar, http_server, tmp_path):
    root, base = http_server
    tarball = make_tarball(official_cifar, root / OFFICIAL_TARBALL)
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
    empty = tmp_path / "empty"
    empty.mkdir()
    data = load_cifar10(empty, url=f"{base}/{OFFICIAL_TARBALL}", md5=md5)
    assert len(data.train) == 100
    assert (user_cache_dir() / OFFICIAL_TARBALL).exists()


def test_download_with_wrong_checksum_leaves_nothing(official_cifar, http_server, tmp_path):
    root, base = http_server
    make_tarball(official_cifar, root / OFFICIAL_TARBALL)
    with pytest.raises(ChecksumError, match="expected 0+"):
        load_cifar10(tmp_path, url=f"{base}/{OFFICIAL_TARBALL}", md5="0" * 32)
    assert list(user_cache_dir().glob("*")) == []


def test_unreachable_download_is_a_clear_error(tmp_path, http_server):
    _, base = http_server
    with pytest.raises(DataNotFoundError, match="download .* failed.*CBIR_DATA_DIR"):
        load_cifar10(tmp_path, url=f"{base}/missing.tar.gz")


def test_scan_folder_labels_and_hidden_files(labelled_folder):
    (labelled_folder / ".hidden.png").write_bytes(b"x")
    (labelled_folder / "loose.png").write_bytes(b"x")
    (labelled_folder / "notes.txt").write_text("not an image")
    entries = scan_folder(labelled_folder)
    assert len(entries) == 13
    loose = next(e for e in entries if e.id == "loose.png")
    assert loose.label is None
    assert {e.label for e in entries} == {None, "red", "green", "blue"}
    assert entries[0].id == "blue/blue-0.png"


def test_load_folder_skips_unreadable_images(labelled_folder):
    (labelled_folder / "red" / "broken.jpg").write_bytes(b"not a jpeg")
    data = load_folder(labelled_folder, size=(32, 32))
    assert len(data) == 12 and data.labelled
    assert data.class_names == ["blue", "green", "red"]
    assert len(data.failures) == 1 and "broken.jpg" in data.failures[0][0]


def test_flat_folder_is_unlabelled(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(encode(noisy_image(rng, (9, 9, 9))))
    data = load_folder(tmp_path, size=(16, 16))
    assert data.labels.tolist() == [-1, -1, -1] and not data.labelled


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="not a folder"):
        scan_folder(tmp_path / "nowhere")
