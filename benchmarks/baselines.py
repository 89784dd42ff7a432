"""The classical methods a user would try instead of DIP. All take and return float images in [0, 1]
(H, W) or (H, W, 3); none is given the true noise level (it is estimated from the noisy image)."""

from __future__ import annotations

import importlib.util

import numpy as np


def has_bm3d() -> bool:
    return importlib.util.find_spec("bm3d") is not None


def _channel_axis(x: np.ndarray):
    return -1 if x.ndim == 3 else None


def sigma_hat(x: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(x, channel_axis=_channel_axis(x), average_sigmas=True))


def bm3d_denoise(x: np.ndarray) -> np.ndarray:
    import bm3d

    s = max(sigma_hat(x), 1e-3)
    if x.ndim == 3:
        # 'np' profile: bm4d 4.2.5's 'refilter' profile crashes for RGB (reference/baselines.md).
        return np.asarray(bm3d.bm3d_rgb(x, sigma_psd=s), np.float32)
    return np.asarray(bm3d.bm3d(x, sigma_psd=s), np.float32)


def nlm(x: np.ndarray) -> np.ndarray:
    """scikit-image non-local means with its documented settings: h = 0.8 sigma_hat, 5x5 patches, 13x13 search."""
    from skimage.restoration import denoise_nl_means

    s = sigma_hat(x)
    return denoise_nl_means(x, h=0.8 * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True,
                            channel_axis=_channel_axis(x)).astype(np.float32)


def tv(x: np.ndarray) -> np.ndarray:
    """Chambolle TV with weight = sigma_hat (a simple rule; no ground truth)."""
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(x, weight=max(sigma_hat(x), 1e-3),
                                channel_axis=_channel_axis(x)).astype(np.float32)


def wavelet(x: np.ndarray) -> np.ndarray:
    """BayesShrink soft thresholding (sigma estimated by the method itself), YCbCr for colour."""
    from skimage.restoration import denoise_wavelet

    return denoise_wavelet(x, method="BayesShrink", mode="soft", rescale_sigma=True,
                           convert2ycbcr=x.ndim == 3, channel_axis=_channel_axis(x)).astype(np.float32)


def bicubic(lr_uint8: np.ndarray, factor: int) -> np.ndarray:
    """PIL bicubic upsampling (uint8 in, uint8 out), the usual SR baseline."""
    from PIL import Image

    h, w = lr_uint8.shape[:2]
    return np.asarray(Image.fromarray(lr_uint8).resize((w * factor, h * factor), Image.BICUBIC))


def biharmonic(x: np.ndarray, fill: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic

    return inpaint_biharmonic(x, fill.astype(bool), channel_axis=_channel_axis(x)).astype(np.float32)


DENOISERS = {"BM3D": bm3d_denoise, "NLM": nlm, "TV": tv, "wavelet": wavelet}


def gat_bm3d(x: np.ndarray) -> np.ndarray:
    """BM3D after the generalised Anscombe transform, with gain and read noise fitted to the image
    by napari-dip's own estimator (the parameters DIP's Poisson-Gaussian data term uses), then
    the exact unbiased inverse. Falls back to plain BM3D when the fit finds no shot noise."""
    import bm3d

    from napari_dip.engine.noise import estimate_noise
    from napari_dip.engine.vst import Anscombe

    est = estimate_noise(x[None] if x.ndim == 2 else np.moveaxis(x, -1, 0))
    if not all(g > 0 for g in est.gain) or x.ndim != 2:
        return bm3d_denoise(x)
    vst = Anscombe.from_estimate(est)
    t = vst.forward(x[None].astype(np.float64))[0]
    sigma = float(np.sqrt(vst.noise_variance))
    d = np.asarray(bm3d.bm3d(t, sigma_psd=sigma), np.float64)
    return vst.unbiased_inverse(d[None])[0].astype(np.float32)
