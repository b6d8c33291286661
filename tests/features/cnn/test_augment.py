"""Augmentation: shapes, seeded reproducibility, crops are translations, flips are mirrors."""

from __future__ import annotations

import torch

from cbir.features.cnn.augment import augment_batch, pad_reflect, random_crop, random_flip


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
