"""Noise level of one image, estimated from the image itself (no clean reference).

The finest Haar diagonal detail of 2x2 blocks holds almost only noise (it cancels any intensity
that varies along Y or X alone). Its robust spread (MAD) is measured separately in bins of the
local mean intensity, so signal-dependent noise (shot noise in fluorescence) is measured where it
occurs instead of being dominated by the dark background, as a single global MAD would be. From
the same bins comes a Poisson-Gaussian fit ``variance = gain * intensity + read_variance``.

The stopping rule uses :attr:`NoiseEstimate.variance`: the mean noise variance over the image,
which is what the data term (a mean squared error) reaches when the fit starts reproducing noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MAD_TO_SIGMA = 1 / 0.6745
_BINS = 16
_MIN_PER_BIN = 16


@dataclass(frozen=True)
class NoiseEstimate:
    """Noise of a (C, Y, X) image, in the units of the array it was measured on."""

    variance: tuple[float, ...]  # mean noise variance per channel
    gain: tuple[float, ...]  # Poisson-Gaussian slope per channel (0 when not signal-dependent)
    offset: tuple[float, ...]  # variance at zero intensity per channel

    @property
    def mean_variance(self) -> float:
        return float(np.mean(self.variance))

    @property
    def sigma(self) -> float:
        return float(np.sqrt(self.mean_variance))

    def to_dict(self) -> dict:
        return {"sigma": self.sigma, "variance": list(self.variance), "gain": list(self.gain),
                "offset": list(self.offset)}


def _haar(plane: np.ndarray, known: np.ndarray | None):
    """Block means and diagonal details of the 2x2 blocks (only blocks fully known)."""
    h, w = plane.shape[0] // 2 * 2, plane.shape[1] // 2 * 2
    p = plane[:h, :w].astype(np.float64)
    a, b, c, d = p[::2, ::2], p[1::2, ::2], p[::2, 1::2], p[1::2, 1::2]
    level, detail = (a + b + c + d) / 4, (a - b - c + d) / 2
    if known is not None:
        k = np.asarray(known)[:h, :w] != 0
        full = k[::2, ::2] & k[1::2, ::2] & k[::2, 1::2] & k[1::2, 1::2]
        return level[full], detail[full]
    return level.ravel(), detail.ravel()


def _robust_variance(detail: np.ndarray) -> float:
    return float((np.median(np.abs(detail)) * _MAD_TO_SIGMA) ** 2)


def _channel(plane: np.ndarray, known: np.ndarray | None) -> tuple[float, float, float]:
    level, detail = _haar(plane, known)
    if detail.size < _BINS * _MIN_PER_BIN:
        v = _robust_variance(detail) if detail.size else 0.0
        return v, 0.0, v
    edges = np.quantile(level, np.linspace(0, 1, _BINS + 1))
    which = np.clip(np.searchsorted(edges, level, side="right") - 1, 0, _BINS - 1)
    means, variances, counts = [], [], []
    for k in range(_BINS):
        sel = which == k
        n = int(sel.sum())
        if n < _MIN_PER_BIN:
            continue
        means.append(float(level[sel].mean()))
        variances.append(_robust_variance(detail[sel]))
        counts.append(n)
    m, v, n = np.asarray(means), np.asarray(variances), np.asarray(counts, float)
    mean_variance = float(np.average(v, weights=n))
    gain, offset = 0.0, mean_variance
    if np.ptp(m) > 0:
        slope, intercept = np.polyfit(m, v, 1, w=np.sqrt(n))
        if slope > 0:
            gain, offset = float(slope), float(intercept)
    return mean_variance, gain, offset


def estimate_noise(cyx: np.ndarray, known: np.ndarray | None = None) -> NoiseEstimate:
    """Noise of a (C, Y, X) image; ``known`` (Y, X), non-zero = observed, limits it to those."""
    cyx = np.asarray(cyx)
    if cyx.ndim == 2:
        cyx = cyx[None]
    per = [_channel(ch, known) for ch in cyx]
    return NoiseEstimate(*(tuple(x) for x in zip(*per)))
