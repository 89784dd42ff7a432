"""Collaborative hard thresholding: the first step of BM3D, an estimate that owes nothing to the fit.

Blocks of the noisy image are grouped with the blocks that look most alike *in the noisy image
itself* (block matching within a search window); each group is transformed as one 3-D array (a
2-D DCT of every block and a DCT across the group), its coefficients below ``LAMBDA`` noise
standard deviations are set to zero, and the blocks go back to their places, weighted by a
Kaiser window and by the inverse of the number of coefficients their group kept (Dabov et al.,
IEEE TIP 2007).

On its own this is a weaker estimate than the fit's, but its errors are others: the fit is
smooth where the network's prior is weak, the thresholding is blocky where the noise hid the
grouping. :func:`mixed_pilot` averages the two into the pilot of the second stage's grouped
filters (:func:`.wiener.second_stage`: the blend and the collaborative filter), which measured
ahead of either pilot alone on real fluorescence pairs and on natural images under Gaussian
noise (benchmarks/RESULTS.md, 2026-12-01).

Pure torch; reference blocks are taken in bands of rows so that memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .collaborative import fits, group_transforms, groups, pixel_indices
from .wiener import filter_space, image_space

#: Block side, step between reference blocks, search radius and group size (BM3D's first step
#: uses 8, 3, 16 and 16).
BLOCK = 8
STEP = 3
RADIUS = 12
GROUP = 16
#: Coefficients kept: those above this many noise standard deviations (BM3D's 2.7).
LAMBDA = 2.7


def _threshold_groups(plane, sigma, top, left, width, block, num, den):
    """Threshold the groups at (``top``, ``left``) of a flattened (Y*X,) ``plane`` and add them,
    weighted, into ``num`` and ``den``."""
    spatial, across, win = group_transforms(block, top.shape[1], plane.dtype, plane.device)
    pixels = pixel_indices(top, left, width, block)
    coef = across @ plane[pixels] @ spatial.T
    keep = coef.abs() > LAMBDA * sigma
    keep[:, 0, 0] = True  # the group's mean is never noise alone
    est = across.T @ (coef * keep) @ spatial
    weight = (win / (sigma * sigma * keep.sum((1, 2)).to(plane.dtype))[:, None, None]).expand_as(est)
    num.index_add_(0, pixels.reshape(-1), (est * weight).reshape(-1))
    den.index_add_(0, pixels.reshape(-1), weight.reshape(-1))


def hard_threshold(data: torch.Tensor, variance: Sequence[float], *, colour: bool = False,
                   block: int = BLOCK, step: int = STEP, radius: int = RADIUS,
                   group: int = GROUP) -> torch.Tensor:
    """Denoise a (C, Y, X) ``data`` with white noise of per-channel ``variance`` by collaborative
    hard thresholding (see the module's docstring). ``colour``: three channels thresholded in the
    opponent-colour basis, each channel grouped by its own blocks."""
    y, _, variances = filter_space(data, data, variance, colour)
    if not fits(data.shape[1:], block):
        raise ValueError(f"a {tuple(data.shape[1:])} plane is too small to group {block}-px "
                         f"blocks: the sides must be at least {2 * block}")
    h, w = y.shape[1:]
    out = torch.empty_like(y)
    for c in range(len(y)):
        sigma = variances[c] ** 0.5
        num = torch.zeros(h * w, dtype=y.dtype, device=y.device)
        den = torch.zeros_like(num)
        flat = y[c].reshape(-1)
        for top, left in groups(y[c], block=block, step=step, radius=radius, group=group):
            _threshold_groups(flat, sigma, top, left, w, block, num, den)
        out[c] = (num / den).reshape(h, w)
    return image_space(out, colour).to(data.dtype)


def mixed_pilot(data: torch.Tensor, pilot: torch.Tensor, variance: Sequence[float], *,
                colour: bool = False) -> torch.Tensor:
    """The mean of a fit's ``pilot`` and of :func:`hard_threshold`'s estimate of ``data`` (both
    (C, Y, X), in the data's space): a pilot for the Wiener filters that owes half to the fit."""
    return (pilot + hard_threshold(data, variance, colour=colour).to(pilot.dtype)) / 2
