"""Shared fixtures: one torch thread, the committed test crops (tests/data) and noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP spin-waits make 2 threads slower."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    mp.setenv("NAPARI_DIP_THREADS", "1")  # what the engine chooses for its runs
    yield
    mp.undo()
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of committed test crops (sources in tests/data/SOURCES.md)."""
    return DATA


def load_crop(name: str) -> np.ndarray:
    path = DATA / name
    if path.suffix == ".tif":
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    return np.asarray(Image.open(path))


@pytest.fixture(scope="session")
def load():
    """``load(name)``: a crop from tests/data (see tests/data/SOURCES.md); session-scoped, so
    module-scoped fixtures can use it too."""
    return load_crop


def _add_gaussian_noise(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """sigma in 8-bit units, clipped as in the paper's setup."""
    rng = np.random.default_rng(seed)
    noisy = img / 255.0 + rng.normal(0, sigma / 255.0, img.shape)
    return np.round(np.clip(noisy, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def gaussian_noise():
    """``gaussian_noise(img, sigma, seed=0)``: uint8 image plus N(0, sigma) noise, clipped."""
    return _add_gaussian_noise
