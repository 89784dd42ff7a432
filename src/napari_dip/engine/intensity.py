"""Intensity mapping: the data's units to the network's [0, 1] and back, without losing signal.

The range covers the data itself (min and max), widened so that it sits inside the sigmoid's
comfortable interior. The only pixels left out of the range are isolated outliers, i.e. hot or
dead pixels: a pixel far above (below) *all* of its 8 neighbours. A 1-px filament or a 2x2 punctum
always has a neighbour as bright as itself, so it is never mistaken for one. Pixels to be filled
(an inpainting mask) take no part either. What ends up outside the range is counted and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Fraction of the data's span added on each side, so the data maps into [0.045, 0.955].
MARGIN = 0.05
#: An outlier must stand this many noise standard deviations beyond its most extreme neighbour.
OUTLIER_SIGMAS = 8.0


def _neighbour_extremes(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max and min over the 8 neighbours of each pixel (edges replicated)."""
    from scipy import ndimage

    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    return (ndimage.maximum_filter(plane, footprint=ring, mode="nearest"),
            ndimage.minimum_filter(plane, footprint=ring, mode="nearest"))


def noise_sigma_from_differences(plane: np.ndarray) -> float:
    """Robust noise level from horizontal pixel differences (MAD); 0 for a flat image."""
    d = np.diff(plane.astype(np.float64), axis=-1).ravel()
    if d.size == 0:
        return 0.0
    return float(np.median(np.abs(d - np.median(d))) / 0.6745 / np.sqrt(2))


def outlier_mask(plane: np.ndarray) -> np.ndarray:
    """Isolated hot and dead pixels of one 2-D plane (True = outlier).

    Hot: more than ``OUTLIER_SIGMAS`` noise sigmas above its brightest neighbour *and* more than
    twice as far above the plane's floor as that neighbour (so the shot noise of a bright object
    is not taken for a hot pixel). Dead: that far below its darkest neighbour and below the
    plane's floor (a dark pixel inside a bright object is noise, not a dead pixel).
    """
    x = plane.astype(np.float64)
    if min(x.shape) < 3:
        return np.zeros(x.shape, bool)
    sigma = noise_sigma_from_differences(x)
    hi8, lo8 = _neighbour_extremes(x)
    floor = np.percentile(x, 1)
    gap = max(OUTLIER_SIGMAS * sigma, 1e-12)
    hot = (x - hi8 > gap) & (x - hi8 > hi8 - floor)
    dead = (lo8 - x > gap) & (x < floor - gap / 2)
    return hot | dead


#: An integer image whose data span fewer levels than this (per channel) is restored into float32
#: by the 'auto' result type: rounding the result back to so few levels would lose much of what
#: was restored. Measured on real fluorescence crops with Poisson noise (benchmarks/RESULTS.md,
#: 2026-11-30): rounding cost 1.3-1.9 dB at 13-18 levels, 0.3-0.6 dB at 42-48, 0.05-0.08 dB at
#: 116 and 0.01 at 276 (about 0.2 dB here, by the 1/levels² it falls with).
FEW_LEVELS = 64


