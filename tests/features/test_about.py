"""Every built-in extractor says in one line what it matches (the search page shows it)."""

from __future__ import annotations

import pytest

from cbir.features import available, extractor_class
from cbir.features.presets import PRESETS


@pytest.mark.parametrize("name", [name for name in available() if name not in PRESETS])
def test_every_extractor_says_what_it_matches(name: str) -> None:
    about = extractor_class(name).about
    assert about and "\n" not in about and len(about) <= 100
