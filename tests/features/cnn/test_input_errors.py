"""A user's wrong image_size, layer or architecture is one clear line (exit 2 on the command
line), never a torch shape traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cbir.errors import CbirError
from cbir.features import get_extractor


def test_an_image_size_the_network_cannot_take() -> None:
    with pytest.raises(CbirError, match="cannot take 64x64 images .*image_size=64"):
        get_extractor("cnn", image_size=64).transform(np.zeros((1, 64, 64, 3), np.uint8))


def test_a_layer_the_network_lacks() -> None:
    with pytest.raises(CbirError, match="no layer 'nope'"):
        get_extractor("cnn", layer="nope").transform(np.zeros((1, 32, 32, 3), np.uint8))


def test_a_state_dict_of_another_architecture(tmp_path: Path) -> None:
    from cbir.features.cnn.networks import build_network

    torch.save(build_network("lenet").state_dict(), tmp_path / "lenet.pth")
    extractor = get_extractor("cnn", weights=str(tmp_path / "lenet.pth"), arch="efficientnet-lite0")
    with pytest.raises(CbirError, match="does not fit arch 'efficientnet-lite0'"):
        extractor.transform(np.zeros((1, 32, 32, 3), np.uint8))


def test_the_command_line_says_it_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "photos" / "a").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "photos" / "a" / "x.png")
    command = [sys.executable, "-m", "cbir.cli", "index", str(tmp_path / "photos"),
               "-c", str(tmp_path / "c"), "-e", "cnn", "-p", "image_size=64"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "image_size=64" in result.stderr
