"""Sample data for File > Open Sample > napari-dip.

Generated procedurally from fixed seeds (no downloads, no files): the same arrays every time.
Each sample also returns its clean ground truth (hidden) so PSNR / SSIM can be tried in the
widget's comparison.
"""

from __future__ import annotations

import numpy as np

SCALE = (0.2, 0.2)  # a plausible pixel size, so outputs can be checked to keep it
UNITS = ("um", "um")


def _cells(shape=(128, 128), seed: int = 0) -> np.ndarray:
    """A clean fluorescence-like image in [0, 1]: round cells with bright nuclei and a few
    filaments."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros(shape)
    for _ in range(14):
        cy, cx = rng.uniform(8, h - 8), rng.uniform(8, w - 8)
        r = rng.uniform(5, 11)
        d2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2
        img += 0.35 * rng.uniform(0.6, 1.0) / (1 + np.exp(np.minimum((d2 - 1) * 8, 50)))  # cell body
        img += 0.45 * np.exp(-d2 * 6)  # nucleus
    for _ in range(5):  # filaments: smooth random curves
        t = np.linspace(0, 1, 400)
        p0, p1, p2 = rng.uniform(0, [h, w], size=(3, 2))
        curve = ((1 - t) ** 2)[:, None] * p0 + (2 * (1 - t) * t)[:, None] * p1 \
            + (t**2)[:, None] * p2
        for y, x in curve[::4]:
            img += 0.25 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 1.5)
    img = np.clip(img, 0, None)
    return img / img.max()


def noisy_fluorescence():
    """A noisy 16-bit fluorescence-like image (Poisson + read noise) and its clean version."""
    rng = np.random.default_rng(1)
    clean = _cells((128, 128), seed=0)
    photons = 40.0
    counts = rng.poisson(clean * photons + 2.0) + rng.normal(0, 1.5, clean.shape)
    noisy = np.clip(100 + counts * 20, 0, 65535).astype(np.uint16)
    truth = np.clip(100 + (clean * photons + 2.0) * 20, 0, 65535).astype(np.uint16)
    common = {"scale": SCALE, "units": UNITS, "colormap": "green", "blending": "additive"}
    return [
        (noisy, {"name": "noisy cells", **common}, "image"),
        (truth, {"name": "cells (ground truth)", "visible": False, **common}, "image"),
    ]


def _scene(shape=(128, 128), seed: int = 2) -> np.ndarray:
    """A clean 8-bit greyscale scene: smooth shading, discs and stripes."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    img = 0.35 + 0.25 * xx + 0.15 * np.sin(6 * yy)
    for _ in range(6):
        cy, cx, r = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.06, 0.16)
        img += rng.uniform(-0.3, 0.3) * (((yy - cy) ** 2 + (xx - cx) ** 2) < r**2)
    img += 0.12 * np.sin(40 * (xx + 0.3 * yy)) * (yy > 0.7)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _scribbles(shape=(128, 128), seed: int = 3) -> np.ndarray:
    """A Labels mask (label 1 = damaged pixels): thin random strokes plus a few blocks."""
    rng = np.random.default_rng(seed)
    h, w = shape
    mask = np.zeros(shape, dtype=np.uint8)
    for _ in range(7):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(60):
            angle += rng.normal(0, 0.25)
            y, x = y + np.sin(angle), x + np.cos(angle)
            iy, ix = int(y), int(x)
            mask[max(iy - 1, 0) : iy + 1, max(ix - 1, 0) : ix + 1] = 1
    for _ in range(3):
        y, x = rng.integers(10, h - 16), rng.integers(10, w - 16)
        mask[y : y + 5, x : x + 5] = 1
    return mask


def damaged_image():
    """An 8-bit image with damaged pixels, the Labels mask marking them and the original."""
    clean = _scene()
    mask = _scribbles(clean.shape)
    damaged = clean.copy()
    damaged[mask > 0] = 0
    return [
        (damaged, {"name": "damaged"}, "image"),
        (mask, {"name": "damage mask", "opacity": 0.6}, "labels"),
        (clean, {"name": "original", "visible": False}, "image"),
    ]


def noisy_stack():
    """A small noisy (Z, Y, X) stack, for "all slices"."""
    rng = np.random.default_rng(4)
    base = _cells((64, 64), seed=5)
    z = np.arange(5)[:, None, None]
    clean = base[None] * np.exp(-((z - 2) ** 2) / 6.0)
    noisy = clean + rng.normal(0, 0.12, clean.shape)
    return [(
        noisy.astype(np.float32),
        {"name": "noisy stack", "scale": (0.5, *SCALE), "units": ("um", *UNITS),
         "axis_labels": ("z", "y", "x"), "colormap": "magma"},
        "image",
    )]


__all__ = ["damaged_image", "noisy_fluorescence", "noisy_stack"]
