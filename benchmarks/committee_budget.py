"""What each committee of trained networks buys for its training time, on CIFAR-10.

    CBIR_DATA_DIR=../shared/data .venv/bin/python benchmarks/committee_budget.py \
        default wide wide-seed1 runs/cnn-wide15-s2 runs/cnn-wide15-s3 runs/cnn-ce50 \
        runs/cnn-supcon30 --out benchmarks/results/committee-budget.json

The first network is the embedding network, in every committee; the others are voters, named
as the `cnn` extractor's `classifiers` parameter names them (`wide`, `wide-seed1` or a `cbir
train` folder; `default` is the committed default network). Each network describes the
10,000 test images once, under the TTA level the queries get (`--tta`, default 2 as
`query_tta=2`); a committee's prediction is the argmax of its members' summed class
probabilities, as the extractor's. With class fusion on CIFAR-10 (5,000 index images a class,
so at least 100 relevant for every query) a query's top 100 is all of its predicted class,
so the committee's test accuracy IS the normalised mAP@100 of `cbir benchmark cifar10
--extractor cnn -p class_fusion=true -p query_tta=2 -p classifiers=...`. The training time
of a network is the `train_seconds` that `cbir train` recorded in its `config.json` (as it
ran: threads and machine load vary between runs, see each folder's README). Prints and saves JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from cbir.datasets import load_cifar10
from cbir.evaluation.quality_run import dataset_label
from cbir.features.cnn.checkpoint import CONFIG_FILE
from cbir.features.cnn.extractor import classifier_paths, network_reader
from cbir.features.cnn.inference import infer, softmax
from cbir.features.cnn.models import DEFAULT_WEIGHTS
from cbir.speed.measure import load_average, machine, save_result, stopwatch


def network_folder(name: str) -> Path:
    return DEFAULT_WEIGHTS if name == "default" else classifier_paths(name)[0]


def recorded_train_seconds(folder: Path) -> float | None:
    """The training time `cbir train` recorded in the run's config, or None without one."""
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        return None
    return json.loads(config_path.read_text()).get("metrics", {}).get("train_seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("networks", nargs="+", help="the embedding network first, then voters")
    parser.add_argument("--tta", type=int, default=2, choices=(0, 1, 2))
    parser.add_argument("--data", type=Path, help="folder holding CIFAR-10 (else CBIR_DATA_DIR)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    data = load_cifar10(args.data, download=False)
    queries = data.test
    load_before = load_average()
    networks, probabilities = [], {}
    for name in args.networks:
        folder = network_folder(name)
        with stopwatch() as timing:
            _, logits = infer(network_reader(str(folder)), queries.images, tta=args.tta)
        if logits is None:
            raise SystemExit(f"{name} has no classifier output to vote with")
        probabilities[name] = softmax(logits)
        seconds = recorded_train_seconds(folder)
        networks.append({
            "network": name,
            "accuracy": round(float((logits.argmax(1) == queries.labels).mean()), 4),
            "train_minutes": None if seconds is None else round(seconds / 60, 1),
            "describe_queries_per_s": round(len(queries) / timing["s"], 1),
        })  # fmt: skip
        print(networks[-1], flush=True)

    minutes = {entry["network"]: entry["train_minutes"] for entry in networks}
    embedder, voters = args.networks[0], args.networks[1:]
    committees = []
    for size in range(len(voters) + 1):
        for chosen in itertools.combinations(voters, size):
            members = (embedder, *chosen)
            votes = sum(probabilities[name] for name in members)
            known = [minutes[name] for name in members]
            committees.append({
                "members": list(members),
                "fused_map_at_100": round(float((votes.argmax(1) == queries.labels).mean()), 4),
                "train_minutes": None if None in known else round(sum(known), 1),
            })  # fmt: skip
    committees.sort(key=lambda row: (row["train_minutes"] is None, row["train_minutes"]))
    for row in committees:
        print(f"{row['train_minutes']!s:>7} min  {row['fused_map_at_100']:.4f}  "
              f"{' + '.join(row['members'])}")  # fmt: skip
    result = {
        "benchmark": "committee-budget",
        "dataset": dataset_label(data.source),
        "params": {"tta": args.tta, "load_average_1m": [load_before, load_average()]},
        "machine": machine(),
        "networks": networks,
        "committees": committees,
    }
    if args.out:
        save_result(args.out, result)


if __name__ == "__main__":
    main()
