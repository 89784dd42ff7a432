"""Image-quality measures for comparing a result with a reference (numpy only).

scikit-image is optional: SSIM uses it when installed, else a numpy version of its default
(7x7 uniform window, sample covariance).
"""

from __future__ import annotations

import numpy as np


def psnr(reference: np.ndarray, image: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB over every value (``data_range``: 255 for 8-bit)."""
    ref = np.asarray(reference, dtype=np.float64)
    err = np.mean((ref - np.asarray(image, dtype=np.float64)) ** 2)
    if err == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / err))


def _box_valid(x: np.ndarray, w: int) -> np.ndarray:
    """Mean over every w x w window that fits inside ``x`` (valid mode)."""
    c = np.cumsum(np.cumsum(np.pad(x, ((1, 0), (1, 0))), axis=0), axis=1)
    s = c[w:, w:] - c[:-w, w:] - c[w:, :-w] + c[:-w, :-w]
    return s / (w * w)


def _ssim_plane(a: np.ndarray, b: np.ndarray, data_range: float, w: int = 7) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if min(a.shape) < w:
        w = min(a.shape) if min(a.shape) % 2 else min(a.shape) - 1
    n = w * w
    cov = n / (n - 1)
    ua, ub = _box_valid(a, w), _box_valid(b, w)
    vaa = cov * (_box_valid(a * a, w) - ua * ua)
    vbb = cov * (_box_valid(b * b, w) - ub * ub)
    vab = cov * (_box_valid(a * b, w) - ua * ub)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua**2 + ub**2 + c1) * (vaa + vbb + c2))
    return float(s.mean())


def ssim(reference: np.ndarray, image: np.ndarray, data_range: float, rgb: bool = False) -> float:
    """Mean SSIM over the 2-D (Y, X) planes of two arrays of the same shape."""
    ref = np.asarray(reference, dtype=np.float64)
    img = np.asarray(image, dtype=np.float64)
    if rgb:
        ref, img = np.moveaxis(ref, -1, 0), np.moveaxis(img, -1, 0)
    ref = ref.reshape((-1,) + ref.shape[-2:])
    img = img.reshape((-1,) + img.shape[-2:])
    try:
        from skimage.metrics import structural_similarity
    except ImportError:  # pragma: no cover - depends on the environment
        structural_similarity = None
    values = []
    for r, i in zip(ref, img):
        if structural_similarity is not None and min(r.shape) >= 7:
            values.append(structural_similarity(r, i, data_range=data_range))
        else:
            values.append(_ssim_plane(r, i, data_range))
    return float(np.mean(values))


def data_range_of(reference: np.ndarray) -> float:
    """The range to measure against: 255 for 8-bit data, else the reference's span."""
    if reference.dtype == np.uint8:
        return 255.0
    span = float(np.max(reference)) - float(np.min(reference))
    return span if span > 0 else 1.0


def luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of 8-bit RGB (Y in 16..235, as MATLAB's rgb2ycbcr): the channel the
    super-resolution literature scores."""
    x = np.asarray(rgb, np.float64)[..., :3] / 255.0
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]
