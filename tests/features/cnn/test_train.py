"""The training loop: it learns, it is reproducible, it writes safetensors + JSON + a log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cbir.errors import CbirError
from cbir.features.cnn.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint
from cbir.training.train import LOG_FILE, lr_factor, split_validation, subsample, train
from cbir.training.train_config import TrainConfig

from .conftest import TINY_AIRBENCH


def test_checkpoint_folder_holds_weights_config_and_log(tiny_checkpoint: Path) -> None:
    assert {WEIGHTS_FILE, CONFIG_FILE, LOG_FILE, "checkpoints"} <= {
        p.name for p in tiny_checkpoint.iterdir()
    }
    assert sorted(p.name for p in (tiny_checkpoint / "checkpoints").iterdir()) == [
        "epoch-001", "epoch-002",
    ]  # fmt: skip
    config = json.loads((tiny_checkpoint / CONFIG_FILE).read_text())
    assert config["arch"] == "airbench" and config["epochs"] == 2
    assert config["class_names"] == ["a", "b", "c", "d"]
    lines = [json.loads(line) for line in (tiny_checkpoint / LOG_FILE).read_text().splitlines()]
    assert [line["epoch"] for line in lines[:-1]] == [1, 2]
    assert {"loss", "train_acc", "images_per_s"} <= set(lines[0])
    assert "final" in lines[-1]
    assert load_file(str(tiny_checkpoint / WEIGHTS_FILE))  # plain tensors, no pickle


def test_tiny_airbench_learns_colour_classes(tiny_checkpoint: Path, tiny_data) -> None:
    from cbir.features.cnn.inference import infer

    net, _ = load_checkpoint(tiny_checkpoint)
    images, labels = tiny_data
    _, logits = infer(net.forward_both, images)
    assert (logits.argmax(1) == labels).mean() > 0.6


def test_same_seed_same_weights(tiny_data) -> None:
    images, labels = tiny_data[0][:64], tiny_data[1][:64]
    config = TrainConfig(arch="lenet", epochs=1, batch_size=32, lr=1.0, lookahead=False)
    first = train(images, labels, config).net.state_dict()
    second = train(images, labels, config).net.state_dict()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)


@pytest.mark.parametrize(
    "losses", [{"supcon": 0.5}, {"triplet": 1.0}, {"cross_entropy": 0.0, "supcon": 1.0}]
)
def test_similarity_losses_train(tiny_data, losses: dict) -> None:
    config = TrainConfig(arch_options=TINY_AIRBENCH, epochs=1, batch_size=32, **losses)
    result = train(tiny_data[0][:64], tiny_data[1][:64], config)
    assert np.isfinite(result.history[0]["loss"])


def test_validation_slice_is_held_out_and_scored(tiny_data) -> None:
    config = TrainConfig(arch="mlp", arch_options={"hidden": 16}, epochs=1, batch_size=64,
                         val_split=0.25, lr=1.0, tta=0)  # fmt: skip
    result = train(*tiny_data, config, test=tiny_data)
    assert 0.0 <= result.history[0]["val_acc"] <= 1.0
    assert {"val_acc", "test_acc", "test_acc_no_tta"} <= set(result.metrics)
    train_idx, val_idx = split_validation(320, 0.25, seed=0)
    assert len(val_idx) == 80 and not set(train_idx) & set(val_idx)


def test_schedule_warms_up_then_decays() -> None:
    values = [lr_factor(step, 100, 0.23, 0.07) for step in range(101)]
    assert values[0] == pytest.approx(0.2) and max(values) == pytest.approx(1.0)
    assert values.index(max(values)) == 23 and values[-1] == pytest.approx(0.07)


def test_subsample_is_seeded_and_spread() -> None:
    chosen = subsample(1000, 100, seed=0)
    assert len(chosen) == 100 and chosen.max() > 500
    np.testing.assert_array_equal(chosen, subsample(1000, 100, seed=0))
    assert len(subsample(10, None)) == 10


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(CbirError, match="at least one loss"):
        TrainConfig(cross_entropy=0.0)
    with pytest.raises(CbirError, match="tta"):
        TrainConfig(tta=5)


@pytest.mark.parametrize(("dtype", "fraction"), [("float16", 0.6), ("int8", 0.35)])
def test_export_shrinks_the_weights_and_keeps_predictions(
    dtype, fraction, tiny_checkpoint, tiny_data, tmp_path
):
    from cbir.features.cnn.checkpoint import export_checkpoint
    from cbir.features.cnn.inference import infer

    export_checkpoint(tiny_checkpoint, tmp_path / "shipped", dtype=dtype)
    size = (tmp_path / "shipped" / WEIGHTS_FILE).stat().st_size
    assert size < fraction * (tiny_checkpoint / WEIGHTS_FILE).stat().st_size
    assert (tmp_path / "shipped" / LOG_FILE).is_file()
    original, shipped = (
        load_checkpoint(tiny_checkpoint)[0],
        load_checkpoint(tmp_path / "shipped")[0],
    )
    _, before = infer(original.forward_both, tiny_data[0], bf16=False)
    _, after = infer(shipped.forward_both, tiny_data[0], bf16=False)
    np.testing.assert_allclose(after, before, atol=1e-2 if dtype == "float16" else 5e-2)
    assert (after.argmax(1) == before.argmax(1)).mean() >= 0.9  # a 2-epoch net has near ties


def test_int8_export_keeps_the_input_and_output_layers_in_float16(tiny_checkpoint, tmp_path):
    from cbir.features.cnn.checkpoint import export_checkpoint

    export_checkpoint(tiny_checkpoint, tmp_path / "shipped", dtype="int8")
    stored = load_file(str(tmp_path / "shipped" / WEIGHTS_FILE))
    state = load_checkpoint(tiny_checkpoint)[0].state_dict()  # in the network's layer order
    kernels = [k for k, v in state.items() if v.ndim >= 2]
    assert stored[kernels[0]].dtype == stored[kernels[-1]].dtype == torch.float16
    assert {stored[k].dtype for k in kernels[1:-1]} == {torch.int8}


def test_export_refuses_an_unknown_dtype(tiny_checkpoint, tmp_path):
    from cbir.features.cnn.checkpoint import export_checkpoint

    with pytest.raises(CbirError, match="int8"):
        export_checkpoint(tiny_checkpoint, tmp_path / "shipped", dtype="int4")
