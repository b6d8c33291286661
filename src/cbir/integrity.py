"""Do a collection's manifest, extractor state, metadata and vectors agree? (`cbir verify`)

Problems (the collection is damaged):
  - the manifest is unreadable or of a schema this cbir does not read;
  - the extractor state does not load, or disagrees with the manifest (name, parameters, dim);
  - SQLite's integrity check fails;
  - image rows without a vector, vectors without an image row, duplicate ids;
  - vectors that are not of the manifest's dimension, or hold NaN / infinity;
  - images with no file of their own whose stored bytes are missing or do not match their
    sha256;
  - manifest counts that disagree with the database at the generation the manifest names;
  - a server backend (Elasticsearch, Milvus) that cannot be reached, or whose ids differ from
    the database's (the next writer, or `cbir verify --repair`, brings it back in step).
Notes (the collection is sound):
  - a manifest behind the database: a writer stopped between a commit and the manifest
    rewrite; the next writer brings it up to date;
  - original image files that have gone; stored bytes that no image uses.

Reads through a read-only connection in one snapshot: safe while a writer is running.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cbir.database import Database, read_state, read_vectors
from cbir.errors import CbirError, CollectionError
from cbir.image_store import sha256_bytes
from cbir.index import create_index, keeps_own_data
from cbir.index.settings import settings_at_open
from cbir.manifest import (
    EXTRACTOR_DIR,
    MANIFEST,
    METADATA,
    load_collection_extractor,
    read_manifest,
)

SHOWN = 5  # ids quoted per finding


@dataclass
class VerifyReport:
    folder: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def verify_collection(folder: str | Path) -> VerifyReport:
    """Check everything; a folder that holds no collection at all is a CollectionError."""
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        read_manifest(folder)  # raises "not a collection"
    report = VerifyReport(str(folder))
    try:
        manifest = read_manifest(folder)
    except CollectionError as error:
        report.problems.append(str(error))
        return report
    try:
        load_collection_extractor(folder, manifest)
    except CbirError as error:
        report.problems.append(f"extractor state in {EXTRACTOR_DIR}/: {error}")
    if not (folder / METADATA).exists():
        report.problems.append(f"{METADATA} is missing")
        return report
    db = Database(folder / METADATA, read_only=True)
    try:
        with db.snapshot() as conn:
            _check_database(conn, manifest, report)
            _check_server(folder, manifest, conn, report)
    except sqlite3.Error as error:
        report.problems.append(f"{METADATA} cannot be read: {error}")
    finally:
        db.close()
    return report


def _check_database(conn: sqlite3.Connection, manifest: dict, report: VerifyReport) -> None:
    integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if integrity != ["ok"]:
        report.problems.append(f"SQLite integrity check: {'; '.join(integrity[:SHOWN])}")
    count = _scalar(conn, "SELECT COUNT(*) FROM images")
    generation, _ = read_state(conn)
    report.counts = {
        "images": count,
        "vectors": _scalar(conn, "SELECT COUNT(*) FROM vectors"),
        "stored_images": _scalar(conn, "SELECT COUNT(*) FROM blobs"),
        "generation": generation,
    }
    findings = {
        "image rows without a vector": "SELECT id FROM images "
        "WHERE id NOT IN (SELECT id FROM vectors) ORDER BY id",
        "vectors without an image row": "SELECT id FROM vectors "
        "WHERE id NOT IN (SELECT id FROM images) ORDER BY id",
        "duplicate image ids": "SELECT id FROM images GROUP BY id HAVING COUNT(*) > 1",
        "duplicate vector ids": "SELECT id FROM vectors GROUP BY id HAVING COUNT(*) > 1",
        "images whose stored bytes are missing": "SELECT id FROM images WHERE path IS NULL "
        "AND sha256 NOT IN (SELECT sha256 FROM blobs) ORDER BY id",
    }
    for what, query in findings.items():
        _report_ids(report.problems, what, [row[0] for row in conn.execute(query)])
    dim = manifest["dim"]
    query = "SELECT id FROM vectors WHERE length(vector) != ? ORDER BY id"
    wrong = [row[0] for row in conn.execute(query, (4 * dim,))]
    _report_ids(report.problems, f"vectors that are not {dim}-d", wrong)
    if not wrong:
        bad: list[str] = []
        for _, ids, vectors in read_vectors(conn, dim):
            bad += [ids[i] for i in np.flatnonzero(~np.isfinite(vectors).all(axis=1))]
        _report_ids(report.problems, "vectors holding NaN or infinity", bad)
    _check_blobs(conn, report)
    _check_manifest(manifest, count, generation, report)
    query = "SELECT id, path FROM images WHERE path IS NOT NULL ORDER BY id"
    gone = [image_id for image_id, path in conn.execute(query) if not Path(path).is_file()]
    _report_ids(report.notes, "images whose original file has gone", gone)


def _check_blobs(conn: sqlite3.Connection, report: VerifyReport) -> None:
    corrupt = [
        digest
        for digest, data in conn.execute("SELECT sha256, data FROM blobs")
        if sha256_bytes(bytes(data)) != digest
    ]
    _report_ids(report.problems, "stored images whose bytes do not match their sha256", corrupt)
    unused = _scalar(
        conn, "SELECT COUNT(*) FROM blobs WHERE sha256 NOT IN (SELECT sha256 FROM images)"
    )
    if unused:
        report.notes.append(f"{unused:,} stored images are used by no image row")


def _check_manifest(manifest: dict, count: int, generation: int, report: VerifyReport) -> None:
    recorded = manifest.get("generation")
    counted = manifest.get("counts", {}).get("images")
    if not isinstance(recorded, int) or recorded > generation:
        report.problems.append(
            f"the manifest names generation {recorded!r}, the database is at {generation}"
        )
    elif recorded < generation:
        report.notes.append(
            f"the manifest describes generation {recorded} ({counted} images), the database "
            f"is at {generation} ({count}): a writer stopped before updating it; the next "
            "write brings it up to date"
        )
    elif counted != count:
        report.problems.append(
            f"the manifest counts {counted} images at generation {generation}, the database "
            f"holds {count}"
        )


def _check_server(folder: Path, manifest: dict, conn: sqlite3.Connection, report) -> None:
    """A server backend holds exactly the database's ids (it is a replica of them)."""
    backend = manifest["backend"]
    if not keeps_own_data(backend["name"]):
        return
    settings, location = settings_at_open(backend["name"], backend.get("settings", {}), folder)
    try:
        index = create_index(backend["name"], manifest["dim"], manifest["metric"], **settings)
        try:
            remote = set(index.ids())
        finally:
            index.close()
    except CbirError as error:
        report.problems.append(f"backend {location}: {error}")
        return
    live = {row[0] for row in conn.execute("SELECT id FROM vectors")}
    report.counts["server_vectors"] = len(remote)
    for what, ids in (("missing from", live - remote), ("extra on", remote - live)):
        if ids:
            _report_ids(report.problems, f"ids {what} the server index ({location})", sorted(ids))


def _report_ids(out: list[str], what: str, ids: list[str]) -> None:
    if ids:
        shown = ", ".join(repr(i) for i in ids[:SHOWN])
        more = f" and {len(ids) - SHOWN:,} more" if len(ids) > SHOWN else ""
        out.append(f"{len(ids):,} {what}: {shown}{more}")


def _scalar(conn: sqlite3.Connection, query: str) -> int:
    return conn.execute(query).fetchone()[0]
