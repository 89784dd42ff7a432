"""Which axes of an N-D array are stack, channel, Y and X; folding to planes and back.

The one place that knows how an array from a file or a layer maps to what the engine restores:

- :func:`from_letters` reads axis letters (a TIFF's ``ZCYX``, the CLI's ``--axes``);
  :func:`from_indices` takes a channel axis index or an RGB flag (napari layers).
- :meth:`AxisLayout.fold` turns the array into one plane, or a stack of planes
  (S, [C,] Y, X), colour samples last: (S, Y, X, RGB); :meth:`AxisLayout.unfold` undoes it
  (Y and X may have grown, e.g. by super-resolution).
- :meth:`AxisLayout.fold_mask` and :func:`slice_masks`: one 2-D mask for every slice, or one
  per slice.
- :meth:`AxisLayout.flat_index`: the folded index of the slice a viewer is showing.

Pure numpy; nothing here copies or modifies the caller's arrays unless it says so.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

#: Axis letters that hold channels: C (channel-first planes) and S (colour samples, RGB).
CHANNEL_LETTERS = "CS"


@dataclass(frozen=True)
class AxisLayout:
    """The roles of the axes of an array of ``shape``; indices count in that array."""

    shape: tuple[int, ...]
    stack: tuple[int, ...]  # stack axes, in order (folded into one, C-order)
    channel: int | None  # the channel axis, if any
    y: int
    x: int
    colour: bool = False  # channels are colour samples (RGB): planes are (Y, X, C)

    @property
    def is_stack(self) -> bool:
        return bool(self.stack)

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.stack)

    @property
    def n_slices(self) -> int:
        return int(np.prod(self.stack_shape)) if self.stack else 1

    @property
    def yx_shape(self) -> tuple[int, int]:
        return self.shape[self.y], self.shape[self.x]

    @property
    def plane_channel_axis(self) -> int | None:
        """The channel axis of one folded plane: 0 (C, Y, X), -1 (Y, X, RGB) or None."""
        if self.channel is None:
            return None
        return -1 if self.colour else 0

    @property
    def plane_ndim(self) -> int:
        return 2 if self.channel is None else 3

    @property
    def order(self) -> tuple[int, ...]:
        """The transpose that brings the array into folded order (stack axes first)."""
        if self.channel is None:
            plane = (self.y, self.x)
        elif self.colour:
            plane = (self.y, self.x, self.channel)
        else:
            plane = (self.channel, self.y, self.x)
        return (*self.stack, *plane)

    def fold(self, data: np.ndarray) -> np.ndarray:
        """One plane (Y, X), (C, Y, X), (Y, X, RGB), or a stack of them along a new axis 0."""
        data = np.asarray(data)
        if data.shape != self.shape:
            raise ValueError(f"array of shape {data.shape} does not match the layout's "
                             f"{self.shape}")
        arr = np.transpose(data, self.order)
        if not self.stack:
            return arr
        return arr.reshape((self.n_slices,) + arr.shape[len(self.stack):])

    def unfold(self, planes: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`fold`; Y and X (and only they) may differ from the input's."""
        planes = np.asarray(planes)
        plane_shape = planes.shape[planes.ndim - self.plane_ndim:]
        expected = planes.ndim == self.plane_ndim + (1 if self.stack else 0)
        if not expected or (self.stack and planes.shape[0] != self.n_slices):
            raise ValueError(
                f"planes of shape {planes.shape} do not fold back into an array of {self.shape}"
            )
        arr = planes.reshape(self.stack_shape + plane_shape)
        return np.transpose(arr, np.argsort(self.order))

    def folded_yx_axes(self, ndim: int) -> tuple[int, int]:
        """Y and X axes of a folded array with ``ndim`` dimensions (a plane or a stack)."""
        return (ndim - 3, ndim - 2) if self.colour else (ndim - 2, ndim - 1)

    def flat_index(self, point) -> int:
        """Folded index of the slice at ``point``, rounded and clipped into the stack.

        ``point`` has a coordinate along the array's axes in order, at least up to the last
        stack axis (napari's data coordinates of an RGB layer lack the colour axis); the
        coordinates of Y, X and the channel axis are ignored."""
        if not self.stack:
            return 0
        point = list(point)
        if len(point) <= max(self.stack):
            raise ValueError(f"point {tuple(point)} has {len(point)} coordinates; the stack "
                             f"axes of an array of {self.shape} need {max(self.stack) + 1}")
        idx = [int(np.clip(round(float(point[i])), 0, self.shape[i] - 1)) for i in self.stack]
        return int(np.ravel_multi_index(idx, self.stack_shape))

    def slice_position(self, flat: int) -> tuple[int, ...]:
        """The stack coordinates of folded slice ``flat`` (inverse of :meth:`flat_index`)."""
        return tuple(int(i) for i in np.unravel_index(flat, self.stack_shape))

    def fold_mask(self, mask: np.ndarray, name: str = "mask",
                  image_name: str = "the image") -> np.ndarray:
        """A mask for the folded planes: (Y, X), shared by every slice, or (S, Y, X).

        Accepts (Y, X), a colour mask image (Y, X, 3|4), or one (Y, X) mask per slice laid out
        like the stack axes (``*stack, Y, X``).
        """
        mask = np.asarray(mask)
        yx = self.yx_shape
        if mask.shape == yx or (mask.ndim == 3 and mask.shape[:2] == yx
                                and mask.shape[2] in (3, 4)):
            return mask
        if self.stack and mask.shape == self.stack_shape + yx:
            return mask.reshape((self.n_slices,) + yx)
        want = f"{yx}" + (f" or {self.stack_shape + yx} (one per slice)" if self.stack else "")
        raise ValueError(f"{name} has shape {mask.shape}, but {image_name} needs a mask of "
                         f"shape {want}")


