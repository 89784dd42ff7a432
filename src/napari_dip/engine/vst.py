"""Poisson-Gaussian noise: the generalised Anscombe transform (GAT) and its exact unbiased inverse.

Fluorescence noise has a variance that grows with the intensity, ``var = gain * I + offset``
(shot noise plus read noise; :mod:`.noise` fits both from the image). The GAT

    f(z) = 2 / gain * sqrt(gain * z + 3/8 * gain**2 + offset)

turns it into noise of unit variance everywhere, so a mean squared error in f-space weighs dim and
bright structures alike. Here f is further scaled so that the intensity range [0, 1] maps to
[0, 1] (the noise variance in that space is then ``1 / span**2``, with span = f(1) - f(0)).

Going back, the algebraic inverse of f is biased at low counts (E[f(z)] != f(E[z])). The *exact
unbiased* inverse (Makitalo & Foi, IEEE TIP 2011/2013) maps E[f(z)] back to E[z]; it is computed
here numerically from the model itself (a table of E[f(z)] over the Poisson mean, by summing the
Poisson distribution and Gauss-Hermite quadrature of the Gaussian part, inverted by interpolation),
which is exact up to the table's resolution for any gain and read noise.

Pure numpy, plus torch only inside :meth:`Anscombe.forward_torch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..choices import NOISE_MODEL
from .noise import NoiseEstimate

#: auto picks Poisson-Gaussian when the noise standard deviation predicted at the bright end of
#: the image is at least this many times the one at the dark end.
SIGNAL_DEPENDENT_STD_RATIO = 1.5
#: Above this Poisson mean the Poisson-plus-Gaussian sum is treated as Gaussian (its skew, which is
#: what the exact inverse corrects, is negligible there).
_NORMAL_FROM = 400.0
_HERMITE = np.polynomial.hermite_e.hermegauss(24)


def _sqrt(u, floor: float, xp=np):
    """sqrt(u), continued below ``floor`` by its tangent: smooth, monotone and with a bounded
    slope where the model's variance would reach zero (below the black level)."""
    if xp is np:
        r = np.sqrt(floor)
        return np.where(u >= floor, np.sqrt(np.maximum(u, floor)), r + (u - floor) / (2 * r))
    r = floor.sqrt()
    return xp.where(u >= floor, u.clamp(min=floor).sqrt(), r + (u - floor) / (2 * r))


@dataclass(frozen=True)
class _Channel:
    """The GAT of one channel, with ``var = gain * I + offset`` in normalised intensity units."""

    gain: float
    offset: float

    @property
    def read_variance(self) -> float:
        """The Gaussian part's variance; a negative offset is read as a black level instead."""
        return max(self.offset, 0.0)

    @property
    def black_level(self) -> float:
        """Intensity of zero photons (only non-zero when the fitted offset is negative)."""
        return (self.read_variance - self.offset) / self.gain

    def raw(self, z: np.ndarray) -> np.ndarray:
        """f(z) in units of the stabilised noise's standard deviation."""
        a = self.gain
        return 2.0 / a * _sqrt(a * z + 0.375 * a * a + self.offset, 0.375 * a * a)

    def _expected(self, lam: np.ndarray) -> np.ndarray:
        """E[f(z)] for Poisson means ``lam`` (photons), in stabilised units."""
        s2 = self.read_variance / self.gain**2  # read variance in photon units
        nodes, weights = _HERMITE
        weights = weights / weights.sum()
        out = np.empty_like(lam)
        for i, m in enumerate(lam):
            if m >= _NORMAL_FROM:
                t = m + np.sqrt(m + s2) * nodes
                out[i] = np.sum(weights * 2 * _sqrt(t + 0.375 + s2, 0.375))
                continue
            lo = max(int(m - 12 * np.sqrt(m) - 12), 0)
            k = np.arange(lo, int(m + 12 * np.sqrt(m) + 25))
            from scipy.stats import poisson

            pk = poisson.pmf(k, m)
            t = k[:, None] + np.sqrt(s2) * nodes[None, :]
            g = 2 * _sqrt(t + 0.375 + s2, 0.375) @ weights
            out[i] = np.sum(pk * g)
        return out

    def table(self, top: float) -> tuple[np.ndarray, np.ndarray]:
        """(E[f(z)], intensity) over intensities up to ``top``, for the unbiased inverse."""
        lam_top = max((top - self.black_level) / self.gain, 1.0)
        lam = np.unique(np.concatenate([
            np.linspace(0, min(lam_top, 20.0), 161),
            np.geomspace(1.0, max(lam_top, 2.0), 160),
        ]))
        expected = self._expected(lam)
        expected = np.maximum.accumulate(expected)  # monotone for interpolation
        return expected, self.gain * lam + self.black_level


