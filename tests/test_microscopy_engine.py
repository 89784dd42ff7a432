"""Microscopy features end to end on real crops: Poisson-Gaussian noise, deconvolution, guided
restoration, warm-started and 3-D stacks."""

import numpy as np
import pytest

from napari_dip.engine import restore, restore_stack
from napari_dip.engine.vst import Anscombe
from napari_dip.metrics import psnr

FAST = dict(preset="light", device="cpu", seed=0)


def _nuclei01(load) -> np.ndarray:
    clean = load("nuclei_64_uint16.tif").astype(np.float64)
    return (clean - clean.min()) / np.ptp(clean)


@pytest.fixture(scope="module")
def shot_noise(load):
    """Real nuclei as 2..42 photons (gain 50 counts per photon, offset 100), Poisson noise."""
    photons = 2 + 40 * _nuclei01(load)
    noisy = (np.random.default_rng(0).poisson(photons) * 50 + 100).astype(np.uint16)
    return noisy, photons * 50 + 100


@pytest.fixture(scope="module")
def pg_runs(shot_noise):
    noisy, _ = shot_noise
    return {m: restore(noisy, noise_model=m, **FAST) for m in ("auto", "gaussian")}


def test_auto_picks_poisson_gaussian_on_shot_noise_and_gains(shot_noise, pg_runs):
    noisy, truth = shot_noise
    auto, gauss = pg_runs["auto"], pg_runs["gaussian"]
    rec = auto.record["noise_model"]
    assert rec["model"] == "poisson-gaussian" and rec["requested"] == "auto"
    assert rec["gain"][0] > 0 and rec["std_ratio"] > 1.5
    before, after = psnr(truth, noisy, truth.max()), psnr(truth, auto.image, truth.max())
    assert after > before + 5, (before, after)
    # the stabilised data term does at least as well as plain MSE (measured 26.96 vs 26.75 dB)
    assert after > psnr(truth, gauss.image, truth.max()) - 0.1
    assert gauss.record["noise_model"]["model"] == "gaussian"


def test_stopping_target_is_the_noise_variance_in_the_stabilised_space(pg_runs):
    rec = pg_runs["auto"].record
    target = rec["planes"][0]["stopping"]["noise_variance"]
    # the rule measured the transformed data; the fitted model predicts 1 / span**2 there
    model = Anscombe(tuple(rec["noise_model"]["gain"]), tuple(rec["noise_model"]["offset"]))
    assert target == pytest.approx(model.noise_variance, rel=0.25)


def test_unbiased_inverse_keeps_the_mean_intensity(shot_noise, pg_runs):
    _, truth = shot_noise
    # (the inverse's own unbiasedness at 0.5-30 photons is tested in test_vst.py)
    out = pg_runs["auto"].image.astype(np.float64)
    assert out.mean() == pytest.approx(truth.mean(), rel=0.01)


def test_deconvolution_beats_richardson_lucy_at_its_best_count(load):
    from scipy import ndimage
    from skimage.restoration import richardson_lucy

    from napari_dip.engine.psf import gaussian_psf

    sharp = _nuclei01(load)
    k = gaussian_psf(1.5).kernel
    rng = np.random.default_rng(0)
    blurred = ndimage.convolve(sharp, k, mode="nearest")
    noisy = (rng.poisson(blurred * 200) / 200 * 1000 + 200).astype(np.uint16)
    truth = sharp * 1000 + 200
    rl = max(psnr(sharp, np.clip(richardson_lucy(np.clip((noisy - 200) / 1000, 1e-6, None), k,
                                                 num_iter=n, clip=False), 0, 1), 1.0)
             for n in (1, 2, 3, 5, 8, 12, 20, 30))
    result = restore(noisy, psf_sigma=1.5, **FAST)  # a PSF makes 'denoise' a deconvolution
    assert result.record["task"] == "deconvolve"
    assert result.record["operator"]["psf"]["sigma"] == [1.5, 1.5]
    dip = psnr(truth, result.image, 1200.0)
    assert dip > rl + 0.5, (dip, rl)


def test_a_guide_is_the_network_input(load):
    clean = load("nuclei_64_uint16.tif")
    photons = 1 + 20 * _nuclei01(load)
    noisy = (np.random.default_rng(1).poisson(photons) * 50).astype(np.uint16)
    truth = photons * 50
    guided = restore(noisy, guide=clean, **FAST)
    plain = restore(noisy, **FAST)
    assert guided.record["guide"]["channels"] == 1 and guided.record["config"]["jitter"] == 0
    # a clean view of the same field as the input beats noise as the input (31.0 vs 26.1 dB)
    assert psnr(truth, guided.image, truth.max()) > psnr(truth, plain.image, truth.max()) + 2
    with pytest.raises(ValueError, match="guide 'g.tif' has spatial shape"):
        restore(noisy, guide=clean[:32], guide_name="guide 'g.tif'", max_iters=1, **FAST)


