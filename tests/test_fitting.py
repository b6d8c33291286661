"""Fitting is a step of indexing: `cbir index` fits an extractor that learns, keeps what it
learnt in the collection (checksummed), and describes labelled index images with their true
class where the method says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cbir.cli import main
from cbir.collection import Collection
from cbir.datasets import CIFAR10_CLASSES
from cbir.features import get_extractor
from cbir.features.presets import PRESETS
from cbir.images import read_image_file
from tests.test_batch_search import BOVW_SMALL, textured_folder


def index(folder: Path, collection: Path, *options: str) -> int:
    return main(["-q", "index", str(folder), "-c", str(collection), *options])


def test_index_fits_a_learning_extractor_on_the_labelled_images(tmp_path, capsys):
    folder = textured_folder(tmp_path / "photos", 6, seed=3)
    collection = tmp_path / "col"
    assert index(folder, collection, "-e", "bovw", *BOVW_SMALL) == 0
    manifest = json.loads((collection / "manifest.json").read_text())
    assert manifest["fitted"] == f"supervised, fitted on {folder.resolve()} (18 images)"
    assert manifest["extractor"]["params"]["classes"] == 3  # as many as the folder has
    pinned = manifest["extractor_files"]
    assert {"params.json", "classes.json", "fit.json", "vocabulary.npy"} <= set(pinned)
    capsys.readouterr()
    query = folder / "rows" / "00.png"
    assert main(["search", str(query), "-c", str(collection), "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]
    assert [hit["label"] for hit in hits] == ["rows"] * 3
    # a second run reuses the fitted state: nothing refitted, nothing re-added
    assert index(folder, collection, "-e", "bovw", *BOVW_SMALL) == 0
    assert "already indexed 18" in capsys.readouterr().out
    assert json.loads((collection / "manifest.json").read_text())["extractor_files"] == pinned
    assert main(["verify", "-c", str(collection)]) == 0
    (collection / "extractor" / "classes.json").write_text('["rows", "checks", "columns"]')
    assert main(["verify", "-c", str(collection)]) == 1
    assert "classes.json missing, added or changed" in capsys.readouterr().out


def test_fit_on_another_folder_for_unlabelled_photos(tmp_path, capsys):
    labelled = textured_folder(tmp_path / "labelled", 6, seed=4)
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in sorted(labelled.rglob("0[0-2].png")):
        (flat / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    collection = tmp_path / "col"
    assert index(flat, collection, "-e", "bovw", *BOVW_SMALL) == 2
    assert "--fit-on DIR" in capsys.readouterr().err
    assert not (collection / "manifest.json").exists()
    assert index(flat, collection, "-e", "bovw", *BOVW_SMALL, "--fit-on", str(labelled)) == 0
    fitted = json.loads((collection / "manifest.json").read_text())["fitted"]
    assert fitted == f"supervised, fitted on {labelled.resolve()} (18 images)"
    with Collection.open(collection, read_only=True) as opened:
        assert len(opened) == 9 and opened.extractor.class_names == ["checks", "columns", "rows"]


def test_class_fusion_gives_labelled_index_images_their_true_class(tmp_path):
    """cnn-fused appends a one-hot class: the TRUE one for an image in a class folder the
    network knows (CIFAR-10's names), the predicted one for any other."""
    rng = np.random.default_rng(5)
    folder = tmp_path / "photos"
    for label in ("cat", "truck", "zebra"):
        (folder / label).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{i}.png")
    collection = tmp_path / "col"
    assert index(folder, collection, "-e", "cnn-fused") == 0
    with Collection.open(collection, read_only=True) as opened:
        extractor = opened.extractor
        assert extractor.params["class_fusion"] and extractor.params["query_tta"] == 2
        for label in ("cat", "truck", "zebra"):
            ids = [f"{label}/0.png", f"{label}/1.png"]
            onehot = opened.vectors_of(ids)[:, -len(CIFAR10_CLASSES) :]
            if label == "zebra":  # not a class it knows: the network's own prediction
                images = np.stack([read_image_file(folder / i) for i in ids])
                expected = extractor.transform(images)[:, -len(CIFAR10_CLASSES) :].argmax(1)
            else:
                expected = [CIFAR10_CLASSES.index(label)] * 2
            assert onehot.argmax(1).tolist() == list(expected)


def test_presets_are_extractors_with_their_measured_setting(capsys):
    committee = get_extractor("cnn-committee")
    assert committee.name == "cnn"
    assert committee.params["classifiers"] == ["wide", "wide-seed1"]
    assert get_extractor("cnn-committee", query_tta=0).params["query_tta"] == 0
    assert main(["extractors"]) == 0
    listing = capsys.readouterr().out
    for name, preset in PRESETS.items():
        assert name in listing and preset.measured in listing


@pytest.mark.parametrize(
    ("option", "message"),
    [("foo=1", "unknown setting(s) foo for backend 'faiss'"), ("index=5", "index spec")],
)
def test_a_bad_backend_option_is_one_line(tmp_path, capsys, option, message):
    folder = textured_folder(tmp_path / "photos", 2, seed=6)
    code = index(folder, tmp_path / "col", "-e", "gch", "--backend", "faiss",
                 "--backend-option", option)  # fmt: skip
    error = capsys.readouterr().err
    assert code == 2 and message in error and "Traceback" not in error
    assert len(error.strip().splitlines()) == 1
