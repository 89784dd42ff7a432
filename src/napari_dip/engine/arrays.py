"""Array plumbing: input checks, channel layouts, intensity normalisation and its inverse.

Nothing here modifies the caller's arrays; every function returns new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SIDE = 8


def check_dtype(image: np.ndarray, name: str = "image") -> None:
    if image.dtype == bool:
        raise ValueError(
            f"{name} is boolean; DIP restores intensities. Convert it to uint8 or float first "
            "(or pass it as the mask if it marks pixels to fill)."
        )
    if np.iscomplexobj(image):
        raise ValueError(
            f"{name} is complex; restore the magnitude (np.abs) or the real and imaginary parts "
            "separately."
        )
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"{name} has dtype {image.dtype}; use an integer or float array.")


def check_values(image: np.ndarray, name: str = "image") -> None:
    if np.issubdtype(image.dtype, np.floating):
        bad = ~np.isfinite(image)
        if bad.any():
            raise ValueError(
                f"{name} contains {int(bad.sum())} NaN or infinite value(s); replace them "
                "(e.g. np.nan_to_num) or mark them in the mask to have them filled."
            )
    if image.size and image.min() == image.max():
        raise ValueError(
            f"{name} is constant (every value is {image.flat[0]}); there is nothing to restore."
        )


@dataclass(frozen=True)
class Layout:
    """How the caller's 2-D array maps to (C, Y, X)."""

    kind: str  # "grey", "channels_first" or "channels_last"
    channel_axis: int | None

    def to_cyx(self, image: np.ndarray) -> np.ndarray:
        if self.kind == "grey":
            return image[None]
        return np.moveaxis(image, self.channel_axis, 0)

    def from_cyx(self, image: np.ndarray) -> np.ndarray:
        if self.kind == "grey":
            return image[0]
        return np.moveaxis(image, 0, self.channel_axis)


def infer_layout(image: np.ndarray, channel_axis: int | None, name: str = "image") -> Layout:
    """Grey (Y, X); with 3 dims, (Y, X, 3|4) is RGB(A), anything else channel-first (C, Y, X).

    ``channel_axis`` overrides the guess.
    """
    if image.ndim == 2:
        if channel_axis is not None:
            raise ValueError(f"{name} is 2-D (Y, X) but channel_axis={channel_axis} was given")
        return Layout("grey", None)
    if image.ndim != 3:
        raise ValueError(
            f"{name} has {image.ndim} dimensions {image.shape}; this function restores one 2-D "
            "plane (Y, X), (C, Y, X) or (Y, X, RGB). For a stack use restore_stack(), or pass a "
            "single slice."
        )
    if channel_axis is None:
        channel_axis = 2 if image.shape[-1] in (3, 4) else 0
    channel_axis = channel_axis % 3
    if channel_axis == 1:
        raise ValueError(f"{name}: the channel axis must be the first or the last, not the middle")
    return Layout("channels_last" if channel_axis == 2 else "channels_first", channel_axis)


def check_spatial(shape: tuple[int, int], name: str = "image") -> None:
    if min(shape) < MIN_SIDE:
        raise ValueError(
            f"{name} is {shape[0]}x{shape[1]} pixels; DIP needs at least {MIN_SIDE} pixels a side."
        )


def repeat_yx(a: np.ndarray, factor: int, y_axis: int) -> np.ndarray:
    """Nearest-neighbour upsampling along ``y_axis`` and the axis after it (X)."""
    return np.repeat(np.repeat(a, factor, axis=y_axis), factor, axis=y_axis + 1)


def median3(plane: np.ndarray) -> np.ndarray:
    """3x3 median filter (edges replicated), to find a range that ignores hot pixels."""
    p = np.pad(plane, 1, mode="edge")
    h, w = plane.shape
    shifts = [p[i : i + h, j : j + w] for i in range(3) for j in range(3)]
    return np.median(np.stack(shifts), axis=0)


@dataclass(frozen=True)
class Normalisation:
    """Per-channel affine map from the data's intensities to [0, 1] and back."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    dtype: str

    @classmethod
    def fit(cls, cyx: np.ndarray, joint: bool) -> Normalisation:
        """uint8 maps 0..255 to 0..1 (as in the paper); other dtypes use a robust range.

        The robust range is the min and max of a 3x3-median-filtered copy (isolated hot or dead
        pixels do not stretch it, small bright spots do) widened by 5 % on each side so that
        noise around the extremes is not clipped.
        """
        n = cyx.shape[0]
        if cyx.dtype == np.uint8:
            return cls((0.0,) * n, (255.0,) * n, "uint8")
        lows, highs = [], []
        for ch in cyx:
            filtered = median3(ch.astype(np.float64)) if min(ch.shape) >= 3 else ch
            lo, hi = float(filtered.min()), float(filtered.max())
            if hi <= lo:
                lo, hi = float(ch.min()), float(ch.max())
            margin = 0.05 * (hi - lo)
            lows.append(lo - margin)
            highs.append(hi + margin)
        if joint:
            lows, highs = [min(lows)] * n, [max(highs)] * n
        return cls(tuple(lows), tuple(highs), str(cyx.dtype))

    def _ab(self, ndim: int):
        shape = (-1,) + (1,) * (ndim - 1)
        lo = np.asarray(self.low).reshape(shape)
        hi = np.asarray(self.high).reshape(shape)
        return lo, hi

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

    def to_dict(self) -> dict:
        return {"low": list(self.low), "high": list(self.high), "dtype": self.dtype}


def mask_to_known(mask: np.ndarray, spatial_shape: tuple[int, int],
                  name: str = "mask") -> np.ndarray:
    """Non-zero mask pixels are the ones to fill; returns 1 = known, 0 = fill (float32)."""
    mask = np.asarray(mask)
    if mask.dtype.kind not in "biuf":
        raise ValueError(f"{name} has dtype {mask.dtype}; use a boolean or integer label image")
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):  # an RGB(A) mask image: any channel set
        mask = mask.any(axis=-1)
    if mask.shape != tuple(spatial_shape):
        raise ValueError(
            f"{name} has shape {mask.shape} but the image's spatial shape is "
            f"{tuple(spatial_shape)}; draw the mask on the image (same height and width)."
        )
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    fill = mask != 0
    if not fill.any():
        raise ValueError(
            f"{name} is empty: no pixel is marked to fill. Paint the pixels to restore with a "
            "non-zero label."
        )
    if fill.all():
        raise ValueError(
            f"{name} covers every pixel, so nothing is known to fill from. Leave some pixels "
            "unlabelled (label 0)."
        )
    return (~fill).astype(np.float32)
