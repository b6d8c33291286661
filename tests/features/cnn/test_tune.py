"""Ray Tune + ASHA: a tiny search runs when Ray is installed (the optional `tune` extra)."""

from __future__ import annotations

import pytest

from cbir.errors import CbirError
from cbir.training.train_config import TrainConfig

from .conftest import TINY_AIRBENCH, colour_dataset


def test_tuning_needs_a_validation_slice() -> None:
    from cbir.training.tune import search

    with pytest.raises(CbirError, match="validation"):
        search(*colour_dataset(8), {"lr": [1.0]}, TrainConfig(val_split=0.0))


def test_tiny_search_with_asha(tmp_path) -> None:
    pytest.importorskip("ray.tune", reason="Ray Tune not installed: pip install 'cbir[tune]'")
    import ray

    from cbir.training.tune import search

    assert not ray.is_initialized()
    base = TrainConfig(arch_options=TINY_AIRBENCH, epochs=2, batch_size=32, val_split=0.25,
                       tta=0)  # fmt: skip
    result = search(*colour_dataset(64), {"lr": [2.0, 11.5]}, base, storage=tmp_path)
    assert result["best"]["lr"] in (2.0, 11.5)
    assert len(result["trials"]) == 2
    assert 0.0 <= result["val_acc"] <= 1.0
    assert not ray.is_initialized()  # the Ray it started is stopped: later users start their own
