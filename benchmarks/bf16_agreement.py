"""Does bfloat16 autocast keep the `efficientnet` ranking? float32 vs bfloat16 on labelled photos.

    .venv/bin/python benchmarks/bf16_agreement.py PHOTOS [--per-class 10]

Describes the first --per-class photos of each class subfolder in float32 (ONNX Runtime, as
cbir runs it without native bfloat16) and in torch under bfloat16 autocast (forced on even where
the CPU only emulates it, so the agreement can be measured on any machine), then compares:
cosine of each photo's two vectors, overlap of each photo's 10 nearest neighbours among the
others, same nearest neighbour, P@10 of each. Prints and saves
benchmarks/results/bf16_agreement.json, with both describe times (emulated bfloat16 is slow).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cbir.features import get_extractor
from cbir.images import IMAGE_SUFFIXES, decode_many
from cbir.speed.measure import load_average, machine, save_result

RESULTS = Path(__file__).resolve().parent / "results" / "bf16_agreement.json"


def nearest(vectors: np.ndarray, k: int = 10) -> np.ndarray:
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1)[:, :k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path, help="labelled folder of photos (class subfolders)")
    parser.add_argument("--per-class", type=int, default=10)
    args = parser.parse_args()
    files: list[Path] = []
    for folder in sorted(p for p in args.photos.iterdir() if p.is_dir()):
        photos = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        files += photos[: args.per_class]
    labels = np.array([f.parent.name for f in files])
    images = decode_many(files, size=(224, 224)).images

    import cbir.features.cnn.inference as inference
    import cbir.features.efficientnet as efficientnet

    native = inference.native_bf16()  # what cbir would do here without forcing
    load_before = load_average()
    vectors, seconds = {}, {}
    for precision in ("float32", "bfloat16"):
        bf16 = precision == "bfloat16"
        # force torch + autocast on for bfloat16; float32 runs where cbir runs it (ONNX Runtime)
        inference.native_bf16 = efficientnet.native_bf16 = lambda bf16=bf16: bf16
        extractor = get_extractor("efficientnet", bf16=bf16)
        assert extractor.runtime == ("torch" if bf16 else "onnxruntime")
        extractor.transform(images[:2])  # load the network outside the timing
        started = time.perf_counter()
        vectors[precision] = extractor.transform(images)
        seconds[precision] = round(time.perf_counter() - started, 2)
    fp32, bf16_vectors = vectors["float32"], vectors["bfloat16"]
    cosines = np.sum(fp32 * bf16_vectors, axis=1)
    near32, near16 = nearest(fp32), nearest(bf16_vectors)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(near32, near16, strict=True)])
    figures = {
        "command": f"benchmarks/bf16_agreement.py PHOTOS --per-class {args.per_class}",
        "source": str(args.photos),
        "photos": len(files),
        "cosine_min": round(float(cosines.min()), 4),
        "cosine_mean": round(float(cosines.mean()), 4),
        "top10_overlap": round(float(overlap), 4),
        "same_top1": round(float(np.mean(near32[:, 0] == near16[:, 0])), 4),
        "p10_float32": round(float(np.mean(labels[near32] == labels[:, None])), 4),
        "p10_bfloat16": round(float(np.mean(labels[near16] == labels[:, None])), 4),
        "describe_seconds": seconds,
        "cpu_has_native_bf16": native,
        "load_average_before_after": [load_before, load_average()],
        "machine": machine(),
    }
    print(json.dumps(figures, indent=2))
    save_result(RESULTS, figures)


if __name__ == "__main__":
    main()