@dataclass(frozen=True)
class Anscombe:
    """Per-channel GAT scaled so that intensities [0, 1] map to [0, 1]; the exact unbiased inverse.

    ``gain``/``offset`` are per channel, in the normalised intensity units the network works in.
    """

    gain: tuple[float, ...]
    offset: tuple[float, ...]
    _tables: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self):
        if len(self.gain) != len(self.offset):
            raise ValueError("gain and offset need one value per channel")
        for g in self.gain:
            if not g > 0:
                raise ValueError(
                    "the Poisson-Gaussian model needs a positive gain (signal-dependent noise); "
                    "this image's noise does not grow with intensity: use noise_model='gaussian'"
                )

    @classmethod
    def from_estimate(cls, estimate: NoiseEstimate) -> Anscombe:
        return cls(tuple(float(g) for g in estimate.gain), tuple(float(o) for o in estimate.offset))

    def select(self, channels: list[int]) -> Anscombe:
        """The transform of some channels only."""
        return Anscombe(tuple(self.gain[c] for c in channels),
                        tuple(self.offset[c] for c in channels))

    def _channels(self) -> list[_Channel]:
        return [_Channel(g, o) for g, o in zip(self.gain, self.offset)]

    def _ends(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([c.raw(np.float64(0.0)) for c in self._channels()])
        hi = np.array([c.raw(np.float64(1.0)) for c in self._channels()])
        return lo, hi

    @property
    def span(self) -> np.ndarray:
        """f(1) - f(0) per channel, in stabilised standard deviations."""
        lo, hi = self._ends()
        return hi - lo

    @property
    def noise_variance(self) -> float:
        """The noise variance the model predicts in the scaled space (mean over channels)."""
        return float(np.mean(1.0 / self.span**2))

    def forward(self, cyx: np.ndarray) -> np.ndarray:
        """(C, ...) normalised intensities to the scaled stabilised space."""
        lo, hi = self._ends()
        out = np.empty(cyx.shape, np.float32)
        for i, ch in enumerate(self._channels()):
            out[i] = (ch.raw(cyx[i].astype(np.float64)) - lo[i]) / (hi[i] - lo[i])
        return out

    def _torch_constants(self, like):
        """gain, offset, f(0) and f(1) per channel, shaped to broadcast over an (N, C, ...)
        tensor ``like``, in its dtype and on its device."""
        import torch

        shape = (1, like.shape[1]) + (1,) * (like.ndim - 2)
        return tuple(torch.tensor(v, dtype=like.dtype, device=like.device).reshape(shape)
                     for v in (self.gain, self.offset, *self._ends()))

    def forward_torch(self, x):
        """The same on an (N, C, ...) tensor, differentiable (the data term's transform)."""
        import torch

        a, b, lo, hi = self._torch_constants(x)
        f = 2 / a * _sqrt(a * x + 0.375 * a * a + b, 0.375 * a * a, torch)
        return (f - lo) / (hi - lo)

    def variance_torch(self, x):
        """The model's noise variance at the intensities of an (N, C, ...) tensor ``x`` (at
        least a tiny floor: the model can reach zero at the black level)."""
        a, b, _, _ = self._torch_constants(x)
        return (a * x.clamp(min=0) + b).clamp(min=1e-8)

    def inverse_torch(self, s):
        """The algebraic inverse of :meth:`forward_torch` on an (N, C, ...) tensor: the
        intensities whose transform is ``s`` (with f's linear continuation below the floor)."""
        import torch

        a, b, lo, hi = self._torch_constants(s)
        floor = 0.375 * a * a
        root = (s * (hi - lo) + lo) * a / 2  # the square root _sqrt returned
        u = torch.where(root >= floor.sqrt(), root * root,
                        floor + (root - floor.sqrt()) * 2 * floor.sqrt())
        return (u - floor - b) / a

    def unbiased_inverse(self, cyx: np.ndarray) -> np.ndarray:
        """Scaled stabilised values, taken as E[f(z)], back to normalised intensities E[z]."""
        if not self._tables:
            # Up to twice the range, so estimates slightly above 1 still invert on the table.
            self._tables.extend(ch.table(2.0) for ch in self._channels())
        lo, hi = self._ends()
        out = np.empty(cyx.shape, np.float32)
        for i, (expected, intensity) in enumerate(self._tables):
            d = cyx[i].astype(np.float64) * (hi[i] - lo[i]) + lo[i]
            out[i] = np.interp(d, expected, intensity)
        return out

    def to_dict(self) -> dict:
        return {"gain": list(self.gain), "offset": list(self.offset),
                "stabilised_noise_variance": self.noise_variance}


@dataclass(frozen=True)
class NoiseModelChoice:
    """Which data term a run uses, why, and with which fitted parameters."""

    model: str  # 'gaussian' or 'poisson-gaussian'
    requested: str  # what was asked for ('auto' included)
    estimate: NoiseEstimate
    std_ratio: float  # predicted noise std at the bright end / at the dark end
    reason: str

    def anscombe(self) -> Anscombe | None:
        return Anscombe.from_estimate(self.estimate) if self.model == "poisson-gaussian" else None

    def to_dict(self) -> dict:
        return {"model": self.model, "requested": self.requested, "reason": self.reason,
                "std_ratio": round(self.std_ratio, 3), **self.estimate.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> NoiseModelChoice:
        """The choice :meth:`to_dict` wrote (e.g. kept in a resumable run's ledger)."""
        estimate = NoiseEstimate(tuple(d["variance"]), tuple(d["gain"]), tuple(d["offset"]))
        return cls(d["model"], d["requested"], estimate, float(d["std_ratio"]), d["reason"])


def std_ratio(estimate: NoiseEstimate, cyx: np.ndarray) -> float:
    """How much the noise standard deviation predicted by the fit grows across the image's
    intensities (2nd to 98th percentile), the largest over channels; 1 = flat."""
    ratios = []
    for ch, g, o in zip(cyx, estimate.gain, estimate.offset):
        lo, hi = np.percentile(ch, [2, 98])
        v_hi = o + g * hi
        v_lo = o + g * lo
        if v_hi <= 0:
            ratios.append(1.0)
            continue
        # A fitted variance at or below zero at the dark end: shot noise dominates entirely.
        floor = max(v_lo, 1e-3 * v_hi)
        ratios.append(float(np.sqrt(v_hi / floor)))
    return max(ratios) if ratios else 1.0


def choose_noise_model(requested: str, estimate: NoiseEstimate, cyx: np.ndarray,
                       name: str = "image") -> NoiseModelChoice:
    """Resolve ``requested`` ('auto', 'gaussian', 'poisson-gaussian') for a (C, Y, X) image in
    normalised units, given its noise ``estimate``."""
    requested = NOISE_MODEL.check(requested)
    ratio = std_ratio(estimate, cyx)
    positive = all(g > 0 for g in estimate.gain)
    if requested == "gaussian":
        return NoiseModelChoice("gaussian", requested, estimate, ratio, "asked for")
    if requested == "poisson-gaussian":
        if not positive:
            raise ValueError(
                f"{name}: the noise does not grow with intensity (fitted gain 0), so there is no "
                "Poisson-Gaussian model to stabilise; use noise model 'gaussian' or 'auto'"
            )
        return NoiseModelChoice("poisson-gaussian", requested, estimate, ratio, "asked for")
    if not positive:
        flat = [c for c, g in enumerate(estimate.gain) if g <= 0]
        where = f" in channel(s) {', '.join(map(str, flat))}" if len(estimate.gain) > 1 else ""
        reason = f"the noise does not grow with intensity{where} (fitted gain 0)"
        return NoiseModelChoice("gaussian", requested, estimate, ratio, reason)
    if ratio >= SIGNAL_DEPENDENT_STD_RATIO:
        reason = (f"noise std grows {ratio:.2f}x from dark to bright "
                  f"(>= {SIGNAL_DEPENDENT_STD_RATIO}): signal-dependent")
        return NoiseModelChoice("poisson-gaussian", requested, estimate, ratio, reason)
    reason = (f"noise std grows {ratio:.2f}x from dark to bright "
              f"(< {SIGNAL_DEPENDENT_STD_RATIO}): about constant")
    return NoiseModelChoice("gaussian", requested, estimate, ratio, reason)
