"""PSFs (a measured bead PSF, Gaussian sigmas) and the blur operator of deconvolution."""

import numpy as np
import pytest
from scipy import ndimage

from napari_dip.engine.psf import gaussian_psf, make_psf, parse_sigma, prepare_psf


def test_measured_psf_is_normalised_centred_odd_and_background_free(load):
    # A crop of the measured bead PSF: even-sized along Z, its peak off the array's centre,
    # summing to 0.34 (the rest of the energy is outside the crop), with a background floor.
    raw = load("psf_beads_16x17x15.tif")
    assert raw.shape == (16, 17, 15) and raw.sum() == pytest.approx(0.339, abs=0.01)
    floored = raw + 0.05 * raw.max()
    psf = prepare_psf(floored, "PSF 'beads.tif'")
    k = psf.kernel
    assert k.ndim == 3 and all(n % 2 == 1 for n in k.shape)
    assert k.sum() == pytest.approx(1.0) and k.min() >= 0
    np.testing.assert_allclose(ndimage.center_of_mass(k), [n // 2 for n in k.shape], atol=0.02)
    # the floor is gone: the kernel's corners hold (almost) nothing
    assert k[0, 0, 0] < 1e-3 * k.max()
    # same kernel, up to the floor's removal, as from the raw crop
    clean = prepare_psf(raw).kernel
    if clean.shape == k.shape:
        assert np.abs(clean - k).sum() < 0.1


def test_psf_errors_name_the_file():
    with pytest.raises(ValueError, match="PSF 'p.tif'.*2-D .* or 3-D"):
        prepare_psf(np.ones((2, 3, 4, 5)), "PSF 'p.tif'")
    with pytest.raises(ValueError, match="PSF 'p.tif' has no positive values"):
        prepare_psf(np.zeros((5, 5)), "PSF 'p.tif'")
    with pytest.raises(ValueError, match="NaN"):
        prepare_psf(np.full((5, 5), np.nan), "PSF 'p.tif'")
    with pytest.raises(ValueError, match="either a PSF image or Gaussian sigmas"):
        make_psf(np.ones((3, 3)), 2.0)
    with pytest.raises(ValueError, match="--psf-sigma takes"):
        parse_sigma("2,x")


def test_gaussian_psf_has_the_sigmas_asked_for():
    psf = gaussian_psf((1.0, 2.0, 3.0))
    k = psf.kernel
    assert k.shape == (9, 17, 25) and k.sum() == pytest.approx(1.0)
    for axis, sigma in enumerate((1.0, 2.0, 3.0)):
        profile = k.sum(axis=tuple(a for a in range(3) if a != axis))
        t = np.arange(profile.size) - profile.size // 2
        assert np.sqrt((profile * t**2).sum()) == pytest.approx(sigma, rel=0.02)
    # a 2-D image gets the in-focus plane: the (Y, X) Gaussian
    plane = make_psf(sigma=(1.0, 2.0, 3.0), ndim=2).kernel
    np.testing.assert_allclose(plane, gaussian_psf((2.0, 3.0)).kernel, atol=1e-9)


def test_blur_matches_scipy_inside_and_never_wraps_around():
    torch = pytest.importorskip("torch")
    from napari_dip.engine.operators import Blur

    rng = np.random.default_rng(0)
    k = gaussian_psf((1.5, 2.5)).kernel
    k = k * (1 + 0.3 * rng.random(k.shape))  # not symmetric: convolution, not correlation
    k /= k.sum()
    img = rng.random((40, 48))
    img[:, :3] = 5.0  # a bright band at the left edge
    x = torch.from_numpy(img)[None, None].float()
    direct = Blur(k).forward(x)[0, 0].numpy()
    ref = ndimage.convolve(img, k, mode="nearest")
    np.testing.assert_allclose(direct, ref, rtol=1e-4, atol=1e-5)
    assert direct[:, -5:].max() < 1.5  # the band does not reach the right edge
    # a large kernel goes through the FFT: the same linear convolution
    big = gaussian_psf((6.0, 6.0)).kernel
    fft = Blur(big)
    assert fft._fft
    np.testing.assert_allclose(fft.forward(x)[0, 0].numpy(),
                               ndimage.convolve(img, big, mode="nearest"), rtol=1e-3, atol=1e-4)


def test_blur_of_a_volume_with_the_measured_psf_keeps_the_total(load):
    torch = pytest.importorskip("torch")
    from napari_dip.engine.operators import Blur

    k = prepare_psf(load("psf_beads_16x17x15.tif")).kernel
    vol = np.zeros((24, 32, 32))
    vol[12, 16, 16] = 1.0  # one bead, in the middle
    out = Blur(k).forward(torch.from_numpy(vol)[None, None].float())[0, 0].numpy()
    assert out.shape == vol.shape and out.sum() == pytest.approx(1.0, rel=1e-3)
    # the image of a point is the PSF, centred on the point
    np.testing.assert_allclose(ndimage.center_of_mass(out), (12, 16, 16), atol=0.05)


@pytest.mark.parametrize("fft", [False, True])
def test_blur_of_a_volume_matches_scipy_with_an_asymmetric_psf(fft):
    # A 3-D kernel of different sides along Z, Y and X, its peak in a corner: an axis swapped,
    # flipped or off by one would show.
    torch = pytest.importorskip("torch")
    from napari_dip.engine.operators import Blur

    rng = np.random.default_rng(0)
    k = rng.random((3, 7, 5)) ** 4
    k[0, 1, 4] += 5.0
    k /= k.sum()
    vol = rng.random((9, 20, 16))
    op = Blur(k)
    op._fft = fft
    out = op.forward(torch.from_numpy(vol)[None, None].float())[0, 0].numpy()
    np.testing.assert_allclose(out, ndimage.convolve(vol, k, mode="nearest"), atol=2e-6)


def test_blur_gain_scales_the_blurred_image_and_is_recorded():
    torch = pytest.importorskip("torch")
    from napari_dip.engine.operators import Blur, deconvolution_gain

    k = gaussian_psf((1.0, 1.5, 1.5)).kernel
    x = torch.rand(1, 1, 6, 12, 12)
    np.testing.assert_allclose(Blur(k, gain=8.0).forward(x), 8.0 * Blur(k).forward(x), rtol=1e-6)
    assert Blur(k, gain=8.0).describe()["gain"] == [8.0] and "gain" not in Blur(k).describe()
    with pytest.raises(ValueError, match="gain"):
        Blur(k, gain=0.0)
    # headroom: 1 / peak of the kernel, within [1, the limit]
    assert deconvolution_gain(k) == pytest.approx(1 / k.max()) and 1 < 1 / k.max() < 64
    assert deconvolution_gain(gaussian_psf(3.0, 3).kernel) == 64.0
    assert deconvolution_gain(np.ones((1, 1, 1))) == 1.0
