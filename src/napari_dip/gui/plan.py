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
#: Axis labels that name a channel axis.
CHANNEL_NAMES = ("c", "ch", "channel", "channels")
#: An unnamed leading axis at most this long is taken for channels (the user can change it).
MAX_INFERRED_CHANNELS = 8
#: The key of an output layer's metadata that holds its run's record.
METADATA_KEY = "napari_dip"


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
    mask_layer: object = None
    axis_names: tuple = ()  # the given name of each axis of ``data`` (None if unnamed)
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

    @property
    def slices_asked(self) -> list[int]:
        """The folded indices of the slices this run restores."""
        if not self.is_stack:
            return []
        return list(range(self.layout.n_slices)) if self.slice_index is None \
            else [self.slice_index]

    @property
    def fits(self) -> int:
        """Planes fitted one after another (slices x channel groups)."""
        slices = len(self.slices_asked) or 1
        separate = self.kwargs.get("channels") == "separate" and not self.layout.colour
        n_channels = self.data.shape[self.layout.channel] if self.layout.channel is not None \
            else 1
        return slices * (n_channels if separate else 1)

    def slice_name(self, flat: int) -> str:
        """A folded slice index in the layer's stack coordinates: 'z=3', 't=1, z=4', or
        '3' and '(1, 4)' when the axes have no names."""
        pos = self.layout.slice_position(flat)
        names = [self.axis_names[a] if a < len(self.axis_names) else None
                 for a in self.layout.stack]
        if not any(names):
            return str(pos[0]) if len(pos) == 1 else str(pos)
        return ", ".join(f"{n or 'axis ' + str(a)}={p}"
                         for n, a, p in zip(names, self.layout.stack, pos))


def unwrap(layer):
    """The layer itself: napari hands plugin widgets proxies of its viewer and layers, and a
    proxy is not ``is`` its layer. Layers are kept and compared unwrapped."""
    return getattr(layer, "__wrapped__", layer)


def layer_array(layer) -> np.ndarray:
    """The layer's data as an array (the full-resolution level of a multiscale layer)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return np.asarray(data)


def axis_names(layer) -> tuple:
    """The name the user gave each axis of the layer, or None where napari's default label
    (the axis index, counted from the end, e.g. '-3') stands."""
    labels = list(getattr(layer, "axis_labels", ()) or ())
    ndim = len(labels)
    return tuple(None if str(lab) in (str(i - ndim), str(i)) else str(lab)
                 for i, lab in enumerate(labels))


def axis_choice_text(layer, axis: int) -> str:
    """How a menu names an axis: 'c (3)', or 'axis -3 (2)' under napari's own label."""
    labels = list(getattr(layer, "axis_labels", ()) or ())
    size = layer_array(layer).shape[axis]
    name = axis_names(layer)[axis] if axis < len(labels) else None
    return f"{name} ({size})" if name else f"axis {labels[axis] if labels else axis} ({size})"


def default_channel_axis(layer) -> tuple[int | None, str]:
    """The channel axis to propose for a layer, and a note saying why ('' if none): an axis
    named c/ch/channel; else an unnamed first axis of at most :data:`MAX_INFERRED_CHANNELS`."""
    if layer is None or getattr(layer, "rgb", False):
        return None, ""
    shape = layer_array(layer).shape
    if len(shape) < 3:
        return None, ""
    names = axis_names(layer)
    for i in range(len(shape) - 2):
        if i < len(names) and names[i] and names[i].lower() in CHANNEL_NAMES:
            return i, ""
    if (names and names[0]) or shape[0] > MAX_INFERRED_CHANNELS:
        return None, ""
    return 0, (f"{axis_choice_text(layer, 0)} is read as {shape[0]} channels; choose "
               "'none' as channel axis if it is a stack (Z, T) instead")


def is_dip_output(layer) -> bool:
    """Whether a layer is a napari-dip result or snapshot (by its metadata, not its name)."""
    return METADATA_KEY in (getattr(layer, "metadata", None) or {})


def mask_fits(layer, channel_axis: int | None, mask_layer) -> bool:
    """Whether ``mask_layer`` can serve as the inpainting mask of ``layer``."""
    try:
        layout = from_indices(layer_array(layer).shape, None if layer.rgb else channel_axis,
                              colour=bool(layer.rgb))
        layout.fold_mask(np.empty(layer_array(mask_layer).shape, dtype=bool))
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def work_size(layer, *, channel_axis=None, channel_layers=(), slices: str = ALL,
              channels: str = "joint") -> tuple[int, int, int, int]:
    """(height, width, channels per fit, fits) of a run, from the shapes alone (no copy)."""
    shape = layer_array(layer).shape
    rgb = bool(getattr(layer, "rgb", False))
    extra = [lyr for lyr in channel_layers if lyr is not layer]
    if extra:
        shape, channel_axis = (1 + len(extra), *shape), 0
    layout = from_indices(shape, None if rgb else channel_axis, colour=rgb)
    n = 1 if layout.channel is None else min(shape[layout.channel], 3 if rgb else 10**9)
    per_fit = 1 if channels == "separate" and not rgb else n
    groups = n if channels == "separate" and not rgb else 1
    n_slices = 1 if not layout.is_stack or slices == CURRENT else layout.n_slices
    return (*layout.yx_shape, per_fit, n_slices * groups)


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
    layer, mask_layer = unwrap(layer), unwrap(mask_layer)
    extra = [unwrap(lyr) for lyr in channel_layers if unwrap(lyr) is not layer]
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
    names = axis_names(layer)
    return Plan(sources, task, factor, layout, data, mask, slice_index, mask_name,
                mask_layer if task == "inpaint" else None, (None, *names) if extra else names)


__all__ = [
    "ALL", "CURRENT", "Plan", "axis_choice_text", "axis_names", "default_channel_axis",
    "is_dip_output", "layer_array", "make_plan", "mask_fits", "unwrap", "work_size",
]
