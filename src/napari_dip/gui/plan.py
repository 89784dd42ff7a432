"""Layers to engine work: what a run restores, captured from the layers when Run is pressed.

Pure numpy (no Qt, no torch): layers are used only through their attributes (``data``,
``rgb``, ``name``, ...), so this module is tested without a viewer. The axis roles come from
:mod:`napari_dip.engine.axes`.

Mask rule: in the Labels layer, pixels with a label > 0 are the ones to fill; label 0 is known.
A 2-D mask is shared by every slice of a stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..choices import OUTPUT_DTYPE, result_is_float
from ..engine.axes import AxisLayout, from_indices

CURRENT, ALL = "current slice", "all slices"
#: Axis labels that name a channel axis.
CHANNEL_NAMES = ("c", "ch", "channel", "channels")
#: An unnamed leading axis at most this long is taken for channels (the user can change it).
MAX_INFERRED_CHANNELS = 8
#: The key of an output layer's metadata that holds its run's record.
METADATA_KEY = "napari_dip"
#: Array types (by their package) that a run reads one slice at a time (:func:`is_lazy`).
LAZY_MODULES = ("dask", "zarr")


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
    psf: np.ndarray | None = None  # a PSF layer's data (a copy), for deconvolution
    psf_name: str | None = None
    psf_sigma: float | None = None  # a Gaussian PSF's sigma in pixels (instead of ``psf``)
    guide: np.ndarray | None = None  # the network's input: one plane, or one per slice (folded)
    guide_name: str | None = None
    stack_mode: str | None = None  # 'slices', 'warm', '3d'; None: chosen by the engine
    output_dtype: str = "auto"  # the result's type (:data:`napari_dip.choices.OUTPUT_DTYPE`)
    mask_inverted: bool = False  # the mask's labels were read as the pixels to keep
    voxel_size: tuple | None = None  # (Z, Y, X) from the layer's scale, for stack mode '3d'
    #: ``data`` is the layer's own lazy array (dask, zarr; never copied nor read whole): the
    #: run reads one slice at a time (:meth:`read_slice`) and writes into a store on disk.
    lazy: bool = False

    @property
    def is_stack(self) -> bool:
        return self.layout.is_stack

    @property
    def as_float(self) -> bool:
        """Whether the result is float32 in the input's units rather than the input's type."""
        return result_is_float(self.output_dtype, self.task, self.levels)

    def _levels_decide(self) -> bool:
        return self.output_dtype == "auto" and self.task != "deconvolve" and \
            np.issubdtype(self.data.dtype, np.integer)

    @cached_property
    def levels(self) -> int | None:
        """The integer levels the input spans where the 'auto' result type depends on them
        (:func:`~napari_dip.choices.result_is_float`), else None. A lazy run learns them in its
        first pass (:meth:`learn_levels`); asked before, they are read from the few slices that
        decide them (at most 8, one at a time)."""
        if not self._levels_decide():
            return None
        from ..engine.units import folded_levels, integer_levels

        name = f"layer {self.sources[0].name!r}"
        if self.lazy:
            from ..engine.axes import slice_masks

            n = self.layout.n_slices
            return integer_levels(self.read_slice, self.slices_asked,
                                  slice_masks(self.mask, n, self.layout.yx_shape),
                                  self.layout.plane_channel_axis, self.task, name)
        return folded_levels(self.work, self.layout, self.mask, self.task, name,
                             None if self.slice_index is None else [self.slice_index])

    def learn_levels(self, levels: int | None) -> None:
        """The levels a lazy run's first pass saw on the slices :attr:`levels` reads
        (:class:`~napari_dip.engine.units.LevelSample`), so that none is read again."""
        self.__dict__["levels"] = levels if self._levels_decide() else None

    @property
    def result_dtype(self) -> np.dtype:
        """The result's dtype."""
        return np.dtype(np.float32) if self.as_float else np.dtype(self.data.dtype)

    @property
    def work(self) -> np.ndarray:
        """What the engine sees: one plane, or the stack folded to (S, plane...)."""
        if self.lazy:
            raise RuntimeError("a lazy plan is read one slice at a time (read_slice)")
        return self.layout.fold(self.data)

    # ---- a lazy layer, one slice at a time ------------------------------------------------

    def _plane_axes(self) -> tuple[int, ...]:
        """The axes of ``data`` that make one plane, in the engine's plane order."""
        return self.layout.order[len(self.layout.stack):]

    def slice_key(self, flat: int) -> tuple:
        """The index into ``data`` (or the output store) of folded slice ``flat``."""
        coords = dict(zip(self.layout.stack, self.layout.slice_position(flat)))
        return tuple(coords.get(a, slice(None)) for a in range(len(self.layout.shape)))

    def _sliced_axes(self) -> list[int]:
        """The axes of ``data`` left in ``data[slice_key(i)]`` (not stack axes), in order."""
        return [a for a in range(len(self.layout.shape)) if a not in self.layout.stack]

    def read_slice(self, flat: int) -> np.ndarray:
        """Folded slice ``flat`` as the engine takes a plane, read now (only that slice)."""
        plane = np.asarray(self.data[self.slice_key(flat)])
        kept = self._sliced_axes()
        return np.transpose(plane, [kept.index(a) for a in self._plane_axes()])

    def store_plane(self, plane: np.ndarray) -> np.ndarray:
        """A plane in the engine's order -> the axes of ``data[slice_key(i)]``."""
        order = list(self._plane_axes())
        return np.transpose(plane, [order.index(a) for a in self._sliced_axes()])

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The result's shape in the layer's axes (Y and X times the factor for SR)."""
        shape = list(self.layout.shape)
        if self.task == "sr":
            shape[self.layout.y] *= self.factor
            shape[self.layout.x] *= self.factor
        return tuple(shape)

    @property
    def output_chunks(self) -> tuple[int, ...]:
        """One slice per chunk: 1 along each stack axis, whole along the others."""
        return tuple(1 if a in self.layout.stack else n
                     for a, n in enumerate(self.output_shape))

    def engine_kwargs(self, result_type: bool = True) -> dict:
        """The arrays and choices taken from the layers, as the engine's keywords (the PSF,
        the guide, the stack mode; the result type unless ``result_type`` is False: it needs
        :attr:`levels`)."""
        kw = {}
        if self.psf is not None:
            kw.update(psf=self.psf, psf_name=f"the PSF layer {self.psf_name!r}")
        elif self.psf_sigma:
            kw["psf_sigma"] = self.psf_sigma
        if self.guide is not None:
            kw.update(guide=self.guide, guide_name=f"the guide layer {self.guide_name!r}")
        if self.is_stack:
            kw.update(stack_mode=self.stack_mode, voxel_size=self.voxel_size)
        if result_type and self.as_float:
            kw["as_float"] = True
        return kw

    def upsampled(self, work: np.ndarray) -> np.ndarray:
        """The initial output: the input (in the result's dtype), nearest-neighbour upsampled
        for super-resolution."""
        work = work.astype(self.result_dtype)  # a copy
        if self.task != "sr":
            return work
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


def layer_data(layer):
    """The layer's data as it is held (the full-resolution level of a multiscale layer): a
    numpy array, or a lazy one (dask, zarr) that is read only where it is indexed."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def layer_array(layer) -> np.ndarray:
    """The layer's data as a numpy array (reads a lazy layer whole: for small layers only)."""
    return np.asarray(layer_data(layer))


def layer_shape(layer) -> tuple[int, ...]:
    """The shape of the layer's data, without reading a lazy layer's pixels."""
    return tuple(int(n) for n in layer_data(layer).shape)


def is_lazy(data) -> bool:
    """Whether an array is read on demand, a chunk at a time (a dask or a zarr array, as
    napari's readers of OME-Zarr files give), rather than held in memory."""
    if isinstance(data, np.ndarray):
        return False
    return type(data).__module__.split(".")[0] in LAZY_MODULES


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
    size = layer_shape(layer)[axis]
    name = axis_names(layer)[axis] if axis < len(labels) else None
    return f"{name} ({size})" if name else f"axis {labels[axis] if labels else axis} ({size})"


def default_channel_axis(layer) -> tuple[int | None, str]:
    """The channel axis to propose for a layer, and a note saying why ('' if none): an axis
    named c/ch/channel; else an unnamed first axis of at most :data:`MAX_INFERRED_CHANNELS`."""
    if layer is None or getattr(layer, "rgb", False):
        return None, ""
    shape = layer_shape(layer)
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
        layout = from_indices(layer_shape(layer), None if layer.rgb else channel_axis,
                              colour=bool(layer.rgb))
        layout.fold_mask(np.empty(layer_shape(mask_layer), dtype=bool))
    except (ValueError, AttributeError, TypeError):
        return False
    return True


#: The tasks a PSF applies to; a PSF makes 'denoise' a deconvolution.
PSF_TASKS = ("denoise", "deconvolve")


def spatial_shape(layer) -> tuple[int, int]:
    """(Y, X) of a layer: its last two axes, or the two before the colour axis of an RGB one."""
    shape = layer_shape(layer)
    return tuple(shape[-3:-1]) if getattr(layer, "rgb", False) else tuple(shape[-2:])


def psf_fits(layer, psf_layer) -> bool:
    """Whether ``psf_layer`` can serve as the PSF of ``layer``: a 2-D or 3-D grey image, not
    the image itself."""
    if psf_layer is None or unwrap(psf_layer) is unwrap(layer):
        return False
    return not getattr(psf_layer, "rgb", False) and len(layer_shape(psf_layer)) in (2, 3)


def guide_fits(layer, guide_layer, task: str = "denoise", factor: int = 4) -> bool:
    """Whether ``guide_layer`` can guide ``layer``'s restoration: one plane of the output's
    height and width (the input's; times ``factor`` for super-resolution), or, for a stack,
    one plane per slice (the input's whole shape)."""
    if layer is None or guide_layer is None or unwrap(guide_layer) is unwrap(layer):
        return False
    f = factor if task == "sr" else 1
    h, w = spatial_shape(layer)
    g = layer_shape(guide_layer)
    rgb = bool(getattr(guide_layer, "rgb", False))
    one_plane = len(g) == (3 if rgb else 2) and spatial_shape(guide_layer) == (h * f, w * f)
    per_slice = f == 1 and g == layer_shape(layer) and \
        rgb == bool(getattr(layer, "rgb", False))
    return one_plane or per_slice


def resolve_task(task: str, psf_layer=None, psf_sigma: float = 0.0) -> str:
    """The task a run does: a PSF (a layer or a sigma) makes 'denoise' a deconvolution;
    ValueError with the fix when the choices contradict each other."""
    if psf_layer is not None and psf_sigma:
        raise ValueError(
            f"choose either a PSF layer ({psf_layer.name!r}) or a PSF sigma ({psf_sigma:g}), "
            "not both: set PSF sigma to 0 to use the layer, or set the PSF layer to none to "
            "use the Gaussian sigma")
    has_psf = psf_layer is not None or bool(psf_sigma)
    if task == "deconvolve" and not has_psf:
        raise ValueError("task 'deconvolve' needs a PSF: choose a PSF layer (a measured or "
                         "computed PSF image) or set PSF sigma above 0 (a Gaussian PSF)")
    if has_psf and task not in PSF_TASKS:
        raise ValueError(f"a PSF makes the task a deconvolution; it cannot be combined with "
                         f"task {task!r}: choose task 'denoise' or 'deconvolve', or no PSF")
    return "deconvolve" if has_psf else task


def _work_layout(layer, channel_axis=None, channel_layers=()) -> tuple[AxisLayout, bool]:
    """The axes of a run's data from the shapes alone, and whether channel layers add an axis
    in front (as :func:`make_plan` stacks them)."""
    shape = layer_shape(layer)
    rgb = bool(getattr(layer, "rgb", False))
    extra = [lyr for lyr in channel_layers if lyr is not layer]
    if extra:
        shape, channel_axis = (1 + len(extra), *shape), 0
    return from_indices(shape, None if rgb else channel_axis, colour=rgb), bool(extra)


def work_size(layer, *, channel_axis=None, channel_layers=(), slices: str = ALL,
              channels: str = "joint") -> tuple[int, int, int, int]:
    """(height, width, channels per fit, fits) of a run, from the shapes alone (no copy)."""
    layout, _ = _work_layout(layer, channel_axis, channel_layers)
    per_fit, groups = _channel_groups(layout, channels)
    n_slices = 1 if not layout.is_stack or slices == CURRENT else layout.n_slices
    return (*layout.yx_shape, per_fit, n_slices * groups)


def _channel_groups(layout: AxisLayout, channels: str) -> tuple[int, int]:
    """(channels per fit, fits per plane): every channel in one fit, or one fit each."""
    rgb = layout.colour
    n = 1 if layout.channel is None else min(layout.shape[layout.channel], 3 if rgb else 10**9)
    separate = channels == "separate" and not rgb
    return (1, n) if separate else (n, 1)


def estimate_size(layer, *, channel_axis=None, channel_layers=(), slices: str = ALL,
                  channels: str = "joint", stack_mode: str | None = None) -> dict:
    """The size keywords of :func:`~napari_dip.engine.cost.estimate_run` for a run (height,
    width, channels, fits and, for a stack, the stack mode). In stack mode '3d' a fit is the
    whole stack, one per channel group, whatever ``slices`` (Run asks for all slices), with
    its planes and voxel size (ValueError for a stack of several stack axes)."""
    h, w, per_fit, fits = work_size(layer, channel_axis=channel_axis,
                                    channel_layers=channel_layers, slices=slices,
                                    channels=channels)
    size = dict(height=h, width=w, channels=per_fit, fits=fits)
    layout, extra = _work_layout(layer, channel_axis, channel_layers)
    if not layout.is_stack or stack_mode is None:
        return size
    size["stack_mode"] = stack_mode
    if stack_mode == "3d":  # refused as Run refuses it, with Run's words
        if is_lazy(layer_data(layer)):
            raise ValueError(_LAZY_3D.format(name=layer.name))
        size.update(fits=_channel_groups(layout, channels)[1], planes=layout.n_slices,
                    voxel_size=_voxel_size(layer, layout, None if slices == ALL else 0,
                                           offset=1 if extra else 0))
    return size


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
    psf_layer=None,
    psf_sigma: float = 0.0,
    guide_layer=None,
    stack_mode: str | None = None,
    output_dtype: str = "auto",
    invert_mask: bool = False,
) -> Plan:
    """Capture the arrays of a run; raises ValueError with a message for the user.

    ``psf_layer`` or ``psf_sigma`` (> 0) make 'denoise' a deconvolution (both: an error);
    ``guide_layer`` is the network's input (one plane, or one per slice of a stack);
    ``stack_mode`` ('slices', 'warm', '3d'; None: the engine chooses) applies to stacks only,
    and '3d' takes its voxel size from the layer's scale. ``output_dtype``: the result's type
    (:data:`napari_dip.choices.OUTPUT_DTYPE`; 'auto': float32 for a deconvolution).
    ``invert_mask``: the mask's labels are the pixels to keep, and the rest is filled."""
    if layer is None:
        raise ValueError("choose an Image layer to restore")
    layer, mask_layer = unwrap(layer), unwrap(mask_layer)
    psf_layer, guide_layer = unwrap(psf_layer), unwrap(guide_layer)
    task = resolve_task(task, psf_layer, psf_sigma)
    OUTPUT_DTYPE.check(output_dtype)
    if psf_layer is not None and not psf_fits(layer, psf_layer):
        raise ValueError(f"the PSF layer {psf_layer.name!r} has shape "
                         f"{layer_shape(psf_layer)}; a PSF is a 2-D (Y, X) or 3-D "
                         "(Z, Y, X) grey image other than the image restored")
    if guide_layer is not None and not guide_fits(layer, guide_layer, task, factor):
        raise ValueError(f"the guide layer {guide_layer.name!r} has shape "
                         f"{layer_shape(guide_layer)}; a guide has the output's height "
                         f"and width, or (for a stack) the shape of {layer.name!r} "
                         f"{layer_shape(layer)}")
    extra = [unwrap(lyr) for lyr in channel_layers if unwrap(lyr) is not layer]
    sources = [layer, *extra]
    rgb = bool(getattr(layer, "rgb", False))
    lazy = _lazy_stack(layer, sources, None if rgb or extra else channel_axis, rgb,
                       stack_mode)
    # Copies: the user may paint or edit layers while the run goes on. A lazy stack is not
    # copied, nor read: the run reads it one slice at a time.
    arrays = [layer_data(layer)] if lazy else \
        [np.array(layer_array(lyr), copy=True) for lyr in sources]
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
        fill = np.asarray(layer_array(mask_layer)) > 0
        if invert_mask:
            fill = ~fill
            if not fill.any():
                raise ValueError(f"the mask {mask_layer.name!r}, read as the pixels to keep, leaves "
                                 "nothing to fill: every pixel has a label. Untick 'mask marks the "
                                 "pixels to keep' if its labels are the pixels to fill")
        mask = layout.fold_mask(fill, f"the mask {mask_layer.name!r}", f"the image {layer.name!r}")
        mask_name = mask_layer.name
    names = axis_names(layer)
    plan = Plan(sources, task, factor, layout, data, mask, slice_index, mask_name,
                mask_layer if task == "inpaint" else None, (None, *names) if extra else names,
                lazy=lazy, output_dtype=output_dtype,
                mask_inverted=bool(invert_mask) and task == "inpaint")
    if psf_layer is not None:
        plan.psf = np.array(layer_array(psf_layer), dtype=np.float64, copy=True)
        plan.psf_name = psf_layer.name
    elif psf_sigma:
        plan.psf_sigma = float(psf_sigma)
    if guide_layer is not None:
        guide = np.array(layer_array(guide_layer), copy=True)
        if layout.is_stack and guide.shape == layer_shape(layer):
            if extra:
                raise ValueError("a guide with one plane per slice cannot be combined with "
                                 "channel layers; use a one-plane guide")
            guide = layout.fold(guide)
        plan.guide, plan.guide_name = guide, guide_layer.name
    if layout.is_stack:
        plan.stack_mode = stack_mode
        if stack_mode == "3d":
            plan.voxel_size = _voxel_size(layer, layout, slice_index, offset=1 if extra else 0)
    return plan


