"""Array plumbing: input checks and channel layouts (intensities: :mod:`.intensity`).

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


def split_alpha(cyx: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray | None]:
    """An RGBA image's colour channels and its alpha (passed through, never restored)."""
    if layout.kind == "channels_last" and cyx.shape[0] == 4:
        return cyx[:3], cyx[3]
    return cyx, None


def fill_of(mask: np.ndarray) -> np.ndarray:
    """The pixels a mask marks to fill (non-zero; any channel of a colour mask image)."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):
        mask = mask.any(axis=-1)
    return mask != 0


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


def mask_to_known(mask: np.ndarray, spatial_shape: tuple[int, int],
                  name: str = "mask") -> np.ndarray:
    """Non-zero mask pixels are the ones to fill; returns 1 = known, 0 = fill (float32)."""
    mask = np.asarray(mask)
    if mask.dtype.kind not in "biuf":
        raise ValueError(f"{name} has dtype {mask.dtype}; use a boolean or integer label image")
    if mask.dtype.kind == "f" and not np.isfinite(mask).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    fill = fill_of(mask)
    if fill.shape != tuple(spatial_shape):
        raise ValueError(
            f"{name} has shape {mask.shape} but the image's spatial shape is "
            f"{tuple(spatial_shape)}; draw the mask on the image (same height and width)."
        )
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