@pytest.fixture(scope="module")
def noisy_stack(load):
    stack = load("nuclei3d_3x40x40_uint16.tif").astype(np.float64)
    s01 = (stack - stack.min()) / np.ptp(stack)
    truth = (s01 * 30 + 2) * 40
    return (np.random.default_rng(0).poisson(s01 * 30 + 2) * 40).astype(np.uint16), truth


def test_warm_start_needs_fewer_iterations_for_the_same_quality(noisy_stack):
    noisy, truth = noisy_stack
    cold = restore_stack(noisy, stack_mode="slices", **FAST)
    warm = restore_stack(noisy, stack_mode="warm", **FAST)
    it_cold = [e["iterations"] for e in cold.record["slices"]]
    it_warm = [e["iterations"] for e in warm.record["slices"]]
    assert it_warm[0] == it_cold[0]  # the first slice starts cold either way
    assert sum(it_warm[1:]) < 0.6 * sum(it_cold[1:]), (it_cold, it_warm)
    assert [p["warm_start"] for e in warm.record["slices"] for p in e["planes"]] == \
        [False, True, True]
    # every slice, warm or cold, goes through the Wiener stage
    assert all(p.get("refinement") for r in (cold, warm) for e in r.record["slices"]
               for p in e["planes"])
    p_cold, p_warm = (psnr(truth, r.image, truth.max()) for r in (cold, warm))
    assert p_warm > p_cold - 0.3, (p_cold, p_warm)
    assert warm.record["stack_mode"]["mode"] == "warm"


def test_stack_mode_is_chosen_from_the_stack(noisy_stack):
    noisy, _ = noisy_stack
    alike = restore_stack(noisy, max_iters=2, **FAST).record["stack_mode"]
    assert alike["mode"] == "warm" and alike["requested"] is None
    rng = np.random.default_rng(5)
    unrelated = rng.integers(0, 1000, noisy.shape).astype(np.uint16)
    mode = restore_stack(unrelated, max_iters=2, **FAST).record["stack_mode"]
    assert mode["mode"] == "slices" and "correlate" in mode["reason"]


def test_3d_network_respects_the_voxel_size_and_restores(noisy_stack):
    noisy, truth = noisy_stack
    result = restore_stack(noisy, stack_mode="3d", voxel_size=(2.0, 0.5, 0.5), max_iters=150,
                           stopping="none", **FAST)
    net = result.record["config"]["net"]
    # 3 planes 4x coarser than the pixels: Z is never down-sampled, and the finest level, where
    # planes are more than 2 pixels apart, gets no Z filter
    assert tuple(net["z_strides"]) == (1, 1, 1, 1, 1)
    assert tuple(net["z_kernels"]) == (1, 3, 3, 3, 3)
    assert result.image.shape == noisy.shape and result.image.dtype == noisy.dtype
    assert result.record["stack_mode"]["voxel_size"] == [2.0, 0.5, 0.5]
    before, after = psnr(truth, noisy, truth.max()), psnr(truth, result.image, truth.max())
    assert after > before + 2, (before, after)


def test_3d_refuses_what_it_cannot_do(noisy_stack):
    noisy, _ = noisy_stack
    with pytest.raises(ValueError, match="stack mode '3d' restores tasks denoise and deconvolve"):
        restore_stack(noisy, "sr", stack_mode="3d", **FAST)
    with pytest.raises(ValueError, match="takes no mask"):
        restore_stack(noisy, "inpaint", mask=np.zeros(noisy.shape[1:], bool), stack_mode="3d",
                      **FAST)


def _fwhm(profile) -> float:
    """Full width at half maximum of a 1-D peak above the profile's minimum (linear
    interpolation)."""
    p = np.asarray(profile, np.float64) - np.min(profile)
    i, half = int(np.argmax(p)), p.max() / 2
    lo, hi = i, i
    while lo > 0 and p[lo] > half:
        lo -= 1
    while hi < len(p) - 1 and p[hi] > half:
        hi += 1
    left = lo + (half - p[lo]) / (p[lo + 1] - p[lo])
    right = hi - 1 + (p[hi - 1] - half) / (p[hi - 1] - p[hi])
    return right - left


