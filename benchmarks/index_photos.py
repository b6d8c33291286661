"""Indexing speed and peak memory of `cbir index PHOTOS` end to end, with a photo extractor.

    .venv/bin/python benchmarks/index_photos.py PHOTOS [--n 1000] [--size 384x256]
        [--extractor efficientnet] [-p KEY=VALUE ...] [--batch-size N]

Takes the first N photos of a labelled folder (class subfolders, sorted, round-robin over the
classes), re-encodes them as JPEG (quality 90) at --size into a scratch folder so that every
run decodes the same bytes, then times one real `cbir -q index` process into a new collection
(start-up, JPEG draft decoding straight to the extractor's input size, describing, committing)
and reads that process's peak RSS. The `efficientnet` extractor's ONNX graph is cached per
weights file (features/lite_onnx.py): the script builds it first, in a separate process into a
scratch cache folder (its time is reported as `graph_build_seconds`, what a first run ever
pays once), so the timed run is the one users have from then on. Prints and saves
benchmarks/results/index_photos.json. Issue 21 asks for >= 100 images/s on 2 cores and a peak
RSS <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from cbir.images import IMAGE_SUFFIXES
from cbir.speed.measure import load_average, machine, save_result

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "index_photos.json"


def photo_sample(folder: Path, n: int) -> list[Path]:
    """Up to n photos, taken in turn from each class subfolder (sorted), so classes stay even."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    lists = [sorted(f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) for c in classes]
    picked: list[Path] = []
    for i in range(max(map(len, lists), default=0)):
        picked += [files[i] for files in lists if i < len(files)]
    return picked[:n]


def write_copies(photos: list[Path], target: Path, size: tuple[int, int]) -> None:
    for photo in photos:
        out = target / photo.parent.name / (photo.stem + ".jpg")
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(photo) as image:
            image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(out, quality=90)


def warm_up(extractor: str, params: list[str], env: dict[str, str]) -> float | None:
    """Describe one blank image in a separate process, so that what an extractor caches on
    first use (efficientnet: its ONNX graph) is there; its wall time for efficientnet."""
    script = (
        "import sys, numpy as np\n"
        "from cbir.commands import parse_param\n"
        "from cbir.features import get_extractor\n"
        "e = get_extractor(sys.argv[1], **dict(map(parse_param, sys.argv[2:])))\n"
        "e.transform(np.zeros((1, *(e.input_size or (32, 32)), 3), np.uint8))\n"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, extractor, *params], env=env, check=True)
    return round(time.perf_counter() - started, 2) if extractor == "efficientnet" else None


def run_measured(
    command: list[str], env: dict[str, str], scratch: Path
) -> tuple[int, int, str, str]:
    """Exit status, peak RSS in bytes (this child's own, from wait4), stdout and stderr."""
    out, err = scratch / "stdout", scratch / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux
    return process.returncode, usage.ru_maxrss * 1024, out.read_text(), err.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, help="labelled folder of photos (class subfolders)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", default="384x256", help="WIDTHxHEIGHT of the indexed JPEGs")
    parser.add_argument("--extractor", default="efficientnet")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batch-size", type=int, help="cbir index --batch-size (default: its own)")
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.lower().split("x"))

    scratch = Path(tempfile.mkdtemp(prefix="cbir-photo-bench-"))
    try:
        photos = photo_sample(args.photos, args.n)
        write_copies(photos, scratch / "photos", (width, height))
        command = [sys.executable, "-m", "cbir.cli", "-q", "index", str(scratch / "photos"),
                   "-c", str(scratch / "collection"), "-e", args.extractor]  # fmt: skip
        for param in args.param:
            command += ["-p", param]
        if args.batch_size:
            command += ["--batch-size", str(args.batch_size)]
        # As DESIGN.md allows for benchmarks: an old OpenBLAS's settings slow a current numpy.
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}  # fmt: skip
        env["CBIR_CACHE_DIR"] = str(scratch / "cache")
        graph_build = warm_up(args.extractor, args.param, env)
        load_before = load_average()
        started = time.perf_counter()
        returncode, peak_rss, stdout, stderr = run_measured(command, env, scratch)
        elapsed = time.perf_counter() - started
        load_after = load_average()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if returncode != 0:
        sys.exit(f"cbir index failed:\n{stderr}")
    figures = {
        "command": " ".join(["cbir -q index PHOTOS -c DIR", *command[8:]]),
        "source": str(args.photos),
        "images": len(photos),
        "image_size": f"{width}x{height} JPEG (quality 90)",
        "seconds": round(elapsed, 2),
        "images_per_s": round(len(photos) / elapsed, 1),
        "peak_rss_gb": round(peak_rss / 1e9, 3),
        "graph_build_seconds": graph_build,
        "summary": stdout.strip(),
        "load_average_before_after": [load_before, load_after],
        "machine": machine(),
    }
    print(json.dumps(figures, indent=2))
    save_result(RESULTS, figures)


if __name__ == "__main__":
    main()
