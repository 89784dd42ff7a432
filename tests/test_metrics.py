"""PSNR and SSIM (napari_dip.metrics)."""

import numpy as np
import pytest

from napari_dip.metrics import _ssim_plane, psnr, ssim


def test_ssim_fallback_matches_skimage():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(7)
    a = rng.random((30, 40))
    b = a + rng.normal(0, 0.1, a.shape)
    expected = metrics.structural_similarity(a, b, data_range=1.0)
    assert _ssim_plane(a, b, 1.0) == pytest.approx(expected, rel=1e-6)
    assert ssim(a, b, 1.0) == pytest.approx(expected, rel=1e-6)
    assert psnr(a, a, 1.0) == float("inf")
