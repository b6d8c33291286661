"""Named presets: a measured setting of an extractor under one name, usable as `-e NAME`.

As timm names a pretrained tag, a preset names an extractor and the parameters that gave a
figure, so nobody copies three `-p` flags to reproduce it. A preset resolves to its extractor
(the collection's manifest records that extractor and the full parameters, never the preset
name), and `-p` values given with it override the preset's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    extractor: str
    params: dict[str, Any] = field(default_factory=dict)
    measured: str = ""  # the figure it gave, and on what: shown by `cbir extractors`


PRESETS: dict[str, Preset] = {
    # CIFAR-10's best committed setting: class fusion, query TTA, two wide voters on the class.
    # Indexing runs the one fast network (index images carry their true class); each query
    # runs the three networks under flip + translate.
    "cnn-committee": Preset(
        "cnn",
        {"class_fusion": True, "query_tta": 2, "classifiers": "wide,wide-seed1"},
        "mAP@100 0.9302 (normalised) with native bfloat16, 0.9297 in float32, CIFAR-10 (JPEG "
        "mirror); `cbir benchmark cifar10`",
    ),
    # The same without the voters: one network for index and queries alike.
    "cnn-fused": Preset(
        "cnn",
        {"class_fusion": True, "query_tta": 2},
        "mAP@100 0.9196 (normalised), CIFAR-10 (JPEG mirror); `cbir benchmark cifar10`",
    ),
}


def resolve(name: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(extractor name, parameters) for `name`, a preset or an extractor; explicit `params`
    win over a preset's."""
    preset = PRESETS.get(name)
    if preset is None:
        return name, params
    return preset.extractor, {**preset.params, **params}
