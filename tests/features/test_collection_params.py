"""What a collection compares of its extractor: the parameters that make the vectors, in any
form a cbir version wrote them; never the runtime knobs (batch size, threads)."""

from __future__ import annotations

import json
from pathlib import Path

from cbir.cli import main
from cbir.manifest import EXTRACTOR_DIR, MANIFEST, extractor_checksums


def as_written_before_typed_parameters(collection: Path) -> None:
    """Rewrite a cnn collection's params.json and manifest as cbir wrote them before: runtime
    knobs among the parameters, "" for the default weights, -1 for "as tta", lists "a,b"."""
    params_file = collection / EXTRACTOR_DIR / "params.json"
    saved = json.loads(params_file.read_text())
    old = {**saved["params"], **saved["knobs"], "weights": "", "arch": "", "layer": "",
           "query_tta": -1, "classifiers": ""}  # fmt: skip
    params_file.write_text(json.dumps({"name": "cnn", "params": old}, indent=2, sort_keys=True))
    manifest = json.loads((collection / MANIFEST).read_text())
    manifest["extractor"]["params"] = old
    manifest["extractor_files"] = extractor_checksums(collection / EXTRACTOR_DIR)
    (collection / MANIFEST).write_text(json.dumps(manifest))


def test_an_earlier_collection_opens_and_takes_other_runtime_knobs(
    labelled_folder: Path, tmp_path: Path, capsys
) -> None:
    collection = tmp_path / "cnn"
    index = ["index", str(labelled_folder), "-c", str(collection)]
    assert main([*index, "-e", "cnn", "-p", "batch_size=8", "-p", "threads=1"]) == 0
    query = str(labelled_folder / "red" / "red-0.png")
    assert main(["search", query, "-c", str(collection), "-k", "3"]) == 0
    ranking = capsys.readouterr().out.splitlines()[-3:]

    as_written_before_typed_parameters(collection)
    assert main(["search", query, "-c", str(collection), "-k", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == ranking
    # another batch size or thread count is the same extractor: accepted, for this run
    assert main([*index, "-p", "batch_size=2", "-p", "threads=2", "-p", "weights="]) == 0
    assert "already indexed 12" in capsys.readouterr().out
    # a parameter that changes the vectors is not
    assert main([*index, "-p", "tta=1"]) == 2
    assert 'built with cnn {"tta": 0}, not {"tta": 1}' in capsys.readouterr().err
