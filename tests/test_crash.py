"""Real `cbir index` processes killed with SIGKILL at random moments, and readers searching while
a writer process indexes: collections stay consistent, resumed runs finish exactly, readers
never fail."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cbir.collection import MANIFEST, METADATA, Collection
from cbir.features import get_extractor
from cbir.integrity import verify_collection
from cbir.pipeline import index_folder

N_IMAGES = 160
BATCH = 4  # 40 commits per run: many moments to be killed in the middle of one
TRIALS = 20


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """N_IMAGES small, distinct PNGs in two labelled subfolders."""
    root = tmp_path_factory.mktemp("kill") / "photos"
    rng = np.random.default_rng(7)
    for i in range(N_IMAGES):
        target = root / ("odd" if i % 2 else "even") / f"{i:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(target)
    return root


def start_index(folder: Path, collection: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cbir.cli", "-q", "index", str(folder), "-c", str(collection),
         "--batch-size", str(BATCH)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy(),
    )  # fmt: skip


def wait_for_progress(process: subprocess.Popen, collection: Path, images: int) -> None:
    """Until the collection's database holds `images` images, or the run ends."""
    uri = (collection / METADATA).as_uri() + "?mode=ro"
    while process.poll() is None:
        try:
            with closing(sqlite3.connect(uri, uri=True)) as conn:
                if conn.execute("SELECT COUNT(*) FROM images").fetchone()[0] >= images:
                    return
        except sqlite3.Error:
            pass  # not created yet
        time.sleep(0.002)


def count_images(collection: Path) -> int:
    with Collection.open(collection, read_only=True) as reader:
        return len(reader)


def assert_complete(collection: Path) -> None:
    report = verify_collection(collection)
    assert report.ok, report.problems
    with Collection.open(collection, read_only=True) as reader:
        checksums = reader.checksums()
        assert len(checksums) == N_IMAGES == len(set(checksums.values()))  # none twice
        assert len(reader.index) == N_IMAGES


def test_kill_9_at_random_moments_then_verify_and_resume(folder, tmp_path):
    # Calibration: when does a full run create the collection, and when does it end?
    started = time.monotonic()
    full = start_index(folder, tmp_path / "calibration")
    while not (tmp_path / "calibration" / MANIFEST).exists() and full.poll() is None:
        time.sleep(0.005)
    created = time.monotonic() - started
    assert full.wait(timeout=120) == 0, full.stderr.read()
    duration = time.monotonic() - started
    assert_complete(tmp_path / "calibration")

    rng = np.random.default_rng(2024)
    killed_at = []
    for trial in range(TRIALS):
        collection = tmp_path / f"trial-{trial}"
        process = start_index(folder, collection)
        if trial % 2:  # at a random moment of the run, start-up included
            time.sleep(rng.uniform(0.5 * created, duration))
        else:  # right after a random number of images committed, several batches before the end
            wait_for_progress(process, collection, int(rng.integers(1, N_IMAGES - 4 * BATCH)))
            time.sleep(rng.uniform(0, 0.002))
        process.kill()  # SIGKILL: no handler, no cleanup
        process.wait(timeout=30)
        if (collection / MANIFEST).exists():
            report = verify_collection(collection)
            assert report.ok, (trial, report.problems)
            killed_at.append(count_images(collection))
        else:
            killed_at.append(-1)  # before the collection existed
        # Resume in this process: the dead writer's lock must be free at once.
        with Collection.open_or_create(
            collection, lambda: get_extractor("gch"), lock_timeout=0
        ) as c:
            resumed = index_folder(folder, c, batch_size=BATCH)
        assert resumed.added == N_IMAGES - max(killed_at[-1], 0)
        assert_complete(collection)
    print(f"\nimages committed when killed: {killed_at}")
    # The time-based kills (odd trials) land wherever the machine's load puts them; the
    # progress-based ones (even trials) must have hit the run while it was indexing.
    mid_run = [n for n in killed_at[::2] if 0 < n < N_IMAGES]
    assert len(mid_run) >= TRIALS // 2 - 2, killed_at


def test_readers_search_without_error_while_a_process_indexes_and_deletes(folder, tmp_path):
    collection = tmp_path / "live"
    with Collection.create(collection, get_extractor("gch")):
        pass  # exists before the readers open it
    # One collection shared by two threads, as the web server shares one; another opened as the
    # web opens it (writable, locking only to write) to show that opening never waits either.
    reader = Collection.open(collection, read_only=True)
    web_like = Collection.open(collection)
    query = np.random.default_rng(0).random((1, 256), dtype=np.float32)
    errors: list[BaseException] = []
    sizes: dict[str, list[int]] = {}
    deleted: set[str] = set()
    returned_after_delete: list[str] = []
    stop = threading.Event()

    def read_loop(name: str, reader: Collection) -> None:
        seen = sizes.setdefault(name, [])
        while not stop.is_set():
            try:
                gone = set(deleted)  # deletes that committed before this refresh
                reader.refresh()
                hits = reader.search_vectors(query, k=10)[0]
                seen.append(len(reader.index))
                returned_after_delete.extend(hit.id for hit in hits if hit.id in gone)
            except BaseException as error:  # every failure counts
                errors.append(error)
                return

    threads = [threading.Thread(target=read_loop, args=(f"r{i}", reader)) for i in range(2)]
    threads.append(threading.Thread(target=read_loop, args=("web", web_like)))
    for thread in threads:
        thread.start()
    writer = start_index(folder, collection)
    assert writer.wait(timeout=120) == 0, writer.stderr.read()
    with Collection.open(collection, read_only=True) as snapshot:
        victims = sorted(snapshot.known_ids())[:10]
    deleter = subprocess.run(
        [sys.executable, "-m", "cbir.cli", "delete", "-c", str(collection), *victims],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert deleter.returncode == 0, deleter.stderr
    deleted.update(victims)
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    reader.close()
    web_like.close()
    assert errors == []
    for seen in sizes.values():
        growing = seen[: seen.index(N_IMAGES) + 1]
        assert growing == sorted(growing) and len(set(growing)) > 2  # saw indexing progress
        assert seen[-1] == N_IMAGES - len(victims)
    assert returned_after_delete == []
