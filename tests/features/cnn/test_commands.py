"""`cbir train` and `cbir tune` through the command line."""

from __future__ import annotations

import json
from pathlib import Path

from cbir.cli import main


def test_train_on_a_labelled_folder(labelled_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "model"
    flags = ["--arch", "lenet", "--epochs", "1", "--batch-size", "4", "--lr", "1.0"]
    code = main(["-q", "train", str(labelled_folder), "--out", str(out), *flags])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary["metrics"]["train_seconds"] >= 0
    assert json.loads((out / "config.json").read_text())["class_names"] == ["blue", "green", "red"]


def test_train_errors_are_one_line(tmp_path: Path, capsys) -> None:
    code = main(["train", str(tmp_path / "missing"), "--out", str(tmp_path / "m")])
    assert code == 2 and "error" in capsys.readouterr().err


def test_tune_requires_a_space(capsys) -> None:
    assert main(["tune", "cifar10"]) == 2
    assert "--space" in capsys.readouterr().err
