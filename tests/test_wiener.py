"""The Wiener second stage: what it adds to a denoising fit, where it applies, its two filters
and how 'auto' chooses between them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_dip.engine import restore
from napari_dip.engine import collaborative
from napari_dip.engine.collaborative import collaborative_wiener
from napari_dip.engine.operators import Identity
from napari_dip.engine.wiener import empirical_wiener, second_stage
from napari_dip.metrics import psnr

FAST = dict(preset="light", device="cpu", seed=0)


@pytest.fixture(scope="module")
def photon_nuclei(load):
    """Real 16-bit nuclei at 1-21 photons (Poisson), and the truth."""
    clean = load("nuclei_64_uint16.tif").astype(np.float64)
    photons = 1 + 20 * (clean - clean.min()) / np.ptp(clean)
    noisy = (np.random.default_rng(1).poisson(photons) * 50).astype(np.uint16)
    return noisy, photons * 50


@pytest.mark.parametrize("case", ["photon_nuclei", "noisy_f16"])
def test_the_second_stage_adds_psnr_to_a_denoising_fit(case, request, load, gaussian_noise):
    if case == "photon_nuclei":
        noisy, truth = request.getfixturevalue("photon_nuclei")
        peak = truth.max()
    else:  # a colour image, filtered in the opponent-colour basis
        truth = load("f16_64.png")
        noisy, peak = gaussian_noise(truth, 25), 255
    plain = restore(noisy, "denoise", refine="none", **FAST)
    refined = restore(noisy, "denoise", **FAST)
    stage = refined.record["planes"][0]["refinement"]
    assert stage["colour"] == (noisy.ndim == 3) and stage["asked"] == "auto"
    # auto: a blend of filters under the Poisson-Gaussian model, grouped under Gaussian noise
    noise_model = refined.record["noise_model"]["model"]
    assert (noise_model, stage["method"]) == (("poisson-gaussian", "blend") if case == "photon_nuclei"
                                              else ("gaussian", "collaborative"))
    assert refined.record["config"]["refine"] == "auto"
    assert plain.record["planes"][0].get("refinement") is None
    # either stage follows the same fit, stopped at the noise level itself
    for run in (plain, refined):
        assert run.record["planes"][0]["stopping"]["kappa"] == 1
    assert refined.record["iterations"] == plain.record["iterations"]
    assert refined.image.dtype == noisy.dtype and refined.image.shape == noisy.shape
    gain = psnr(truth, refined.image, peak) - psnr(truth, plain.image, peak)
    assert gain > 0.3, gain


def test_a_task_with_another_forward_model_refuses_the_stage_before_fitting(load):
    img = load("kate_64.png")
    fill = load("kate_64_fill_mask.png") > 0
    with pytest.raises(ValueError, match="refine 'none'"):
        restore(img, "inpaint", mask=fill, refine="wiener", max_iters=1, **FAST)
    with pytest.raises(ValueError, match="second stage"):
        restore(img, "denoise", refine="median", max_iters=1, **FAST)


def test_a_guided_fit_keeps_its_estimate_by_default(photon_nuclei, load):
    noisy, _ = photon_nuclei
    guided = restore(noisy, guide=load("nuclei_64_uint16.tif"), max_iters=5, **FAST)
    assert guided.record["config"]["refine"] == "none"
    asked = restore(noisy, guide=load("nuclei_64_uint16.tif"), max_iters=5, refine="wiener",
                    **FAST)
    assert asked.record["planes"][0]["refinement"]["method"] == "wiener"


def test_the_filter_keeps_what_the_pilot_calls_signal_and_drops_the_rest():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :40]
    clean = torch.tensor(0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 5.0), dtype=torch.float32)
    noisy = clean + torch.tensor(rng.normal(0, 0.1, clean.shape), dtype=torch.float32)
    err = lambda x: float(((x - clean) ** 2).mean())  # noqa: E731
    with_truth = empirical_wiener(noisy[None], clean[None], [0.01])[0]
    flat_pilot = empirical_wiener(noisy[None], torch.full_like(clean, 0.5)[None], [0.01])[0]
    assert err(with_truth) < err(noisy) / 5  # an oracle pilot: most of the noise goes
    assert abs(float(flat_pilot.mean()) - float(noisy.mean())) < 0.01  # the mean stays
    assert err(flat_pilot) > err(with_truth) * 3  # a pilot without the signal loses it
    # no grid of block edges: steps across block boundaries are like the others
    steps = (with_truth[1:] - with_truth[:-1]).abs().mean(1)
    on_edge = steps[1::2].mean() / steps[0::2].mean()
    assert 0.9 < float(on_edge) < 1.1
    tiny = torch.rand(2, 5, 7)
    assert empirical_wiener(tiny, tiny, [0.01, 0.02]).shape == (2, 5, 7)
    with pytest.raises(ValueError, match="one noise variance per channel"):
        empirical_wiener(tiny, tiny, [0.01])


def test_grouping_alike_blocks_beats_the_local_filter_on_a_natural_image(load, gaussian_noise):
    truth = load("f16_64.png")
    noisy = gaussian_noise(truth, 25)
    local = restore(noisy, "denoise", refine="wiener", **FAST)
    grouped = restore(noisy, "denoise", refine="collaborative", **FAST)
    assert grouped.record["planes"][0]["refinement"]["method"] == "collaborative"
    # the same fit under either filter: the grouping alone makes the difference
    assert grouped.record["iterations"] == local.record["iterations"]
    assert psnr(truth, grouped.image, 255) > psnr(truth, local.image, 255) + 0.2


def _stripes(shape=(64, 72), seed=0):
    """A texture that repeats (diagonal stripes), plus noise of variance 0.01."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    clean = torch.tensor(0.5 + 0.3 * np.sign(np.sin((xx + yy) / 2.5)), dtype=torch.float32)
    rng = np.random.default_rng(seed)
    return clean, clean + torch.tensor(rng.normal(0, 0.1, clean.shape), dtype=torch.float32)


