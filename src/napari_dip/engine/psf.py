"""Point-spread functions for deconvolution: from an image (measured or computed) or Gaussian sigmas.

A PSF given as an image is made fit for use as a convolution kernel: negative values clipped, a
constant background removed (measured PSFs are averaged bead crops, whose background would act as
a floor under the kernel), cropped to where it has energy, re-centred on its centre of mass
(sub-pixel, so the deconvolved image is not shifted), made odd-sized and normalised to sum 1.
No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Energy kept when a PSF image is cropped to its support (the rest is noise in the tails).
KEEP_ENERGY = 0.999
#: Gaussian PSFs reach this many sigmas from their centre.
GAUSS_RADIUS = 4.0


@dataclass(frozen=True)
class PSF:
    """A normalised, centred, odd-sized kernel (2-D (Y, X) or 3-D (Z, Y, X)) and where it came
    from."""

    kernel: np.ndarray
    source: str  # 'image' or 'gaussian'
    sigma: tuple[float, ...] | None = None
    note: str = ""

    @property
    def ndim(self) -> int:
        return self.kernel.ndim

    def plane(self) -> PSF:
        """The 2-D PSF of an in-focus plane: the plane through the centre of a 3-D PSF."""
        if self.ndim == 2:
            return self
        k = self.kernel[self.kernel.shape[0] // 2]
        note = "in-focus plane of a 3-D PSF (the image is restored plane by plane)"
        return PSF(k / k.sum(), self.source, None if self.sigma is None else self.sigma[-2:], note)

    def to_dict(self) -> dict:
        d = {"source": self.source, "shape": list(self.kernel.shape)}
        if self.sigma is not None:
            d["sigma"] = list(self.sigma)
        if self.note:
            d["note"] = self.note
        return d


def gaussian_psf(sigma, ndim: int | None = None) -> PSF:
    """A Gaussian PSF; ``sigma`` is one value (the same on every axis), (Y, X) or (Z, Y, X), in
    pixels. ``ndim`` (2 or 3) forces the dimensionality for a single value."""
    s = np.atleast_1d(np.asarray(sigma, dtype=np.float64))
    if s.ndim != 1 or s.size not in (1, 2, 3) or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"PSF sigma must be 1, 2 or 3 non-negative numbers (Z, Y, X), not {sigma!r}")
    if s.size == 1:
        s = np.repeat(s, ndim or 2)
    if not np.any(s > 0):
        raise ValueError("PSF sigma is 0 on every axis: there is no blur to undo")
    axes = []
    for si in s:
        r = int(np.ceil(GAUSS_RADIUS * si))
        t = np.arange(-r, r + 1, dtype=np.float64)
        g = np.exp(-0.5 * (t / si) ** 2) if si > 0 else (t == 0).astype(np.float64)
        axes.append(g / g.sum())
    k = axes[0]
    for g in axes[1:]:
        k = np.multiply.outer(k, g)
    return PSF(k / k.sum(), "gaussian", tuple(float(x) for x in s))


def _background(a: np.ndarray) -> float:
    """Median of the array's outer shell (one voxel thick)."""
    inner = tuple(slice(1, -1) if n > 2 else slice(None) for n in a.shape)
    shell = np.ones(a.shape, bool)
    shell[inner] = False
    return float(np.median(a[shell])) if shell.any() else 0.0


def _support(a: np.ndarray, keep: float) -> tuple[slice, ...]:
    """The smallest box, symmetric about the centre of mass, holding ``keep`` of the energy."""
    from scipy import ndimage

    com = np.asarray(ndimage.center_of_mass(a))
    total = a.sum()
    limit = [max(int(np.ceil(max(c, n - 1 - c))), 0) for c, n in zip(com, a.shape)]
    best = None
    for r in range(max(limit) + 1):
        box = tuple(slice(max(int(round(c)) - min(r, lim), 0), int(round(c)) + min(r, lim) + 1)
                    for c, lim in zip(com, limit))
        best = box
        if a[box].sum() >= keep * total:
            break
    return best


def prepare_psf(psf, name: str = "PSF") -> PSF:
    """A PSF image (2-D or 3-D; singleton axes dropped) made into a kernel; raises ValueError
    with ``name`` for anything unusable."""
    from scipy import ndimage

    a = np.squeeze(np.asarray(psf, dtype=np.float64))
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} has shape {np.shape(psf)}; a PSF is a 2-D (Y, X) or 3-D "
                         "(Z, Y, X) image")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values; it cannot be a PSF")
    a = np.clip(a - max(_background(a), 0.0), 0, None)
    if a.sum() <= 0:
        raise ValueError(f"{name} has no positive values above its background; it cannot be a PSF")
    a = a[_support(a, KEEP_ENERGY)]
    # Sub-pixel re-centring: shift the centre of mass onto the centre of an odd-sized box.
    com = np.asarray(ndimage.center_of_mass(a))
    half = [int(np.ceil(max(c, n - 1 - c))) for c, n in zip(com, a.shape)]
    size = [2 * h + 1 for h in half]
    big = np.zeros(size)
    offset = [h - int(round(c)) for h, c in zip(half, com)]
    big[tuple(slice(o, o + n) for o, n in zip(offset, a.shape))] = a
    centre = np.asarray(half, float)
    for _ in range(4):  # linear interpolation spreads mass at the edges: repeat until centred
        residual = centre - np.asarray(ndimage.center_of_mass(big))
        if np.abs(residual).max() < 0.01:
            break
        big = np.clip(ndimage.shift(big, residual, order=1, mode="constant"), 0, None)
    if big.ndim == 3 and big.shape[0] == 1:
        big = big[0]
    return PSF(big / big.sum(), "image")


def make_psf(psf=None, sigma=None, ndim: int = 2, name: str = "PSF") -> PSF:
    """The PSF from an image or from Gaussian sigmas (exactly one of them), for an image of
    ``ndim`` spatial dimensions (a 3-D PSF is reduced to its in-focus plane for 2-D images)."""
    if (psf is None) == (sigma is None):
        raise ValueError("deconvolution needs a PSF: give either a PSF image or Gaussian sigmas "
                         "(not both)")
    p = prepare_psf(psf, name) if psf is not None else gaussian_psf(sigma, ndim)
    if ndim == 2:
        return p.plane()
    if p.ndim == 2:
        return PSF(p.kernel[None], p.source, p.sigma, "2-D PSF: no blur along Z")
    return p


def parse_sigma(text: str) -> tuple[float, ...]:
    """'2' or '1,2,2' (Z, Y, X) from the command line."""
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"--psf-sigma takes S or SY,SX or SZ,SY,SX in pixels, not {text!r}") \
            from None
    gaussian_psf(values)  # validates
    return values
