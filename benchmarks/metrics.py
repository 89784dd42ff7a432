"""Image-quality metrics used by the benchmark suites (all in numpy, float64)."""

from __future__ import annotations

import numpy as np

from napari_dip import metrics as _metrics


def psnr(out: np.ndarray, ref: np.ndarray, peak: float) -> float:
    """PSNR over every pixel and channel, against ``peak`` (255 for 8-bit, 1 for [0, 1] data)."""
    return _metrics.psnr(ref, out, peak)


rgb_to_y = _metrics.luma


def psnr_y(out: np.ndarray, ref: np.ndarray, border: int = 4) -> float:
    """SR protocol: Y-channel PSNR (peak 255) after removing ``border`` pixels on each side."""
    yo, yr = rgb_to_y(out), rgb_to_y(ref)
    if border:
        yo, yr = yo[border:-border, border:-border], yr[border:-border, border:-border]
    return psnr(yo, yr, 255.0)


def affine_fit(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``a*x + b`` with (a, b) the least-squares fit of x to target (scale/offset-invariant comparison)."""
    x64, t64 = np.asarray(x, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    design = np.stack([x64, np.ones_like(x64)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, t64, rcond=None)
    return (a * np.asarray(x, np.float64) + b).reshape(np.shape(x))


def ssim(out: np.ndarray, ref: np.ndarray, peak: float) -> float:
    """Mean SSIM of a 2-D (grey) image."""
    return _metrics.ssim(ref, out, peak)
