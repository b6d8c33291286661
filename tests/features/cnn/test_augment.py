"""Augmentation: shapes, seeded reproducibility, crops are translations, flips are mirrors,
cutout blanks one square per image."""

from __future__ import annotations

import torch

from cbir.training.augment import (
    augment_batch,
    cutout,
    pad_reflect,
    random_crop,
    random_flip,
)


def test_crops_are_translated_windows_of_the_padded_image() -> None:
    x = torch.randn(40, 3, 8, 8)
    padded = pad_reflect(x, 2)
    crops = random_crop(padded, 2, torch.Generator().manual_seed(0))
    assert crops.shape == x.shape
    for crop, source in zip(crops, padded, strict=True):
        windows = [source[:, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(crop, w) for w in windows)
    assert not torch.equal(crops, x)  # 40 images: some moved


def test_no_padding_means_no_translation() -> None:
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(random_crop(x, 0, torch.Generator()), x)


def test_flip_mirrors_about_half_and_is_seeded() -> None:
    x = torch.randn(200, 3, 4, 4)
    flipped = random_flip(x, torch.Generator().manual_seed(1))
    mirrored = [torch.equal(f, i.flip(-1)) for f, i in zip(flipped, x, strict=True)]
    assert 60 < sum(mirrored) < 140
    again = augment_batch(pad_reflect(x, 1), 1, True, torch.Generator().manual_seed(3))
    assert torch.equal(
        again, augment_batch(pad_reflect(x, 1), 1, True, torch.Generator().manual_seed(3))
    )


def test_cutout_blanks_one_square_per_image_in_every_channel() -> None:
    x = torch.rand(300, 3, 10, 10) + 1.0  # no zeros of its own
    out = cutout(x, 4, torch.Generator().manual_seed(2))
    blank = out == 0
    assert torch.equal(blank[:, 0], blank[:, 1]) and torch.equal(blank[:, 0], blank[:, 2])
    for mask, source, image in zip(blank[:, 0], x, out, strict=True):
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert 2 <= len(rows) <= 4 and 2 <= len(cols) <= 4  # centred on a pixel
        assert mask.sum() == len(rows) * len(cols)  # one rectangle, clipped by the border
        assert torch.equal(image[:, ~mask], source[:, ~mask])  # the rest untouched
    assert (blank[:, 0].sum((1, 2)) == 16).float().mean() > 0.3  # about half lie inside
    assert blank[:, 0, 0, :].any() and blank[:, 0, :, -1].any()  # borders are reached too


def test_cutout_of_size_zero_is_the_identity() -> None:
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(cutout(x, 0, torch.Generator()), x)
