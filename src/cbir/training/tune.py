"""Hyperparameter search with Ray Tune and ASHA (optional extra: pip install 'cbir[tune]').

Every trial trains on the training images minus a seeded validation slice and reports the
validation accuracy after each epoch; ASHA stops the weak trials early. The test set is never
seen here: choosing on it is how the reference leaked (REFERENCE.md section 3).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from cbir.errors import CbirError
from cbir.training.train_config import TrainConfig

METRIC = "val_acc"


def _ray():
    try:
        import ray
        from ray import tune
    except ImportError as error:
        raise CbirError("cbir tune needs Ray Tune: pip install 'cbir[tune]'") from error
    return ray, tune


def _report(metrics: dict[str, Any]) -> None:
    _, tune = _ray()
    report = getattr(tune, "report", None)
    if report is None:  # Ray < 2.40 reports through ray.train
        from ray.train import report
    report(metrics)


def _trial(
    params: dict[str, Any], base: dict[str, Any], images: np.ndarray, labels: np.ndarray
) -> None:
    from cbir.training.train import train

    config = TrainConfig(**{**base, **params})

    def on_epoch(entry: dict[str, Any]) -> None:
        _report({METRIC: entry[METRIC], "loss": entry["loss"], "epoch": entry["epoch"]})

    train(images, labels, config, on_epoch=on_epoch)


def search(
    images: np.ndarray,
    labels: np.ndarray,
    space: dict[str, list[Any]],
    base: TrainConfig,
    num_samples: int = 1,
    grace_period: int = 1,
    concurrent: int = 2,
    storage: Path | None = None,
) -> dict[str, Any]:
    """Grid over `space` (every combination, `num_samples` times each) with ASHA on the
    validation accuracy; returns the best parameters and every trial's last result."""
    if base.val_split <= 0:
        raise CbirError("tuning needs a validation slice: set val_split > 0")
    unknown = set(space) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise CbirError(f"unknown training parameter(s) to tune: {', '.join(sorted(unknown))}")
    from cbir.distributed import start_local_ray

    ray, tune = _ray()
    started = not ray.is_initialized()  # a Ray we start is ours to stop; a joined one is not
    if started:
        start_local_ray(ray, concurrent)
    try:
        return _search(
            tune, space, base, images, labels, concurrent=concurrent, num_samples=num_samples,
            grace_period=grace_period, storage=storage,
        )  # fmt: skip
    finally:
        if started:
            ray.shutdown()


def _search(
    tune: Any, space: dict[str, list[Any]], base: TrainConfig, images: np.ndarray,
    labels: np.ndarray, *, concurrent: int, num_samples: int, grace_period: int,
    storage: Path | None,
) -> dict[str, Any]:  # fmt: skip
    from ray.tune.schedulers import ASHAScheduler

    threads = max(1, base.threads // concurrent)
    fixed = {**dataclasses.asdict(base), "threads": threads}
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=fixed, images=images, labels=labels), {"cpu": 1}
    )
    scheduler = ASHAScheduler(
        time_attr="epoch", max_t=base.epochs, grace_period=grace_period, reduction_factor=2
    )
    run_config = {"storage_path": str(Path(storage).resolve())} if storage else {}
    tuner = tune.Tuner(
        trainable,
        param_space={name: tune.grid_search(list(values)) for name, values in space.items()},
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", scheduler=scheduler, num_samples=num_samples,
            max_concurrent_trials=concurrent,
        ),
        run_config=_run_config(tune, run_config),
    )  # fmt: skip
    results = tuner.fit()
    best = results.get_best_result(metric=METRIC, mode="max", scope="last")
    trials = [
        {"params": {k: r.config[k] for k in space}, METRIC: r.metrics.get(METRIC),
         "epochs": r.metrics.get("epoch")}
        for r in results if r.metrics
    ]  # fmt: skip
    return {"best": {k: best.config[k] for k in space}, METRIC: best.metrics[METRIC],
            "trials": trials}  # fmt: skip


def _run_config(tune, options: dict[str, Any]):
    run_config = getattr(tune, "RunConfig", None)
    if run_config is None:  # older Ray keeps it in ray.train / ray.air
        from ray.train import RunConfig as run_config
    return run_config(verbose=0, **options)
