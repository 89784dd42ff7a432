"""Forward models A: what the measurement is, given the restored image.

The fit loop only calls ``output_size``, ``data_term`` and ``to(device)``, so a new task
(deconvolution, a noise-model-aware loss, ...) is a new small class here and nothing else.
Tensors are (N, C, H, W) float in the normalised [0, 1] space.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..choices import SR_FACTOR


class Operator:
    """Base class: identity forward model with a mean-squared-error data term."""

    name = "identity"

    def output_size(self, observed_hw: tuple[int, int]) -> tuple[int, int]:
        """Spatial size of the image to restore, given the observation's size."""
        return observed_hw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def data_term(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.forward(x), y)

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
        sq = (x - y) ** 2 * self.known
        return sq.sum() / (self._n_known * x.shape[0] * x.shape[1])

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


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> float:
    mse = float(F.mse_loss(x, y))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)
