"""Noise level estimated from the image alone."""

import numpy as np
import pytest

from napari_dip.engine.noise import estimate_noise


def test_gaussian_noise_level_on_a_real_image(load):
    clean = load("f16_64.png").astype(np.float64) / 255
    rng = np.random.default_rng(1)
    noisy = clean + rng.normal(0, 25 / 255, clean.shape)
    est = estimate_noise(np.moveaxis(noisy, -1, 0))
    assert est.sigma == pytest.approx(25 / 255, rel=0.12)
    # a clean image has far less
    assert estimate_noise(np.moveaxis(clean, -1, 0)).sigma < 0.4 * 25 / 255


def test_shot_noise_mean_variance_and_gain_are_recovered(load):
    from skimage.filters import gaussian

    # smoothed, so that the "clean" image carries no noise of its own
    clean = gaussian(load("nuclei_64_uint16.tif").astype(np.float64), 1.0)
    photons = 5 + 60 * (clean - clean.min()) / np.ptp(clean)
    rng = np.random.default_rng(2)
    noisy = rng.poisson(np.tile(photons, (3, 3))).astype(np.float64)  # 192x192, gain 1
    est = estimate_noise(noisy[None])
    true_mean_variance = np.tile(photons, (3, 3)).mean()
    assert est.mean_variance == pytest.approx(true_mean_variance, rel=0.15)
    assert est.gain[0] == pytest.approx(1.0, rel=0.3)
    # a single global MAD, dominated by the dim background, would under-estimate it
    dim = np.median(np.tile(photons, (3, 3)))
    assert dim < 0.8 * true_mean_variance


def test_pixels_to_fill_are_ignored():
    rng = np.random.default_rng(3)
    img = 0.5 + rng.normal(0, 0.02, (1, 64, 64))
    img[0, 10:40, 10:40] = rng.uniform(0, 1, (30, 30))  # garbage where the mask says "fill"
    known = np.ones((64, 64))
    known[10:40, 10:40] = 0
    assert estimate_noise(img, known).sigma == pytest.approx(0.02, rel=0.1)
    assert estimate_noise(img).sigma > 0.03
