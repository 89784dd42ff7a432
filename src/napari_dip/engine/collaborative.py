"""Collaborative Wiener filtering: the second step of BM3D, with DIP's estimate in the pilot.

Where the local filter of :mod:`.wiener` shrinks each block of the observation on its own, this one
first groups blocks that look alike *in the pilot* (block matching within a search window), then
filters each group as one 3-D array: a 2-D DCT of every block and a DCT across the group. A
texture that repeats (fur, foliage, a regular pattern) then shows up as a few strong coefficients
of the group, which the noise does not share, so it is kept where the local filter blurs it.
Each group's coefficients keep the proportion ``p**2 / (p**2 + noise variance)`` of the pilot's
coefficient ``p``; the filtered blocks go back to their places, weighted by the inverse of the
noise their group keeps and by a Kaiser window (Dabov et al., IEEE TIP 2007).

The grouping trusts the pilot's similarities: a pilot that is smooth where the truth is not (a
short fit of a very noisy image) makes blocks alike that are not, and the group's average then
loses their differences. Measured on natural colour images and real fluorescence pairs
(benchmarks/RESULTS.md, 2026-11-30), it was ahead of the local filter under Gaussian noise and
behind it on very noisy Poisson-Gaussian data, so :func:`.wiener.second_stage` chooses by the
noise model. It also gives the filter a pilot that is not the fit's alone: the mean of the fit's
estimate and BM3D's first step (:func:`.thresholding.mixed_pilot`), whose grouping follows the
noisy image; on natural images under Gaussian noise that pilot gained 0.2-0.4 dB on the mean
(RESULTS.md, 2026-12-01).

Pure torch; the reference blocks are taken in bands of rows so that memory stays bounded.
"""

from __future__ import annotations

import torch

from .wiener import dct_matrix, filter_space, image_space

#: Block side, step between reference blocks, search radius and group size (BM3D's Wiener step
#: uses 8, 3, 19 and 32; a radius of 12 and groups of 16 cost a third as much for 0.0-0.1 dB).
BLOCK = 8
STEP = 3
RADIUS = 12
GROUP = 16
#: Elements of the matching's working arrays per band of reference rows (about 4 bytes each).
_BAND_ELEMENTS = 8_000_000
_OFFSETS_AT_ONCE = 64


def fits(shape, block: int = BLOCK) -> bool:
    """Whether a plane of this (Y, X) shape is large enough to group ``block``-px blocks in."""
    return min(shape) >= 2 * block


def corners(n: int, block: int, step: int) -> torch.Tensor:
    """Reference blocks' first rows (or columns): every ``step``, and the last one flush."""
    first = list(range(0, n - block + 1, step))
    if first[-1] != n - block:
        first.append(n - block)
    return torch.tensor(first)