@dataclass(frozen=True)
class IntegerRange:
    """The integer levels an integer image's data span, per channel (isolated outliers left out,
    as :class:`IntensityMap` leaves them out): what says whether a result rounded back to the
    input's type would keep what was restored."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def of(cls, cyx: np.ndarray, known: np.ndarray | None = None) -> IntegerRange | None:
        """The range of a (C, Y, X) array; None for a float one (nothing is rounded)."""
        if not np.issubdtype(cyx.dtype, np.integer):
            return None
        lows, highs = _channel_ranges(cyx, known)
        return cls(tuple(lows), tuple(highs))

    @classmethod
    def combine(cls, ranges) -> IntegerRange | None:
        """The range of every plane given (a stack's slices); None if any is None."""
        ranges = list(ranges)
        if not ranges or any(r is None for r in ranges):
            return None
        return cls(tuple(np.min([r.low for r in ranges], axis=0).tolist()),
                   tuple(np.max([r.high for r in ranges], axis=0).tolist()))

    @property
    def levels(self) -> int:
        """The fewest integer levels a channel spans, among those that vary (a constant
        channel, e.g. the empty red of a green image stored as RGB, has nothing to lose)."""
        spans = [h - lo for lo, h in zip(self.low, self.high) if h > lo]
        return int(min(spans)) if spans else 0

    @property
    def few(self) -> bool:
        """Fewer levels than :data:`FEW_LEVELS` (:func:`few_levels`)."""
        return few_levels(self.levels)


def few_levels(levels: int | None) -> bool:
    """Whether an input spanning ``levels`` integer levels (None: a float input) has fewer
    than :data:`FEW_LEVELS`: round a result back to them and it loses much."""
    return levels is not None and levels < FEW_LEVELS


def _channel_ranges(cyx: np.ndarray, known: np.ndarray | None = None):
    """Min and max of each channel over its known pixels (``known``: (Y, X), non-zero =
    observed), leaving out isolated outliers (:func:`outlier_mask`)."""
    keep_known = None if known is None else np.asarray(known) != 0
    lows, highs = [], []
    for ch in cyx:
        keep = ~outlier_mask(ch)
        if keep_known is not None:
            keep &= keep_known
        values = ch[keep] if keep.any() else ch.ravel()
        lows.append(float(values.min()))
        highs.append(float(values.max()))
    return lows, highs


@dataclass(frozen=True)
class IntensityMap:
    """Per-channel affine map from the data's intensities to [0, 1] and back.

    ``data_low``/``data_high`` are the range the data covers; ``low``/``high`` (what maps to 0
    and 1) add ``MARGIN`` on each side, except for 8-bit data, which maps 0..255 to 0..1.
    """

    data_low: tuple[float, ...]
    data_high: tuple[float, ...]
    dtype: str
    outliers: int = 0  # known values outside the range (hot or dead pixels), clipped

    @classmethod
    def fit(cls, cyx: np.ndarray, joint: bool = False, known: np.ndarray | None = None,
            ) -> IntensityMap:
        """The map for a (C, Y, X) array.

        uint8 maps 0..255 to 0..1 (the paper's convention). Other dtypes: the min and max of
        each channel over its known pixels (``known``: (Y, X), non-zero = observed), leaving out
        isolated outliers. ``joint`` uses one range for all channels (RGB).
        """
        n = cyx.shape[0]
        if cyx.dtype == np.uint8:
            return cls((0.0,) * n, (255.0,) * n, "uint8")
        lows, highs = _channel_ranges(cyx, known)
        if joint:
            lows, highs = [min(lows)] * n, [max(highs)] * n
        fitted = cls(tuple(lows), tuple(highs), str(cyx.dtype))
        return cls(fitted.data_low, fitted.data_high, fitted.dtype,
                   fitted.count_clipped(cyx, known))

    @classmethod
    def combine(cls, maps: list[IntensityMap]) -> IntensityMap:
        """One map covering every map given (a stack's slices share one intensity scale)."""
        lows = np.min([m.data_low for m in maps], axis=0)
        highs = np.max([m.data_high for m in maps], axis=0)
        return cls(tuple(lows.tolist()), tuple(highs.tolist()), maps[0].dtype,
                   sum(m.outliers for m in maps))

    @property
    def low(self) -> tuple[float, ...]:
        return tuple(self._ends()[0].tolist())

    @property
    def high(self) -> tuple[float, ...]:
        return tuple(self._ends()[1].tolist())

    def _ends(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.asarray(self.data_low, float), np.asarray(self.data_high, float)
        if self.dtype == "uint8":
            return lo, hi
        flat = hi <= lo  # a constant channel: any non-empty range maps it to mid-grey
        half = np.where(flat, np.maximum(np.abs(lo), 1.0) * 0.5, 0.0)
        lo, hi = lo - half, hi + half
        margin = MARGIN * (hi - lo)
        return lo - margin, hi + margin

    def _ab(self, ndim: int):
        shape = (-1,) + (1,) * (ndim - 1)
        lo, hi = self._ends()
        return lo.reshape(shape), hi.reshape(shape)

    def count_clipped(self, cyx: np.ndarray, known: np.ndarray | None = None) -> int:
        """How many values of ``cyx`` (known pixels only) fall outside the mapped range."""
        lo, hi = self._ab(cyx.ndim)
        out = (cyx < lo) | (cyx > hi)
        if known is not None:
            out &= np.asarray(known) != 0
        return int(out.sum())

    def clipped_fraction(self, cyx: np.ndarray, known: np.ndarray | None = None) -> float:
        n = cyx.size if known is None else int((np.asarray(known) != 0).sum()) * cyx.shape[0]
        return self.count_clipped(cyx, known) / max(n, 1)

    def forward(self, cyx: np.ndarray) -> np.ndarray:
        lo, hi = self._ab(cyx.ndim)
        return np.clip((cyx - lo) / (hi - lo), 0, 1).astype(np.float32)

    def inverse(self, cyx: np.ndarray, as_float: bool = False) -> np.ndarray:
        """Back to the data's units; in its dtype (rounded and clipped) unless ``as_float``."""
        lo, hi = self._ab(cyx.ndim)
        out = cyx.astype(np.float64) * (hi - lo) + lo
        dtype = np.dtype(self.dtype)
        if as_float:
            return out.astype(np.float32)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return np.clip(np.rint(out), info.min, info.max).astype(dtype)
        return out.astype(dtype)

    @classmethod
    def identity(cls, channels: int, dtype: str = "float32") -> IntensityMap:
        """Data already in [0, 1], used as is (benchmarks, tests)."""
        return _Fixed((0.0,) * channels, (1.0,) * channels, dtype)

    def to_dict(self) -> dict:
        return {"low": list(self.low), "high": list(self.high), "data_low": list(self.data_low),
                "data_high": list(self.data_high), "dtype": self.dtype,
                "outliers_clipped": self.outliers}


class _Fixed(IntensityMap):
    """A map whose ends are exactly ``data_low``/``data_high`` (no margin)."""

    def _ends(self):
        return np.asarray(self.data_low, float), np.asarray(self.data_high, float)
