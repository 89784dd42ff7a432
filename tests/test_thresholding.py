"""BM3D's hard-thresholding step, the noise-variance maps of the local filter, and the blend of
filters that 'auto' runs under the Poisson-Gaussian model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_dip.engine import collaborative, restore, thresholding
from napari_dip.engine.thresholding import hard_threshold
from napari_dip.engine.vst import Anscombe
from napari_dip.engine.wiener import blend, empirical_wiener
from napari_dip.metrics import psnr

FAST = dict(preset="light", device="cpu", seed=0)


def _grey(load, name):
    img = load(name).astype(np.float64)
    return img.mean(-1) if img.ndim == 3 else img


def test_hard_thresholding_denoises_a_real_image_without_any_pilot(load, gaussian_noise):
    truth = _grey(load, "kate_64.png")
    noisy = gaussian_noise(truth, 25).astype(np.float32)
    out = hard_threshold(torch.from_numpy(noisy / 255)[None], [(25 / 255) ** 2])[0].numpy()
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert psnr(truth, out * 255, 255) > psnr(truth, noisy, 255) + 4


def test_hard_thresholding_gives_one_result_whatever_its_bands(monkeypatch, load, gaussian_noise):
    noisy = torch.from_numpy(gaussian_noise(load("f16_64.png"), 25).astype(np.float32) / 255)
    cyx = noisy.permute(2, 0, 1)
    whole = hard_threshold(cyx, [0.01] * 3, colour=True)
    monkeypatch.setattr(collaborative, "_BAND_ELEMENTS", 64 * 40 * 64)  # bands of a few rows
    banded = hard_threshold(cyx, [0.01] * 3, colour=True)
    assert float((whole - banded).abs().mean()) < 1e-4
    with pytest.raises(ValueError, match="at least 16"):
        hard_threshold(torch.rand(1, 12, 30), [0.01])
    assert thresholding.LAMBDA > 0


def test_a_map_of_noise_variances_filters_each_place_by_its_own_noise():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :64]
    clean = torch.tensor(0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 5.0), dtype=torch.float32)
    noisy = (clean + torch.tensor(rng.normal(0, 0.1, clean.shape), dtype=torch.float32))[None]
    flat = torch.full_like(clean, 0.5)[None]  # a pilot that says: no signal anywhere
    uniform = empirical_wiener(noisy, flat, torch.full_like(noisy, 0.01))
    assert torch.allclose(uniform, empirical_wiener(noisy, flat, [0.01]), atol=1e-5)
    # the observation as its own pilot: the right half, said to be noiseless, keeps it; the
    # left half, noisy, is shrunk towards the truth
    halves = torch.full_like(noisy, 0.01)
    halves[..., 40:] = 1e-8
    out = empirical_wiener(noisy, noisy, halves)
    assert float((out - noisy)[..., 48:].abs().max()) < 1e-3
    err = lambda x: float(((x - clean)[..., :24] ** 2).mean())  # noqa: E731
    assert err(out) < err(noisy) * 0.8
    with pytest.raises(ValueError, match="the data's shape"):
        empirical_wiener(noisy, flat, halves[..., 1:])


def test_the_blend_returns_intensities_under_the_model_and_keeps_the_shape():
    yy, xx = np.mgrid[:40, :48]
    clean = torch.tensor(0.5 + 0.3 * np.sin(xx / 4.0) * np.cos(yy / 6.0), dtype=torch.float32)[None]
    model = Anscombe((0.02,), (1e-4,))
    stabilised = torch.from_numpy(model.forward(clean.numpy()))
    out = blend(stabilised, stabilised, [model.noise_variance], anscombe=model)
    # the data without noise, as its own pilot: the filters give it back, in intensities
    assert out.shape == clean.shape and float((out - clean).abs().mean()) < 0.01
    assert float((stabilised - clean).abs().mean()) > 0.05  # and not in the stabilised space


@pytest.mark.parametrize("name", ["kate_64.png", "f16_64.png"])
def test_under_shot_noise_the_blend_beats_the_local_filter_on_a_textured_image(name, load):
    grey = _grey(load, name)
    photons = 0.5 + 10 * grey / 255  # at most about 10 photons
    noisy = (np.random.default_rng(3).poisson(photons) * 40 + 100).astype(np.uint16)
    truth = photons * 40 + 100
    auto = restore(noisy, "denoise", **FAST)
    local = restore(noisy, "denoise", refine="wiener", **FAST)
    stage = auto.record["planes"][0]["refinement"]
    assert auto.record["noise_model"]["model"] == "poisson-gaussian"
    assert stage["method"] == "blend" and len(stage["filters"]) == 3
    # the same fit (the same stop) under both filters
    assert auto.record["iterations"] == local.record["iterations"]
    assert psnr(truth, auto.image, truth.max()) > psnr(truth, local.image, truth.max()) + 0.5


@pytest.mark.parametrize("grey", [False, True], ids=["rgb", "grey"])
def test_under_gaussian_noise_the_collaborative_pilot_owes_half_to_the_thresholding(
        grey, load, gaussian_noise, monkeypatch):
    img = load("kate_64.png")[..., :3].astype(np.float64)
    truth = img.mean(-1) if grey else img
    noisy = gaussian_noise(truth, 25)
    auto = restore(noisy, "denoise", **FAST)
    stage = auto.record["planes"][0]["refinement"]
    assert stage["method"] == "collaborative" and stage["pilot"].startswith("the fit's and hard")
    assert stage["thresholding"]["lambda"] == thresholding.LAMBDA
    # the same fit, its estimate alone as the collaborative filter's pilot
    monkeypatch.setattr(thresholding, "mixed_pilot", lambda data, pilot, variance, colour: pilot)
    alone = restore(noisy, "denoise", **FAST)
    assert alone.record["iterations"] == auto.record["iterations"]
    assert psnr(truth, auto.image, 255) > psnr(truth, alone.image, 255) + 0.2