def match_blocks(pilot: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, *, block: int,
                 radius: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``group`` blocks of the (Y, X) ``pilot`` nearest (squared distance) to each reference
    block at (``rows`` x ``cols``), searched within ``radius`` pixels. Returns their first rows and
    columns, (references, group), the reference block itself first."""
    h, w = pilot.shape
    dev = pilot.device
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    padded = torch.nn.functional.pad(pilot[None, None], (radius,) * 4, mode="replicate")[0, 0]
    rows_d, cols_d = rows.to(dev), cols.to(dev)
    parts = []
    for start in range(0, len(offsets), _OFFSETS_AT_ONCE):
        chunk = offsets[start:start + _OFFSETS_AT_ONCE]
        shifted = torch.stack([padded[radius + dy:radius + dy + h, radius + dx:radius + dx + w]
                               for dy, dx in chunk])
        # block sums of the squared difference by running sums, read at the references only
        run = torch.nn.functional.pad((shifted - pilot) ** 2, (0, 0, 1, 0)).cumsum(1)
        run = torch.nn.functional.pad(run[:, rows_d + block] - run[:, rows_d], (1, 0)).cumsum(2)
        parts.append(run[:, :, cols_d + block] - run[:, :, cols_d])
    dist = torch.cat(parts)  # (offsets, rows, cols)
    dy = torch.tensor([o[0] for o in offsets], device=dev)
    dx = torch.tensor([o[1] for o in offsets], device=dev)
    top = rows_d[None, :, None] + dy[:, None, None]
    left = cols_d[None, None, :] + dx[:, None, None]
    inside = (top >= 0) & (top <= h - block) & (left >= 0) & (left <= w - block)
    dist = torch.where(inside, dist, torch.full_like(dist, float("inf")))
    dist[offsets.index((0, 0))] = -1.0  # the reference leads its group
    n = len(offsets)
    size = min(group, int(inside.reshape(n, -1).sum(0).min()))
    _, nearest = dist.reshape(n, -1).T.topk(size, dim=1, largest=False)
    top = top.expand_as(dist).reshape(n, -1).T.gather(1, nearest)
    left = left.expand_as(dist).reshape(n, -1).T.gather(1, nearest)
    return top, left


def pixel_indices(top: torch.Tensor, left: torch.Tensor, width: int, block: int) -> torch.Tensor:
    """Flat indices into a (Y*X,) plane of ``width`` columns of the blocks whose first rows and
    columns are ``top`` and ``left`` (any shape S): (*S, block*block), each block row-major."""
    u = torch.arange(block, device=top.device)
    return (top * width + left)[..., None] + (u[:, None] * width + u[None, :]).reshape(-1)


def groups(guide: torch.Tensor, *, block: int, step: int, radius: int, group: int):
    """The groups of alike blocks of a (Y, X) ``guide``, a band of reference rows at a time:
    yields the (references, group) first rows and columns of each band's groups (see
    :func:`match_blocks`); every ``step`` pixels, and flush with the far edges."""
    h, w = guide.shape
    rows, cols = corners(h, block, step), corners(w, block, step)
    band_height = max(1, (_BAND_ELEMENTS // (_OFFSETS_AT_ONCE * w) - 2 * radius - block) // step)
    for start in range(0, len(rows), band_height):
        band = rows[start:start + band_height]
        r0 = max(0, int(band[0]) - radius)
        r1 = min(h, int(band[-1]) + block + radius)
        top, left = match_blocks(guide[r0:r1], band - r0, cols, block=block, radius=radius,
                                 group=group)
        yield top + r0, left


def group_transforms(block: int, size: int, dtype, device):
    """What a group of ``size`` flattened ``block``-px blocks is filtered with: the 2-D DCT of a
    row-major block, the DCT across the group, and the Kaiser window the blocks are put back
    with (flattened)."""
    d = dct_matrix(block, dtype, device)
    win = torch.kaiser_window(block, periodic=False, beta=2.0, dtype=dtype, device=device)
    return torch.kron(d, d), dct_matrix(size, dtype, device), torch.outer(win, win).reshape(-1)


def _filter_groups(planes, pilots, variances, top, left, width, block, num, den):
    """Filter the groups at (``top``, ``left``) of each plane (flattened (Y*X,)) and add them,
    weighted, into that plane's ``num`` and ``den``."""
    spatial, across, win = group_transforms(block, top.shape[1], planes[0].dtype,
                                            planes[0].device)
    pixels = pixel_indices(top, left, width, block)
    for c, (y, p, var) in enumerate(zip(planes, pilots, variances)):
        cy = across @ y[pixels] @ spatial.T
        cp = across @ p[pixels] @ spatial.T
        power = cp * cp
        gain = power / (power + var)
        est = across.T @ (gain * cy) @ spatial
        trust = 1.0 / (var * (gain * gain).sum((1, 2))).clamp(min=1e-12)
        weight = (win * trust[:, None, None]).expand_as(est)
        num[c].index_add_(0, pixels.reshape(-1), (est * weight).reshape(-1))
        den[c].index_add_(0, pixels.reshape(-1), weight.reshape(-1))


def collaborative_wiener(data: torch.Tensor, pilot: torch.Tensor, variance, *,
                         colour: bool = False, block: int = BLOCK, step: int = STEP,
                         radius: int = RADIUS, group: int = GROUP) -> torch.Tensor:
    """Filter a noisy (C, Y, X) ``data`` by groups of alike blocks of ``pilot`` (same shape, same
    space): see the module's docstring. ``variance``: each channel's noise variance. ``colour``:
    three channels filtered in the opponent-colour basis, grouped by their luminance."""
    y, p, variances = filter_space(data, pilot, variance, colour)
    if not fits(data.shape[1:], block):
        raise ValueError(f"a {tuple(data.shape[1:])} plane is too small to group {block}-px "
                         f"blocks: the sides must be at least {2 * block}")
    h, w = y.shape[1:]
    # one grouping for colour (by luminance); otherwise each channel by its own pilot
    sets = [list(range(len(y)))] if colour else [[c] for c in range(len(y))]
    out = torch.empty_like(y)
    for channels in sets:
        guide = p[channels[0]]
        planes = [y[c].reshape(-1) for c in channels]
        pilots = [p[c].reshape(-1) for c in channels]
        num = torch.zeros(len(channels), h * w, dtype=y.dtype, device=y.device)
        den = torch.zeros_like(num)
        for top, left in groups(guide, block=block, step=step, radius=radius, group=group):
            _filter_groups(planes, pilots, [variances[c] for c in channels], top, left, w,
                           block, num, den)
        out[channels] = (num / den).reshape(len(channels), h, w)
    return image_space(out, colour).to(data.dtype)