def test_the_collaborative_filter_finds_a_repeated_texture_that_one_block_hides():
    clean, noisy = _stripes()
    err = lambda x: float(((x - clean) ** 2).mean())  # noqa: E731
    grouped = collaborative_wiener(noisy[None], clean[None], [0.01])[0]
    local = empirical_wiener(noisy[None], clean[None], [0.01])[0]
    assert err(grouped) < err(noisy) / 10
    assert err(grouped) < err(local) / 1.5
    flat = collaborative_wiener(noisy[None], torch.full_like(clean, 0.5)[None], [0.01])[0]
    assert abs(float(flat.mean()) - float(noisy.mean())) < 0.01  # the mean stays
    assert err(flat) > err(grouped) * 3  # a pilot without the signal loses it


def test_the_collaborative_filter_keeps_the_data_type_whatever_the_default_one():
    clean, noisy = _stripes()
    expected = collaborative_wiener(noisy[None], clean[None], [0.01])
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # as the batched path's tests run the engine
    try:
        got = collaborative_wiener(noisy[None], clean[None], [0.01])
    finally:
        torch.set_default_dtype(before)
    assert got.dtype == torch.float32 and torch.equal(got, expected)


def test_the_collaborative_filter_gives_one_result_whatever_its_bands(monkeypatch):
    clean, noisy = _stripes((70, 40))
    # a pilot without exact ties: equally near blocks may be grouped in either order
    clean = clean + torch.tensor(np.random.default_rng(1).normal(0, 0.02, clean.shape),
                                 dtype=torch.float32)
    colour = torch.stack([noisy, noisy.flip(0), noisy.flip(1)])
    pilot = torch.stack([clean, clean.flip(0), clean.flip(1)])
    whole = collaborative_wiener(colour, pilot, [0.01] * 3, colour=True)
    monkeypatch.setattr(collaborative, "_BAND_ELEMENTS", 64 * 40 * 40)  # bands of a few rows
    banded = collaborative_wiener(colour, pilot, [0.01] * 3, colour=True)
    assert float((whole - banded).abs().mean()) < 1e-4
    assert whole.shape == colour.shape and whole.dtype == colour.dtype


@pytest.mark.parametrize("asked", ["collaborative", "blend"])
def test_a_plane_too_small_to_group_is_filtered_block_by_block(asked):
    noisy = torch.rand(1, 12, 30)
    with pytest.raises(ValueError, match="at least 16"):
        collaborative_wiener(noisy, noisy, [0.01])
    refined, record = second_stage(noisy.clamp(0, 1), noisy, Identity(), asked)
    assert record["method"] == "wiener" and record["asked"] == asked
    assert refined.shape == noisy.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_collaborative_filter_gives_the_cpu_result_on_cuda():
    clean, noisy = _stripes()
    clean = clean + 0.02 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    on_cpu = collaborative_wiener(noisy[None], clean[None], [0.01])
    on_gpu = collaborative_wiener(noisy[None].cuda(), clean[None].cuda(), [0.01])
    assert on_gpu.device.type == "cuda"
    assert float((on_gpu.cpu() - on_cpu).abs().mean()) < 1e-4
