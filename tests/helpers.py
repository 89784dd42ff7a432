"""Shared test utilities: the committed crops and image-quality measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_dip import metrics
from napari_dip.metrics import luma  # noqa: F401  (the SR tests' Y channel)

DATA = Path(__file__).parent / "data"


def load(name: str) -> np.ndarray:
    path = DATA / name
    if path.suffix == ".tif":
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    return np.asarray(Image.open(path))


def add_gaussian_noise(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """sigma in 8-bit units, clipped as in the paper's setup."""
    rng = np.random.default_rng(seed)
    noisy = img / 255.0 + rng.normal(0, sigma / 255.0, img.shape)
    return np.round(np.clip(noisy, 0, 1) * 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    return metrics.psnr(b, a, peak)
