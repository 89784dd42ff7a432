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


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests run with one torch thread: CI machines are small and shared, where OpenMP threads
    spin-waiting on each other make a run many times slower (see benchmarks/README.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