def test_2d_deconvolution_of_points_raises_their_peaks_and_narrows_them():
    # As in 3-D: a plane's points are brighter than anything observed once deconvolved.
    from scipy import ndimage

    from napari_dip.engine.psf import gaussian_psf

    points = [(10, 10), (21, 12), (12, 22), (22, 21)]
    k = gaussian_psf(1.5, 2).kernel
    truth = np.zeros((32, 32))
    for p in points:
        truth[p] = 50 / k.max()
    noisy = np.random.default_rng(0).poisson(
        ndimage.convolve(truth, k, mode="nearest") + 2).astype(np.uint16)
    result = restore(noisy, "deconvolve", psf=k, max_iters=300, stopping="none",
                     as_float=True, **FAST)

    def widths(v):
        return np.mean([(_fwhm(v[y - 6:y + 7, x]), _fwhm(v[y, x - 6:x + 7]), v[y, x])
                        for y, x in points], axis=0)

    (wy0, wx0, peak0), (wy, wx, peak) = widths(noisy), widths(result.image)
    assert peak > 2 * noisy.max(), (peak0, peak)
    assert wy < 0.85 * wy0 and wx < 0.85 * wx0, ((wy0, wx0), (wy, wx))
    assert result.record["operator"]["gain"][0] > 1
    clipped = restore(noisy, "deconvolve", psf=k, max_iters=300, stopping="none", **FAST)
    assert clipped.image.dtype == np.uint16 and clipped.image.max() > noisy.max()


def test_deconvolution_gives_headroom_only_to_an_image_whose_peaks_need_it(load):
    # Extended objects (nuclei) keep the input's range: room they do not need costs quality.
    from scipy import ndimage

    blurred = ndimage.gaussian_filter(load("nuclei_64_uint16.tif").astype(np.float32), 2)
    record = restore(blurred, "deconvolve", psf_sigma=2, max_iters=2, **FAST).record["operator"]
    assert "gain" not in record and 1 <= record["peak_ratio"][0] < 2


def test_3d_deconvolution_of_points_raises_their_peaks_and_narrows_them():
    # Point sources under a 3-D Gaussian PSF: the deconvolved peaks lie far above the observed
    # range. Bounded by that range (the network's [0, 1]), the fit could only spread a plateau.
    from scipy import ndimage

    from napari_dip.engine.psf import gaussian_psf

    points = [(4, 10, 10), (3, 21, 12), (4, 12, 22), (5, 22, 21)]
    k = gaussian_psf((1.0, 1.5, 1.5)).kernel
    truth = np.zeros((8, 32, 32))
    for p in points:
        truth[p] = 50 / k.max()  # 50 photons at the observed peak
    noisy = np.random.default_rng(0).poisson(
        ndimage.convolve(truth, k, mode="nearest") + 2).astype(np.float32)
    result = restore_stack(noisy, "deconvolve", psf=k, stack_mode="3d", max_iters=200,
                           stopping="none", as_float=True, **FAST)

    def widths(v):
        return np.mean([(_fwhm(v[z, y - 6:y + 7, x]), _fwhm(v[z, y, x - 6:x + 7]), v[z, y, x])
                        for z, y, x in points], axis=0)

    (wy0, wx0, peak0), (wy, wx, peak) = widths(noisy), widths(result.image)
    # well above anything observed (a fit bounded by the observed range stays at or under 1x);
    # how far after 200 steps depends on the processor's kernels (1.9x on one, above 2x on another)
    assert peak > 1.5 * noisy.max() and peak > 2 * peak0, (peak0, peak, noisy.max())
    assert wy < 0.85 * wy0 and wx < 0.85 * wx0, ((wy0, wx0), (wy, wx))
    assert result.record["operator"]["gain"][0] > 1


def _points_and_blur(defocus: float = 0.0, shape=(32, 32), points=None):
    """Points under a Gaussian PSF (sigma 1.5 px) with shot noise, ``defocus`` px of extra blur
    (out of focus: a short Richardson-Lucy run raises the peaks < 2x; in focus: > 3x)."""
    from scipy import ndimage

    from napari_dip.engine.psf import gaussian_psf

    k = gaussian_psf(1.5, 2).kernel
    truth = np.zeros(shape)
    for p in points or [(10, 10), (21, 12), (12, 22), (22, 21)]:
        truth[p] = 50 / k.max()
    blurred = ndimage.convolve(truth, k, mode="nearest")
    if defocus:
        blurred = ndimage.gaussian_filter(blurred, defocus)
    return np.random.default_rng(0).poisson(blurred + 2).astype(np.uint16), k


