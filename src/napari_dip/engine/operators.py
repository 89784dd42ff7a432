"""Forward models A: what the measurement is, given the restored image.

The fit loop only calls ``output_size``, ``data_term`` and ``to(device)``, so a new task
(deconvolution, a noise-model-aware loss, ...) is a new small class here and nothing else.
Tensors are (N, C, H, W) float in the normalised [0, 1] space.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..choices import SR_FACTOR


class Operator:
    """Base class: identity forward model with a mean-squared-error data term."""

    name = "identity"
    #: Where the automatic stop puts the data term, relative to the noise variance. 1 is the
    #: discrepancy principle; an ill-posed forward model (a blur) needs a margin, since its best
    #: estimate cannot explain the observation down to the noise alone.
    stop_factor = 1.0
    #: Per channel (one value: every channel), the network's [0, 1] stands for [0, gain] of the
    #: observation's normalised range: room for a restored image brighter than anything observed
    #: (a deconvolution's peaks).
    gains: tuple[float, ...] = (1.0,)

    @property
    def has_headroom(self) -> bool:
        return any(g != 1.0 for g in self.gains)

    def scaled(self, x):
        """A (..., C, *spatial) estimate (torch or numpy) from the network's units to the
        observation's (times each channel's gain)."""
        return x

    def unscaled(self, x):
        """The inverse of :meth:`scaled`: the observation's units to the network's."""
        return x

    def select(self, channels: list[int]) -> Operator:
        """This operator for some of the channels it was made for (a per-channel fit)."""
        return self

    def output_size(self, observed_hw: tuple[int, int]) -> tuple[int, int]:
        """Spatial size of the image to restore, given the observation's size."""
        return observed_hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def data_term(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.discrepancy(self.forward(x), y)

    def discrepancy(self, ax: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """How far the forward model's output ``ax`` is from the observation: the mean squared
        error over what is observed."""
        return F.mse_loss(ax, y)

    def to(self, device: torch.device) -> Operator:
        return self

    def describe(self) -> dict:
        return {"name": self.name}


class Identity(Operator):
    """Denoising and JPEG-artefact removal: the observation is the image itself."""


class Mask(Operator):
    """Inpainting: only the known pixels are observed.

    ``known`` is 1 where the pixel is observed and 0 where it must be filled. The loss is the
    mean over *known* pixels, so its scale does not depend on how much is missing.
    """

    name = "mask"

    def __init__(self, known: np.ndarray | torch.Tensor):
        known = torch.as_tensor(np.asarray(known, dtype=np.float32))
        if known.ndim != 2:
            raise ValueError(f"the mask must be 2-D (Y, X), got shape {tuple(known.shape)}")
        self.known = known[None, None]
        self._n_known = float(self.known.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.known

    def data_term(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.discrepancy(x, y)

    def discrepancy(self, ax: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sq = (ax - y) ** 2 * self.known
        return sq.sum() / (self._n_known * ax.shape[0] * ax.shape[1])

    def to(self, device):
        self.known = self.known.to(device)
        return self

    def describe(self) -> dict:
        return {"name": self.name, "known_fraction": self._n_known / self.known[0, 0].numel()}


def lanczos_kernel(factor: int, support: int = 2) -> np.ndarray:
    """2-D Lanczos-``support`` anti-aliasing kernel for downsampling by ``factor``.

    Output pixel j averages input pixels j*factor .. j*factor + factor - 1, so its centre lies
    between two input pixels for an even factor and on one for an odd factor: the taps sit at
    input pixel centres, (i - centre) / factor output pixels away, for every one inside the
    support (``2 * support * factor`` taps for even factors, one fewer for odd ones).
    Normalised to sum to 1.
    """
    n = 2 * support * factor - (factor % 2)
    t = (np.arange(n) - (n - 1) / 2) / factor
    k1 = np.sinc(t) * np.sinc(t / support)
    k1 /= k1.sum()
    return np.outer(k1, k1).astype(np.float32)


class Downsample(Operator):
    """Super-resolution: the observation is the image blurred by a Lanczos-2 kernel and
    subsampled by ``factor`` (the reference code's downsampler; odd factors centred alike)."""

    name = "downsample"

    def __init__(self, factor: int):
        factor = SR_FACTOR.check(factor)
        self.factor = factor
        self.kernel = torch.from_numpy(lanczos_kernel(factor))[None, None]
        # Centres each kernel on its output pixel; (taps - factor) is even for every factor.
        self._pad = (self.kernel.shape[-1] - factor) // 2

    def output_size(self, observed_hw):
        return observed_hw[0] * self.factor, observed_hw[1] * self.factor

    def forward(self, x):
        c = x.shape[1]
        x = F.pad(x, (self._pad,) * 4, mode="replicate")
        return F.conv2d(x, self.kernel.expand(c, 1, -1, -1), stride=self.factor, groups=c)

    def to(self, device):
        self.kernel = self.kernel.to(device)
        return self

    def describe(self):
        return {"name": self.name, "factor": self.factor, "kernel": "lanczos2"}


#: Kernels with more taps than this are applied by FFT (direct convolution costs taps per pixel).
FFT_ABOVE_TAPS = 15 * 15


class Blur(Operator):
    """Deconvolution: the observation is the image convolved with a PSF (2-D or 3-D kernel, from
    :mod:`.psf`: normalised, centred, odd-sized).

    The image is padded by replicating its edges before a *valid* convolution, so the output has
    the observation's size and nothing wraps around from the opposite side (as a plain FFT
    convolution would). Large kernels (a measured 3-D PSF) are applied through an FFT of the
    padded image, which is the same linear convolution.

    ``gain`` multiplies the blurred image: the network's output in [0, 1] stands for an image up
    to ``gain`` times the observation's range. Deconvolution raises peaks (a point's image is the
    PSF, whose peak is a small fraction of its sum), so a restored image bounded by the
    observation's range cannot be sharper than a plateau (:func:`deconvolution_gain`).
    """

    name = "blur"
    # Morozov's safety factor: on a blurred real nuclei crop the best iterate's data term sat
    # at 1.12-1.14x the noise variance (both noise models), and the image degraded slowly after.
    stop_factor = 1.1

    def __init__(self, kernel: np.ndarray, describe: dict | None = None,
                 gain: float | Iterable[float] = 1.0):
        k = np.asarray(kernel, dtype=np.float32)
        if k.ndim not in (2, 3) or any(n % 2 == 0 for n in k.shape):
            raise ValueError(f"the PSF kernel must be 2-D or 3-D with odd sides, not {k.shape}")
        self.kernel = torch.from_numpy(np.ascontiguousarray(k))
        self._radius = tuple(n // 2 for n in k.shape)
        self._fft = k.size > FFT_ABOVE_TAPS
        self._kernel_ft = None
        self._info = describe or {}
        gains = tuple(float(g) for g in np.atleast_1d(np.asarray(gain, dtype=np.float64)))
        if not gains or not all(np.isfinite(g) and g > 0 for g in gains):
            raise ValueError(f"the blur's gain must be positive numbers, not {gain!r}")
        self.gains = gains  # one per channel, or one for all
        self.peak_ratio: tuple[float, ...] | None = None  # the headroom's peak test, if made

    def with_headroom(self, headroom: Headroom, channels: str) -> Blur:
        """This blur with ``headroom``'s gains for a fit of ``channels``: 'separate', each
        channel its own; 'joint' (one network), the largest for all (:meth:`Headroom.joint`).
        Its peak test goes into the record."""
        if channels == "joint":
            headroom = headroom.joint()
        blur = Blur(self.kernel.cpu().numpy(), self._info, gain=headroom.gain)
        blur.peak_ratio = headroom.peak_ratio
        return blur

    def select(self, channels: list[int]) -> Blur:
        if len(self.gains) == 1:
            return self
        blur = Blur(self.kernel.cpu().numpy(), self._info,
                    gain=[self.gains[c] for c in channels])
        blur.peak_ratio = None if self.peak_ratio is None else \
            tuple(self.peak_ratio[c] for c in channels)
        return blur.to(self.kernel.device)

    def _gain_like(self, x):
        """The gains shaped to multiply a (..., C, *spatial) array like ``x``."""
        shape = (len(self.gains),) + (1,) * self.ndim
        if torch.is_tensor(x):
            return torch.tensor(self.gains, dtype=x.dtype, device=x.device).reshape(shape)
        return np.asarray(self.gains, dtype=x.dtype).reshape(shape)

    def scaled(self, x):
        return x * self._gain_like(x) if self.has_headroom else x

    def unscaled(self, x):
        return x / self._gain_like(x) if self.has_headroom else x

    @property
    def ndim(self) -> int:
        return self.kernel.ndim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaled(self._convolve(x))

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        pad = []
        for r in reversed(self._radius):  # a (1, k, k) kernel pads Z by 0: Y and X only
            pad += [r, r]
        return F.pad(x, pad, mode="replicate")

    def _convolve(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim - 2 != self.ndim:
            raise ValueError(f"a {self.ndim}-D PSF cannot blur a {x.ndim - 2}-D image")
        c = x.shape[1]
        xp = self._pad(x)
        if not self._fft:
            # conv*d is a correlation: flip the kernel to convolve.
            k = torch.flip(self.kernel, dims=tuple(range(self.ndim)))
            k = k.expand(c, 1, *k.shape)
            conv = F.conv2d if self.ndim == 2 else F.conv3d
            return conv(xp, k, groups=c)
        dims = tuple(range(-self.ndim, 0))
        size = [xp.shape[d] for d in dims]  # the padded image; the kernel fits inside it
        if self._kernel_ft is None or self._kernel_ft[0] != size:
            self._kernel_ft = (size, torch.fft.rfftn(self.kernel, s=size, dim=dims))
        full = torch.fft.irfftn(torch.fft.rfftn(xp, s=size, dim=dims) * self._kernel_ft[1],
                                s=size, dim=dims)
        # Valid part: every output sample saw only padded-image samples (no wrap-around).
        valid = tuple(slice(2 * r, n) for r, n in zip(self._radius, size))
        return full[(Ellipsis, *valid)]

    def to(self, device):
        self.kernel = self.kernel.to(device)
        self._kernel_ft = None
        return self

    def describe(self):
        d = {"name": self.name, "psf": {**self._info, "shape": list(self.kernel.shape)},
             "stop_factor": self.stop_factor}
        if self.has_headroom:
            d["gain"] = list(self.gains)
        if self.peak_ratio is not None:
            d["peak_ratio"] = [round(r, 2) for r in self.peak_ratio]
        return d


#: The most headroom a 3-D deconvolution (:mod:`.volume`) gets above the observation's range, its
#: network started at the observation's mean. Point sources blurred by a Gaussian PSF (sigma
#: 1.5/2/2 voxels, 12x40x40, Poisson noise; input FWHM 2.9/4.2/4.2 voxels), 400 iterations of the
#: light 3-D net: 4.1/6.3/6.2 with no headroom (wider: the peak held below the range's top),
#: 1.9/2.9/2.9 with gain 16, 1.6/2.4/2.3 with 64, 1.7/2.7/2.5 with 256 (Richardson-Lucy 30:
#: 1.7/2.5/2.5). The real bead stack with its measured PSF, 600 iterations: 1.2/6.8/5.0 with 16
#: (the peak at the ceiling), 1.0/3.1/3.1 with 64. Extended objects lose nothing (ellipsoids, same
#: blur: 21.62 dB with no headroom, 21.56 with 64).
MAX_DECONVOLUTION_GAIN = 64.0


def deconvolution_gain(kernel: np.ndarray, limit: float = MAX_DECONVOLUTION_GAIN) -> float:
    """Headroom for deconvolving with ``kernel``: how far above the observation's range the
    restored image may go. A point's observed peak is ``kernel.max()`` (of a kernel summing to 1)
    times its restored one, so ``1 / kernel.max()`` is all a PSF can need; capped at ``limit``."""
    k = np.asarray(kernel, dtype=np.float64)
    return float(np.clip(k.sum() / k.max(), 1.0, limit))


#: Peaks this many times above the observation's after :data:`PEAK_TEST_ITERATIONS` of
#: Richardson-Lucy mark point-like objects, which need the full headroom.
PEAK_RATIO_FOR_HEADROOM = 2.0
PEAK_TEST_ITERATIONS = 20


def peak_ratios(observed: np.ndarray, kernel: np.ndarray,
                iterations: int = PEAK_TEST_ITERATIONS) -> list[float]:
    """Per channel of ``observed`` ((C, ...) in [0, 1], blurred by ``kernel``), how far
    ``iterations`` of Richardson-Lucy raise its brightest pixels (99.9th percentile) above
    their observed level."""
    blur = Blur(kernel)
    mirror = Blur(np.ascontiguousarray(np.flip(kernel)))  # the blur's adjoint
    y = torch.from_numpy(np.clip(observed, 1e-6, None).astype(np.float32))[None]
    x = y.clone()
    with torch.no_grad():
        for _ in range(iterations):
            x = x * mirror.forward(y / blur.forward(x).clamp_min(1e-6))
    # numpy's quantile: torch's refuses tensors of more than 2**24 values (a 4k x 4k plane)
    return [float(np.quantile(xc, 0.999) / np.quantile(yc, 0.999))
            for xc, yc in zip(x[0].numpy(), y[0].numpy())]


@dataclass(frozen=True)
class Headroom:
    """Per channel, how far a deconvolution may go above the observation's range (``gain``),
    and the peak test that decided it (``peak_ratio``). Decided once for all the pieces of one
    run (a stack's slices, a plane's tiles: :mod:`.shared`), so that they are restored alike.
    Channels fitted by one network share one gain (:meth:`joint`)."""

    gain: tuple[float, ...]
    peak_ratio: tuple[float, ...]

    @classmethod
    def test(cls, observed: Iterable[np.ndarray], kernel: np.ndarray) -> Headroom:
        """For each channel, the full headroom (:func:`deconvolution_gain`) where a short
        Richardson-Lucy run raises its peaks in any of ``observed`` ((C, ...) arrays in [0, 1])
        at least :data:`PEAK_RATIO_FOR_HEADROOM` times (points, beads), else none. Each channel
        decides for itself: room a channel does not need costs it quality (on four blurred
        real fluorescence images, benchmarks.microscopy deconv, a gain of 3 lost 0.36 dB on the
        mean and one of 25 lost 0.8 dB), and without any a real bead's in-focus plane came
        out wider than observed."""
        kernel = np.asarray(kernel, np.float32)  # as the blur holds it: one gain for both
        ratios = np.max([peak_ratios(o, kernel) for o in observed], axis=0)
        full = deconvolution_gain(kernel)
        return cls(tuple(full if r >= PEAK_RATIO_FOR_HEADROOM else 1.0 for r in ratios),
                   tuple(float(r) for r in ratios))

    def to_dict(self) -> dict:
        return {"gain": list(self.gain), "peak_ratio": list(self.peak_ratio)}

    @classmethod
    def from_dict(cls, d: dict) -> Headroom:
        return cls(tuple(d["gain"]), tuple(d["peak_ratio"]))

    def joint(self) -> Headroom:
        """The largest gain for every channel, for channels fitted by one network: a gain
        weighs its channel's errors in the shared data term. Measured beside a channel of beads
        (benchmarks.microscopy channels, 4 blurred real images): own gains in a joint fit cost
        the image's channel 0.13 dB on the mean (-0.94 to +0.48), where in separate fits they
        gained 0.81 dB (-0.05 to +1.85)."""
        return Headroom((max(self.gain),) * len(self.gain), self.peak_ratio)


class Stabilised(Operator):
    """Any forward model with its data term in variance-stabilised space (Poisson-Gaussian noise).

    The network still outputs intensities; the model's output and the observation are both put
    through the generalised Anscombe transform (:class:`~.vst.Anscombe`) before they are
    compared, so the observation given to the fit must already be transformed.
    """

    def __init__(self, inner: Operator, anscombe):
        self.inner, self.anscombe = inner, anscombe
        self.name, self.stop_factor, self.gains = inner.name, inner.stop_factor, inner.gains

    @property
    def known(self):
        return getattr(self.inner, "known", None)

    def scaled(self, x):
        return self.inner.scaled(x)

    def unscaled(self, x):
        return self.inner.unscaled(x)

    def select(self, channels):
        return Stabilised(self.inner.select(channels), self.anscombe.select(channels))

    def output_size(self, observed_hw):
        return self.inner.output_size(observed_hw)

    def forward(self, x):
        return self.anscombe.forward_torch(self.inner.forward(x))

    def data_term(self, x, y):
        return self.inner.discrepancy(self.forward(x), y)

    def to(self, device):
        self.inner = self.inner.to(device)
        return self

    def describe(self):
        return {**self.inner.describe(), "data_term": "mse after the generalised Anscombe transform"}


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> float:
    mse = float(F.mse_loss(x, y))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)
