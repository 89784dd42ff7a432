"""Layers to engine work: what a run restores, captured from the layers when Run is pressed.

Pure numpy (no Qt, no torch): layers are used only through their attributes (``data``,
``rgb``, ``name``, ...), so this module is tested without a viewer. The axis roles come from
:mod:`napari_dip.engine.axes`.

Mask rule: in the Labels layer, pixels with a label > 0 are the ones to fill; label 0 is known.
A 2-D mask is shared by every slice of a stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engine.axes import AxisLayout, from_indices

CURRENT, ALL = "current slice", "all slices"


@dataclass
class Plan:
    """Everything captured from the layers at Run: arrays, axes and how to map results back."""

    sources: list  # input layers (one, or several single-channel layers restored as channels)
    task: str
    factor: int
    layout: AxisLayout  # roles of the axes of ``data``
    data: np.ndarray  # the input (a copy); channel layers stacked along a new axis 0
    mask: np.ndarray | None  # (Y, X) shared by every slice, or (S, Y, X)
    slice_index: int | None  # folded index for "current slice", else None
    mask_name: str | None = None
    kwargs: dict = field(default_factory=dict)  # engine settings (preset, seed, ...)

    @property
    def is_stack(self) -> bool:
        return self.layout.is_stack

    @property
    def work(self) -> np.ndarray:
        """What the engine sees: one plane, or the stack folded to (S, plane...)."""
        return self.layout.fold(self.data)

    def upsampled(self, work: np.ndarray) -> np.ndarray:
        """The initial output: the input, nearest-neighbour upsampled for super-resolution."""
        if self.task != "sr":
            return work.copy()
        y, x = self.layout.folded_yx_axes(work.ndim)
        return np.repeat(np.repeat(work, self.factor, axis=y), self.factor, axis=x)

    def to_layers(self, work: np.ndarray) -> list[np.ndarray]:
        """Engine layout (folded) -> one array per source layer, in that layer's axes."""
        arr = self.layout.unfold(work)
        if len(self.sources) > 1:
            return [arr[i] for i in range(len(self.sources))]
        return [arr]

    def slice_name(self, flat: int) -> str:
        """A folded slice index as the layer's stack coordinates (e.g. '3' or '(1, 4)')."""
        pos = self.layout.slice_position(flat)
        return str(pos[0]) if len(pos) == 1 else str(pos)


def layer_array(layer) -> np.ndarray:
    """The layer's data as an array (the full-resolution level of a multiscale layer)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return np.asarray(data)


def make_plan(
    layer,
    *,
    task: str,
    factor: int = 4,
    mask_layer=None,
    channel_axis: int | None = None,
    channel_layers=(),
    slices: str = ALL,
    current_point=None,
) -> Plan:
    """Capture the arrays of a run; raises ValueError with a message for the user."""
    if layer is None:
        raise ValueError("choose an Image layer to restore")
    extra = [lyr for lyr in channel_layers if lyr is not layer]
    sources = [layer, *extra]
    # Copies: the user may paint or edit layers while the run goes on.
    arrays = [np.array(layer_array(lyr), copy=True) for lyr in sources]
    rgb = bool(getattr(layer, "rgb", False))
    if extra:
        if rgb or any(getattr(lyr, "rgb", False) for lyr in extra):
            raise ValueError("RGB layers cannot be combined as channels; restore them one by one")
        if channel_axis is not None:
            raise ValueError("choose either a channel axis or channel layers, not both")
        bad = [lyr.name for lyr, a in zip(extra, arrays[1:]) if a.shape != arrays[0].shape]
        if bad:
            raise ValueError(
                f"channel layer(s) {', '.join(bad)} do not have the shape of {layer.name!r} "
                f"{arrays[0].shape}"
            )
        data, channel_axis = np.stack(arrays), 0
    else:
        data = arrays[0]
        if rgb:
            channel_axis = None
    layout = from_indices(data.shape, channel_axis, colour=rgb, name=repr(layer.name))

    slice_index = None
    if layout.is_stack and slices == CURRENT:
        if current_point is None:
            slice_index = 0
        else:  # data coordinates of the layer; stacked channel layers add an axis in front
            point = list(current_point)
            slice_index = layout.flat_index([0, *point] if extra else point)

    mask = mask_name = None
    if task == "inpaint":
        if mask_layer is None:
            raise ValueError("inpainting needs a Labels layer as the mask (label > 0 = fill)")
        mask = layout.fold_mask(layer_array(mask_layer) > 0, f"the mask {mask_layer.name!r}",
                                f"the image {layer.name!r}")
        mask_name = mask_layer.name
    return Plan(sources, task, factor, layout, data, mask, slice_index, mask_name)


__all__ = ["ALL", "CURRENT", "Plan", "layer_array", "make_plan"]