@pytest.mark.parametrize("mode", ["slices", "warm"])
def test_a_stack_decides_the_deconvolution_headroom_once_for_every_slice(mode):
    # The in-focus slices need room above the range, an out-of-focus one alone would not: one
    # decision for the stack, as for its intensity map and noise model (a warm-started slice
    # would otherwise inherit weights fitted at another gain).
    (sharp, k), (soft, _) = _points_and_blur(), _points_and_blur(defocus=3)
    stack = np.stack([sharp, sharp, soft])
    result = restore_stack(stack, "deconvolve", psf=k, stack_mode=mode, max_iters=3,
                           as_float=True, **FAST)
    assert result.image.dtype == np.float32 and result.record["output_dtype"] == "float32"
    op = result.record["operator"]  # the last (out-of-focus) slice's fit
    only_sharp = restore(sharp, "deconvolve", psf=k, max_iters=3, **FAST).record["operator"]
    only_soft = restore(soft, "deconvolve", psf=k, max_iters=3, **FAST).record["operator"]
    assert "gain" not in only_soft and only_soft["peak_ratio"][0] < 2
    assert op["gain"] == only_sharp["gain"] and op["gain"][0] > 1 and op["peak_ratio"][0] >= 2


def test_tiles_share_the_plane_s_deconvolution_headroom():
    # Points in the right half only: every tile gets the room the untiled plane gets, so the
    # blended tiles meet at one intensity scale.
    right = [(10, 42), (21, 44), (12, 54), (22, 53)]
    image, k = _points_and_blur(shape=(32, 64), points=right)
    whole = restore(image, "deconvolve", psf=k, max_iters=3, **FAST).record["operator"]
    tiled = restore(image, "deconvolve", psf=k, max_iters=3, tile=32, **FAST)
    assert len(tiled.record["tiles"]) > 1 and whole["gain"][0] > 1
    assert tiled.record["operator"]["gain"] == whole["gain"]  # the first, left tile's fit
    assert tiled.record["operator"]["peak_ratio"][0] >= 2


@pytest.mark.parametrize("channels", ["joint", "separate"])
def test_each_channel_fitted_alone_decides_its_own_deconvolution_headroom(load, channels):
    # Beads in one channel, nuclei in the other: only the beads need room above the range.
    # Fitted separately, the nuclei come out as they do alone (room costs extended objects);
    # fitted by one network, both channels share the beads' room.
    from scipy import ndimage

    beads, k = _points_and_blur(shape=(64, 64), points=[(12, 12), (40, 20), (20, 44), (50, 50)])
    nuclei = ndimage.convolve(load("nuclei_64_uint16.tif").astype(np.float32), k, mode="nearest")
    nuclei = np.random.default_rng(1).poisson(nuclei / nuclei.max() * 200 + 2).astype(np.uint16)
    both = np.stack([beads, nuclei])
    result = restore(both, "deconvolve", psf=k, max_iters=40, stopping="none", as_float=True,
                     channel_axis=0, channels=channels, **FAST)
    op = result.record["operator"]
    assert op["peak_ratio"][0] >= 2 > op["peak_ratio"][1]
    if channels == "joint":  # one network: one gain, or the beads' errors drown the nuclei's
        assert op["gain"][0] == op["gain"][1] > 1, op
        return
    assert op["gain"][0] > 1 and op["gain"][1] == 1.0, op
    alone = restore(nuclei, "deconvolve", psf=k, max_iters=40, stopping="none", as_float=True,
                    **FAST)
    assert "gain" not in alone.record["operator"]
    # separate fits: the nuclei's is the same fit as alone, to float rounding
    np.testing.assert_allclose(result.image[1], alone.image, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("channels", ["joint", "separate"])
def test_a_volume_s_channels_get_their_headroom_as_planes_do(channels):
    # Stack mode '3d', (Z, C, Y, X): points in channel 0, the same points defocused in channel 1.
    (sharp, k), (soft, _) = _points_and_blur(), _points_and_blur(defocus=3)
    vol = np.stack([np.stack([sharp, soft])] * 4).astype(np.float32)
    result = restore_stack(vol, "deconvolve", psf=k, stack_mode="3d", channel_axis=0,
                           channels=channels, max_iters=2, as_float=True, **FAST)
    op = result.record["operator"]
    assert op["peak_ratio"][0] >= 2 > op["peak_ratio"][1]
    assert op["gain"][0] > 1 and op["gain"][1] == (op["gain"][0] if channels == "joint" else 1)
    assert result.image.shape == vol.shape and np.isfinite(result.image).all()