def slice_masks(mask: np.ndarray | None, n_slices: int, yx: tuple[int, int],
                name: str = "mask") -> list:
    """One mask (or None) per slice: a (Y, X) mask is shared, an (S, Y, X) one is split."""
    if mask is None:
        return [None] * n_slices
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape == (n_slices, *yx):
        return list(mask)
    if mask.shape[:2] == tuple(yx):  # (Y, X), or a colour mask image (Y, X, 3|4)
        return [mask] * n_slices
    raise ValueError(f"{name} has shape {mask.shape}; a stack of {n_slices} slices of {yx} "
                     f"needs a mask of shape {tuple(yx)} (shared) or {(n_slices, *yx)}")


def from_letters(axes: str, shape: tuple[int, ...]) -> AxisLayout:
    """Roles from one letter per axis: Y and X; C (channels) or S (colour samples, RGB);
    any other letter (Z, T, Q, ...) is a stack axis."""
    axes = axes.upper()
    shape = tuple(int(n) for n in shape)
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes!r} do not match the image's {len(shape)} dimensions {shape}")
    repeated = sorted(a for a, n in Counter(axes).items() if n > 1)
    if repeated:
        raise ValueError(
            f"axes {axes!r} name {', '.join(repr(a) for a in repeated)} more than once; give "
            "each axis its own letter (e.g. TZCYX)"
        )
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"axes {axes!r} must include Y and X (e.g. YX, ZYX, CYX, YXS)")
    channels = [i for i, a in enumerate(axes) if a in CHANNEL_LETTERS]
    if len(channels) > 1:
        raise ValueError(f"axes {axes!r} have more than one channel axis (C and S)")
    channel = channels[0] if channels else None
    stack = tuple(i for i, a in enumerate(axes) if a not in "YX" + CHANNEL_LETTERS)
    return AxisLayout(shape, stack, channel, axes.index("Y"), axes.index("X"),
                      colour=channel is not None and axes[channel] == "S")


def from_indices(shape: tuple[int, ...], channel_axis: int | None = None,
                 colour: bool = False, name: str = "the image") -> AxisLayout:
    """Roles for an array whose last two axes are Y and X (napari's convention), or, with
    ``colour``, whose last axis holds RGB(A) samples after Y and X. ``channel_axis`` names a
    channel axis among the others; every remaining axis is a stack axis."""
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    if colour:
        if channel_axis is not None:
            raise ValueError(f"{name} is RGB; it cannot have another channel axis")
        if ndim < 3:
            raise ValueError(f"{name} has shape {shape}; an RGB image is (..., Y, X, 3|4)")
        return AxisLayout(shape, tuple(range(ndim - 3)), ndim - 1, ndim - 3, ndim - 2, True)
    if ndim < 2:
        raise ValueError(f"{name} has shape {shape}; DIP needs a 2-D image (Y, X)")
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim:
            raise ValueError(f"channel axis {channel_axis} is out of range for {name}'s "
                             f"{ndim} dimensions {shape}")
        channel_axis %= ndim
        if channel_axis >= ndim - 2:
            raise ValueError("the channel axis cannot be one of the last two (Y, X) axes")
    stack = tuple(i for i in range(ndim - 2) if i != channel_axis)
    return AxisLayout(shape, stack, channel_axis, ndim - 2, ndim - 1)
