"""A collection folder's layout and its manifest, the file that makes a folder a collection.

    <folder>/manifest.json     schema version, extractor {name, params}, dim, metric, backend,
                               counts and the generation they describe, created / updated
    <folder>/extractor/        the extractor's parameters and learnt state (arrays + JSON)
    <folder>/metadata.sqlite   image rows, their vectors and stored image bytes: the source of
                               truth, changed one transaction at a time (see cbir.database)
    <folder>/writer.lock       held (fcntl.flock) by the one process allowed to write

The manifest pins the extractor state by checksum: `load_collection_extractor` loads it only
when it is the one the manifest names. Read without opening the collection by `cbir verify`
(cbir.integrity) and by the benchmark; written by cbir.collection_store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from cbir import __version__
from cbir.errors import CbirError, CollectionError
from cbir.features import Extractor, load_extractor
from cbir.features.base import SMALL_SIDE

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
METADATA = "metadata.sqlite"
EXTRACTOR_DIR = "extractor"
LOCK_FILE = "writer.lock"


def timestamp() -> str:
    """Now, as the manifest and the image rows record it (UTC, to the second)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def new_manifest(
    folder: Path, extractor: Extractor, metric: str, backend: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """The manifest of a new, empty collection whose extractor is saved in `folder` already.
    `settings`: the backend's settings without secrets."""
    fitted = extractor.fit_record_.describe() if extractor.fit_record_ else None
    return {
        "schema_version": SCHEMA_VERSION,
        "cbir_version": __version__,
        "extractor": _as_json(extractor.describe()),
        # what the extractor learnt is part of the collection: pinned by checksum
        "extractor_files": extractor_checksums(folder / EXTRACTOR_DIR),
        "fitted": fitted,
        "dim": extractor.dim,
        "metric": metric,
        "backend": {"name": backend, "settings": _as_json(settings)},
        "counts": {"images": 0},
        "generation": 0,
        "created": timestamp(),
        "updated": timestamp(),
    }


def _as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value))


def extractor_checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file of a saved extractor (parameters, learnt state, fit record)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


def load_collection_extractor(folder: Path, manifest: dict[str, Any]) -> Extractor:
    """The collection's extractor, checked against what its manifest promises."""
    pinned = manifest.get("extractor_files")  # absent in collections made before it was kept
    if pinned is not None:
        try:
            found = extractor_checksums(folder / EXTRACTOR_DIR)
        except OSError as error:
            raise CollectionError(f"{folder}: {EXTRACTOR_DIR}/ is unreadable ({error})") from None
        changed = sorted(name for name in pinned.keys() | found.keys()
                         if pinned.get(name) != found.get(name))  # fmt: skip
        if changed:
            raise CollectionError(
                f"{folder}: {EXTRACTOR_DIR}/ does not match its checksums in the manifest "
                f"({', '.join(changed)} missing, added or changed); the collection is damaged"
            )
    try:
        extractor = load_extractor(folder / EXTRACTOR_DIR)
    except CbirError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CollectionError(
            f"{folder}: the extractor state in {EXTRACTOR_DIR}/ is unreadable ({error})"
        ) from None
    promised = manifest["extractor"]
    if extractor.photo_side and not promised.get("params", {}).get("image_size"):
        # Written before an image size could be "auto" (0), the manifest names none, or 0:
        # its vectors were made at the 32x32 the pipeline then decoded every image to.
        extractor.settle_image_size(SMALL_SIDE)
        promised = {**promised, "params": {**promised.get("params", {}), "image_size": SMALL_SIDE}}
    # an earlier manifest's form (sentinels, "a,b" lists, runtime knobs) read as today's
    promised = {**promised, "params": extractor.comparable_params(promised.get("params", {}))}
    if not _same_extractor(_as_json(extractor.describe()), promised):
        raise CollectionError(
            f"{folder}: {EXTRACTOR_DIR}/ holds {extractor.describe()} but the manifest says "
            f"{manifest['extractor']}; the collection is damaged"
        )
    if extractor.dim != manifest["dim"]:
        raise CollectionError(
            f"{folder}: extractor gives {extractor.dim}-d vectors but the manifest says "
            f"{manifest['dim']}; the collection is damaged"
        )
    return extractor


def _same_extractor(loaded: dict[str, Any], promised: dict[str, Any]) -> bool:
    """The loaded extractor is the one the manifest names. A manifest written before a
    parameter existed lacks it; the extractor then filled it in with the value that keeps the
    old behaviour (e.g. gch without `space` is the gray histogram), so only the manifest's own
    parameters are compared."""
    params = promised.get("params", {})
    return loaded["name"] == promised.get("name") and all(
        loaded["params"].get(key) == value for key, value in params.items()
    )


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise CollectionError(
            f"{folder} is not a collection (no {MANIFEST}); create one with `cbir index`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CollectionError(f"{path} is unreadable ({error})") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise CollectionError(
            f"{path} has schema version {version!r}; this cbir reads up to {SCHEMA_VERSION}. "
            "Upgrade cbir to open it"
        )
    if version < SCHEMA_VERSION:
        raise CollectionError(
            f"{path} has schema version {version}, from an older cbir that kept vectors in "
            "files; index its images again into a new collection folder"
        )
    return manifest