def _lazy_stack(layer, sources, channel_axis, rgb: bool, stack_mode) -> bool:
    """Whether a run reads ``layer`` one slice at a time: its data is lazy (dask, zarr) and it
    is a stack. A lazy single plane is read at once (it is one slice); ValueError for the
    choices that need the whole stack in memory."""
    if not any(is_lazy(layer_data(lyr)) for lyr in sources):
        return False
    if len(sources) > 1:
        raise ValueError(
            f"{', '.join(repr(s.name) for s in sources if is_lazy(layer_data(s)))} "
            "hold(s) a lazy (dask or zarr) array, read one slice at a time; channel layers "
            "cannot be combined with it: restore the layers one by one, or open them as one "
            "layer with a channel axis")
    try:
        layout = from_indices(layer_shape(layer), channel_axis, colour=rgb)
    except ValueError:
        return False  # said with the usual words below
    if not layout.is_stack:
        return False
    if stack_mode == "3d":
        raise ValueError(_LAZY_3D.format(name=layer.name))
    return True


_LAZY_3D = ("{name!r} holds a lazy (dask or zarr) array, read one slice at a time; stack mode "
            "'3d' needs the whole stack in memory at once: choose stack mode 'slices' or 'warm'")


def _voxel_size(layer, layout, slice_index, offset: int) -> tuple[float, float, float]:
    """(Z, Y, X) voxel size of a z-stack from the layer's scale, for stack mode '3d'."""
    if slice_index is not None:
        raise ValueError("stack mode '3d' restores the whole stack at once: choose 'all "
                         "slices' as stack, or stack mode 'slices' or 'warm' for one slice")
    if len(layout.stack) != 1:
        raise ValueError(f"stack mode '3d' restores one Z axis; {layer.name!r} has "
                         f"{len(layout.stack)} stack axes: choose stack mode 'warm' or 'slices'")
    scale = [float(v) for v in layer.scale]
    return tuple(scale[a - offset] for a in (layout.stack[0], layout.y, layout.x))


__all__ = [
    "ALL", "CURRENT", "PSF_TASKS", "Plan", "axis_choice_text", "axis_names",
    "default_channel_axis", "estimate_size", "guide_fits", "is_dip_output", "is_lazy",
    "layer_array", "layer_data", "layer_shape", "make_plan", "mask_fits", "psf_fits",
    "resolve_task", "spatial_shape", "unwrap", "work_size",
]
