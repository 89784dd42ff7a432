"""Shared fixtures: the committed test crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


def load_crop(name: str) -> np.ndarray:
    path = DATA / name
    if path.suffix == ".tif":
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    return np.asarray(Image.open(path))


@pytest.fixture
def load():
    """``load(name)``: a crop from tests/data (see tests/data/SOURCES.md)."""
    return load_crop
