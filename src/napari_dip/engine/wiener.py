"""A second stage after the fit: empirical Wiener filtering, with DIP's estimate as pilot.

:func:`second_stage` runs it with one of three filters: the local one below, the
collaborative one of :mod:`.collaborative`, which groups alike blocks first, or :func:`blend`,
the mean of several (:func:`choose`). The grouped ones take as pilot the mean of the fit's
estimate and of BM3D's first step (:func:`.thresholding.mixed_pilot`).

The fit's estimate is close to the clean image but smooth where the network's prior is weak
(fine texture, faint structures) and it still carries some noise. As in the second stage of BM3D,
the estimate is used as a *pilot*: in local transform blocks (an orthonormal 2-D DCT on
overlapping 16x16 windows of the observation), each coefficient of the noisy observation is kept
in the proportion ``p**2 / (p**2 + noise variance)`` of the pilot's coefficient ``p``, the
Wiener gain if the pilot were the truth. Coefficients that the pilot says carry signal are taken
from the observation itself, so detail the network smoothed away comes back where it is above
the noise; coefficients it says are noise are suppressed. Overlapping blocks are blended with a
sine-squared window (a blunter one left a grid of block edges) and weighted, as in BM3D, by the
inverse of the noise each block keeps.

Denoising only (the observation must be the image itself, up to noise): the data space is the
fit's, so under the Poisson-Gaussian model the filter runs on the stabilised observation, whose
noise is about uniform. Three channels fitted together (colour) are filtered in an orthonormal
opponent-colour basis, where their noise is about independent, as in CBM3D.

Measured on real fluorescence pairs and on natural colour images (benchmarks/RESULTS.md): it
adds about 0.4-0.7 dB to the fit's estimate for well under a second per megapixel.

Pure torch; runs on the device the tensors are on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: Block side and stride (pixels): chosen on the tuning pairs of benchmarks/microscopy.py and the
#: natural images of the peers suite (RESULTS.md, 2026-11-30).
BLOCK = 16
STEP = 2
#: Blocks filtered at once (bounds the memory: about 50 bytes per pixel of a block).
_CHUNK_BLOCKS = 8192

# Opponent-colour basis (rows orthonormal): luminance and two colour differences.
OPPONENT = torch.tensor([[1 / math.sqrt(3)] * 3,
                          [1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)],
                          [1 / math.sqrt(6), -2 / math.sqrt(6), 1 / math.sqrt(6)]])


def dct_matrix(n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The orthonormal DCT-II matrix: ``D @ v`` transforms a length-``n`` vector."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.to(dtype=dtype, device=device)


def _window(n: int, dtype, device) -> torch.Tensor:
    w = torch.sin(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n) ** 2
    return torch.outer(w, w).to(dtype=dtype, device=device)


def _pad_for(size: int, block: int, step: int) -> tuple[int, int]:
    """Padding before and after one axis so that every pixel is covered by as many blocks as an
    interior one and the last block ends at the padded edge."""
    before = block - step
    span = size + 2 * before - block
    after = before + (-span) % step
    return before, after


def _filter_plane(y: torch.Tensor, p: torch.Tensor, variance, block: int, step: int):
    """One (Y, X) plane, filtered with one noise variance, or a (Y, X) map of them (each block
    then takes the mean of its pixels' variances)."""
    h, w = y.shape
    (t, b), (le, r) = _pad_for(h, block, step), _pad_for(w, block, step)
    # Reflection needs a pad shorter than the side; replicate covers tiny planes.
    mode = "reflect" if max(t, b) < h and max(le, r) < w else "replicate"
    pad = lambda a: F.pad(a[None, None], (le, r, t, b), mode=mode)[0, 0]  # noqa: E731
    yp, pp = pad(y), pad(p)
    mapped = torch.is_tensor(variance)
    vp = pad(variance) if mapped else None
    hp, wp = yp.shape
    d = dct_matrix(block, y.dtype, y.device)
    win = _window(block, y.dtype, y.device)
    rows = (hp - block) // step + 1
    cols = (wp - block) // step + 1
    out = torch.zeros_like(yp)
    weight = torch.zeros_like(yp)
    rows_per_chunk = max(1, _CHUNK_BLOCKS // cols)
    for r0 in range(0, rows, rows_per_chunk):
        n = min(rows_per_chunk, rows - r0)
        y0, y1 = r0 * step, r0 * step + (n - 1) * step + block
        band = lambda a: F.unfold(a[None, None, y0:y1], block, stride=step)[0]  # noqa: E731
        cy = band(yp).T.reshape(-1, block, block)
        cp = band(pp).T.reshape(-1, block, block)
        var = band(vp).mean(0)[:, None, None] if mapped else variance
        cy, cp = d @ cy @ d.T, d @ cp @ d.T
        power = cp * cp
        gain = power / (power + var)
        est = d.T @ (gain * cy) @ d
        # the noise a block keeps is variance * sum(gain**2): trust blocks that keep less
        trust = 1.0 / (gain * gain).sum((1, 2)).clamp(min=1e-3)
        if mapped:
            trust = trust / var.reshape(-1)
        cols_ = (est * win * trust[:, None, None]).reshape(-1, block * block).T[None]
        out[y0:y1] += F.fold(cols_, (y1 - y0, wp), block, stride=step)[0, 0]
        weight[y0:y1] += F.fold((win.reshape(-1, 1) * trust[None])[None],
                                (y1 - y0, wp), block, stride=step)[0, 0]
    return (out / weight)[t:t + h, le:le + w]


def empirical_wiener(data: torch.Tensor, pilot: torch.Tensor, variance, *,
                     colour: bool = False, block: int = BLOCK, step: int = STEP) -> torch.Tensor:
    """Filter a noisy (C, Y, X) ``data`` with the Wiener gains of ``pilot`` (same shape, same
    space): see the module's docstring. ``variance``: the noise variance of each channel of
    ``data``, or a (C, Y, X) tensor of each pixel's (noise that varies with the signal).
    ``colour``: three channels filtered in the opponent-colour basis.
    """
    block = min(block, *data.shape[1:])
    step = max(1, min(step, block // 2))
    y, p, var = filter_space(data, pilot, variance, colour)
    out = torch.stack([_filter_plane(y[c], p[c], var[c], block, step) for c in range(len(y))])
    return image_space(out, colour).to(data.dtype)


def filter_space(data: torch.Tensor, pilot: torch.Tensor, variance: Sequence[float] | torch.Tensor,
                 colour: bool) -> tuple[torch.Tensor, torch.Tensor, list[float] | torch.Tensor]:
    """Check a filter's (C, Y, X) ``data``, ``pilot`` and per-channel ``variance`` (or (C, Y, X)
    map of variances); return them as float32, in the opponent-colour basis where ``colour``, with
    each channel's variance there."""
    if data.shape != pilot.shape or data.ndim != 3:
        raise ValueError(f"data and pilot must be (C, Y, X) of one shape, not {tuple(data.shape)} "
                         f"and {tuple(pilot.shape)}")
    mapped = torch.is_tensor(variance) and variance.ndim == 3
    if mapped and variance.shape != data.shape:
        raise ValueError(f"a map of noise variances must have the data's shape "
                         f"{tuple(data.shape)}, not {tuple(variance.shape)}")
    if len(variance) != data.shape[0]:
        raise ValueError(f"one noise variance per channel: {len(variance)} for {data.shape[0]}")
    y, p = data.float(), pilot.float()
    var = variance.float() if mapped else torch.as_tensor(list(variance), dtype=torch.float64)
    if colour:
        if len(y) != 3:
            raise ValueError("colour filtering needs three channels")
        basis = OPPONENT.to(y.device)
        y, p = torch.einsum("ij,jyx->iyx", basis, y), torch.einsum("ij,jyx->iyx", basis, p)
        # each opponent channel's noise variance (the channels' noise is independent)
        var = (torch.einsum("ij,jyx->iyx", basis ** 2, var) if mapped
               else OPPONENT.double() ** 2 @ var)
    if mapped:
        return y, p, var.clamp(min=1e-12)
    return y, p, [max(float(v), 1e-12) for v in var]


def image_space(filtered: torch.Tensor, colour: bool) -> torch.Tensor:
    """:func:`filter_space`'s channels back to the image's."""
    if not colour:
        return filtered
    return torch.einsum("ji,jyx->iyx", OPPONENT.to(filtered.device), filtered)


def filters(operator) -> bool:
    """Whether the second stage applies to fits with this forward model: the observation must be
    the image itself up to noise (denoising, stabilised or not)."""
    from .operators import Identity, Stabilised

    inner = operator.inner if isinstance(operator, Stabilised) else operator
    return isinstance(inner, Identity)


def check(refine: str, operator, task: str | None = None) -> None:
    """Refuse a second stage that ``operator``'s forward model cannot have (call it before
    fitting: the stage runs after the fit)."""
    if refine != "none" and not filters(operator):
        what = f"task {task!r}" if task else f"forward model {operator.name!r}"
        raise ValueError(f"the {refine!r} second stage filters a noisy image; {what} has "
                         "another forward model: use refine 'none'")


def choose(refine: str, operator, plane_shape) -> str:
    """The filter that ``refine`` means for this fit: 'auto' groups alike blocks
    (.collaborative) under Gaussian noise and blends three filters under the Poisson-Gaussian
    model (:func:`blend`), where the grouping alone lost on very noisy pairs (RESULTS.md,
    2026-11-30 and 2026-12-01); both with the fit's and the thresholding's mean as pilot.
    Planes too small to group blocks in are filtered block by block, the fit's estimate as
    pilot."""
    from .collaborative import fits
    from .operators import Stabilised

    if refine == "auto":
        refine = "blend" if isinstance(operator, Stabilised) else "collaborative"
    if refine in ("collaborative", "blend") and not fits(plane_shape):
        refine = "wiener"
    return refine


def blend(data: torch.Tensor, pilot: torch.Tensor, variance: Sequence[float], *,
          colour: bool = False, anscombe=None) -> torch.Tensor:
    """The mean of several Wiener filters of a (C, Y, X) ``data`` whose pilot is the mean of the
    fit's ``pilot`` and of :func:`.thresholding.hard_threshold`'s estimate. Returns intensities.

    The filters: the local one and the collaborative one in the data's space and, where
    ``anscombe`` says the data are variance-stabilised, the local one again on the intensities
    themselves, each block with the noise variance the model gives its pilot's intensities.
    The fit and the thresholding err in different places (smooth texture, blocky edges), and so
    do the filters (the stabilised space's inverse bends dim values; the intensity domain
    trusts the model's gain). On real fluorescence pairs this mean was the most robust of the
    variants tried: ahead of the local filter with the fit's pilot by 0.1-0.2 dB, and with the
    highest lowest pair (benchmarks/RESULTS.md, 2026-12-01)."""
    from .collaborative import collaborative_wiener
    from .thresholding import mixed_pilot

    mixed = mixed_pilot(data, pilot, variance, colour=colour)
    parts = [empirical_wiener(data, mixed, variance, colour=colour),
             collaborative_wiener(data, mixed, variance, colour=colour)]
    if anscombe is None:
        return sum(parts) / len(parts)
    back = lambda s: anscombe.inverse_torch(s[None])[0]  # noqa: E731
    parts = [back(part) for part in parts]
    intensity = back(mixed.float())
    parts.append(empirical_wiener(back(data.float()), intensity,
                                  anscombe.variance_torch(intensity[None])[0], colour=colour))
    return sum(parts) / len(parts)


def second_stage(estimate: torch.Tensor, data: torch.Tensor, operator,
                 refine: str = "auto") -> tuple[torch.Tensor, dict]:
    """A fit's (C, *spatial) ``estimate`` (network units, [0, 1]) refined against ``data``, the
    observation the fit compared with (stabilised under the Poisson-Gaussian model), by the filter
    ``refine`` names (see :func:`choose`); a volume's planes are filtered one by one. Returns the
    refined estimate and its record."""
    from . import collaborative, thresholding
    from .noise import estimate_noise
    from .operators import Stabilised

    check(refine, operator)
    method = choose(refine, operator, estimate.shape[-2:])
    anscombe = operator.anscombe if isinstance(operator, Stabilised) else None
    if method == "blend":
        filter_ = lambda y, p, v, colour: blend(y, p, v, colour=colour, anscombe=anscombe)  # noqa: E731
    elif method == "collaborative":
        def filter_(y, p, v, colour):
            return collaborative.collaborative_wiener(
                y, thresholding.mixed_pilot(y, p, v, colour=colour), v, colour=colour)
    else:
        filter_ = empirical_wiener
    t0 = time.perf_counter()
    with torch.no_grad():
        pilot = operator.forward(estimate[None])[0]
        colour = len(estimate) == 3
        volume = estimate.ndim == 4
        planes = list(zip(data.unbind(1), pilot.unbind(1))) if volume else [(data, pilot)]
        out, variances = [], []
        for y, p in planes:
            variance = estimate_noise(y.float().cpu().numpy()).variance
            variances.append([float(v) for v in variance])
            out.append(filter_(y, p, variance, colour=colour))
        refined = torch.stack(out, 1) if volume else out[0]
        if anscombe is not None and method != "blend":  # blend returns intensities
            refined = anscombe.inverse_torch(refined[None])[0]
        refined = refined.clamp(0, 1).to(estimate.dtype)
    grouped = {"block": collaborative.BLOCK, "step": collaborative.STEP,
               "radius": collaborative.RADIUS, "group": collaborative.GROUP}
    mixed = {"pilot": "the fit's and hard thresholding's mean",
             "thresholding": {"block": thresholding.BLOCK, "step": thresholding.STEP,
                              "radius": thresholding.RADIUS, "group": thresholding.GROUP,
                              "lambda": thresholding.LAMBDA}}
    if method == "collaborative":
        shape = {**grouped, **mixed}
    elif method == "blend":
        shape = {**mixed,
                 "filters": ["local", "collaborative"] + (["local, on intensities"]
                                                          if anscombe is not None else []),
                 "local": {"block": BLOCK, "step": STEP}, "collaborative": grouped}
    else:
        shape = {"block": BLOCK, "step": STEP}
    record = {"method": method, "asked": refine, **shape, "colour": colour,
              "noise_variance": variances[0] if not volume else
              [float(sum(v[c] for v in variances) / len(variances)) for c in range(len(data))],
              "seconds": round(time.perf_counter() - t0, 3)}
    return refined, record
