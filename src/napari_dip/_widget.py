"""The napari dock widget: layers in, engine events out.

A thin adapter over :mod:`napari_dip.engine`: it turns the chosen layers into arrays, runs the
engine's generator in a napari ``thread_worker`` and updates one output layer on the main
thread. torch (through the engine) is imported only when the widget is created or run, so
importing this module, which napari does when it builds its menus, stays cheap.

Mask rule: in the Labels layer, pixels with a label > 0 are the ones to fill; label 0 is known.
A 2-D mask is shared by every slice of a stack.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    Label,
    PushButton,
    Select,
    SpinBox,
)
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject

from .choices import CHANNELS, PRESET, SR_FACTOR, TASK
from .engine.axes import AxisLayout, from_indices
from .metrics import data_range_of, psnr, ssim

if TYPE_CHECKING:  # pragma: no cover
    import napari

SUFFIX = " [dip]"
CURRENT, ALL = "current slice", "all slices"
STOP_REASON_TEXT = {
    "minimum": "automatic stop", "no-minimum": "automatic stop found no clear minimum",
    "cap": "iteration cap", "user": "stopped by the user",
}


# --------------------------------------------------------------------------------------------
# Layers -> engine arrays and back


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
    kwargs: dict = field(default_factory=dict)

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


def _layer_array(layer) -> np.ndarray:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return np.asarray(data)


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


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
    arrays = [np.array(_layer_array(lyr), copy=True) for lyr in sources]
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

    mask = None
    if task == "inpaint":
        if mask_layer is None:
            raise ValueError("inpainting needs a Labels layer as the mask (label > 0 = fill)")
        mask = layout.fold_mask(_layer_array(mask_layer) > 0, f"the mask {mask_layer.name!r}",
                                f"the image {layer.name!r}")
    return Plan(sources, task, factor, layout, data, mask, slice_index)


def _layer_kwargs(source, plan: Plan, name: str) -> dict:
    """Display and world metadata for an output layer, taken from its source layer."""
    scale = np.array(source.scale, dtype=float)
    translate = np.array(source.translate, dtype=float)
    if plan.task == "sr":
        f = plan.factor
        nd = len(scale)
        for ax in (nd - 2, nd - 1):
            # output pixel j sits at input coordinate (j + 0.5) / f - 0.5
            translate[ax] -= scale[ax] * (f - 1) / (2 * f)
            scale[ax] /= f
    kw = {
        "name": name,
        "scale": scale,
        "translate": translate,
        "rotate": source.rotate,
        "shear": source.shear,
        "units": source.units,
        "axis_labels": source.axis_labels,
        "blending": source.blending,
        "rgb": bool(source.rgb),
    }
    if not source.rgb:
        kw["colormap"] = source.colormap
        kw["contrast_limits"] = source.contrast_limits
        kw["gamma"] = source.gamma
    return kw


# --------------------------------------------------------------------------------------------
# The widget


class DIPWidget(Container):
    """Deep Image Prior restoration of the selected layer, with live previews."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(scrollable=False)
        self._viewer = viewer
        self._worker = None
        self._cancel: threading.Event | None = None
        self._run: dict | None = None
        self._compare_state: dict | None = None
        self.last_result = None  # the engine's Result of the last finished run

        layers = self._image_layers
        self.image = ComboBox(label="image", choices=layers, nullable=False)
        self.task = ComboBox(label="task", choices=TASK.menu(), value=TASK.default)
        self.factor = ComboBox(label="SR factor", choices=SR_FACTOR.menu(),
                               value=SR_FACTOR.default)
        self.mask = ComboBox(
            label="mask (labels > 0)", choices=self._labels_layers, nullable=True, value=None,
            tooltip="Labels layer; pixels with a label > 0 are filled. 2-D masks apply to every "
            "slice.",
        )
        self.channel_axis = ComboBox(
            label="channel axis", choices=self._channel_axis_choices, nullable=False,
            tooltip="an axis of the image holding channels (RGB layers are handled as colour)",
        )
        self.channel_layers = Select(
            label="channel layers", choices=self._channel_layer_choices,
            tooltip="other single-channel layers of the same shape (e.g. from channel_axis=) to "
            "restore together with the image, as channels",
        )
        self.channel_layers.native.setMaximumHeight(70)
        self.channels = ComboBox(label="channels", choices=CHANNELS.menu(),
                                 value=CHANNELS.default)
        self.slices = ComboBox(label="stack", choices=[CURRENT, ALL], value=CURRENT)
        self.preset = ComboBox(
            label="preset", choices=[(v, v) for v in PRESET.values], value=PRESET.default,
            tooltip="\n".join(f"{v}: {lab}" for v, lab in PRESET.items),
        )
        self.max_iters = SpinBox(
            label="max iterations", min=0, max=1_000_000, value=0,
            tooltip="0 = the preset's cap",
        )
        self.auto_stop = CheckBox(text="automatic stop", value=True)
        self.device = ComboBox(label="device", choices=self._device_choices(), value="auto")
        self.seed = SpinBox(label="seed", min=-1, max=2**31 - 2, value=-1,
                            tooltip="-1 = random (the seed used is recorded)")
        self.preview_every = SpinBox(label="preview every", min=1, max=100_000, value=25)
        self.keep_snapshots = CheckBox(text="keep snapshots as layers", value=False)
        self.run_button = PushButton(text="Run")
        self.status = Label(value="")
        self.reference = ComboBox(
            label="reference", choices=self._image_layers, nullable=True, value=None,
            tooltip="ground truth for PSNR / SSIM",
        )
        self.compare_button = PushButton(text="Compare side by side")
        self.metrics = Label(value="")
        for label in (self.status, self.metrics):
            label.native.setWordWrap(True)

        self.extend([
            self.image, self.task, self.factor, self.mask, self.channel_axis,
            self.channel_layers, self.channels, self.slices, self.preset, self.max_iters,
            self.auto_stop, self.device, self.seed, self.preview_every, self.keep_snapshots,
            self.run_button, self.status, self.reference, self.compare_button, self.metrics,
        ])
        self.run_button.changed.connect(self._on_run_button)
        self.compare_button.changed.connect(self._on_compare_button)
        self.image.changed.connect(self._on_image_changed)
        self.task.changed.connect(self._on_task_changed)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._on_layers_changed)
        self._update_visibility()
        self._undock_filter = _StopWhenUndocked(self)
        self.native.installEventFilter(self._undock_filter)

    # ---- choices ---------------------------------------------------------------------------

    def _image_layers(self, widget=None):
        from napari.layers import Image

        return [(lyr.name, lyr) for lyr in self._viewer.layers if isinstance(lyr, Image)]

    def _labels_layers(self, widget=None):
        from napari.layers import Labels

        return [(lyr.name, lyr) for lyr in self._viewer.layers if isinstance(lyr, Labels)]

    def _selected_image(self):
        try:
            return self.image.value
        except AttributeError:  # during construction
            return None

    def _channel_axis_choices(self, widget=None):
        choices = [("none", None)]
        layer = self._selected_image()
        if layer is None or layer.rgb:
            return choices
        shape = _layer_array(layer).shape
        labels = list(getattr(layer, "axis_labels", ()) or ())
        for i in range(len(shape) - 2):
            label = labels[i] if i < len(labels) else str(i)
            choices.append((f"{i}: {label} ({shape[i]})", i))
        return choices

    def _channel_layer_choices(self, widget=None):
        from napari.layers import Image

        layer = self._selected_image()
        if layer is None or layer.rgb:
            return []
        shape = layer.data.shape
        return [
            (lyr.name, lyr) for lyr in self._viewer.layers
            if isinstance(lyr, Image) and lyr is not layer and not lyr.rgb
            and lyr.data.shape == shape and not lyr.name.endswith(SUFFIX)
        ]

    @staticmethod
    def _device_choices():
        from .engine import available_devices

        return ["auto", *available_devices()]

    def _on_layers_changed(self, event=None):
        self.reset_choices()
        self._update_visibility()

    def _on_image_changed(self, value=None):
        self.channel_axis.reset_choices()
        self.channel_layers.reset_choices()
        self._update_visibility()

    def _on_task_changed(self, value=None):
        self._update_visibility()

    def _update_visibility(self):
        """Show only the options that apply to the chosen layer and task."""
        layer = self._selected_image()
        ndim = 0 if layer is None else _layer_array(layer).ndim
        rgb = bool(layer is not None and layer.rgb)
        self.factor.visible = self.task.value == "sr"
        self.mask.visible = self.task.value == "inpaint"
        self.channel_axis.visible = len(self.channel_axis.choices) > 1
        self.channel_layers.visible = bool(self.channel_layers.choices)
        self.channels.visible = rgb or self.channel_axis.visible or self.channel_layers.visible
        self.slices.visible = ndim > (3 if rgb else 2)

    # ---- running ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._worker is not None

    def _on_run_button(self, value=None):
        if self.running:
            self.stop()
        else:
            self.run()

    def _engine_kwargs(self) -> dict:
        return {
            "preset": self.preset.value,
            "device": self.device.value,
            "seed": None if self.seed.value < 0 else int(self.seed.value),
            "channels": self.channels.value,
            "max_iters": self.max_iters.value or None,
            "stopping": None if self.auto_stop.value else "none",
            "preview_every": int(self.preview_every.value),
        }

    def run(self):
        """Start a restoration; returns the worker, or None if refused (already running or
        invalid input, reported as a notification)."""
        if self.running:
            show_warning(
                "napari-dip: a restoration is already running in this widget; press Stop (or "
                "wait for it to finish) before starting another."
            )
            return None
        layer = self.image.value
        point = None
        if layer is not None:
            try:
                point = layer.world_to_data(self._viewer.dims.point)
            except Exception:  # noqa: BLE001 - any mismatch: fall back to the first slice
                point = None
        try:
            plan = make_plan(
                layer, task=self.task.value, factor=int(self.factor.value),
                mask_layer=self.mask.value, channel_axis=self.channel_axis.value,
                channel_layers=list(self.channel_layers.value), slices=self.slices.value,
                current_point=point,
            )
        except ValueError as exc:
            show_error(f"napari-dip: {exc}")
            return None
        plan.kwargs = self._engine_kwargs()
        return self._start(plan)

    def _start(self, plan: Plan):
        from napari.qt.threading import create_worker
        from napari.utils import progress

        work = plan.work
        buffer = plan.upsampled(work)
        outputs = []
        for source, arr in zip(plan.sources, plan.to_layers(buffer)):
            kw = _layer_kwargs(source, plan, source.name + SUFFIX)
            outputs.append(self._viewer.add_image(arr, **kw))
        self._cancel = threading.Event()
        n_slices = (1 if plan.slice_index is not None else work.shape[0]) if plan.is_stack else 0
        pbar = progress(total=n_slices or 0, desc="napari-dip")
        self._run = {
            "plan": plan, "buffer": buffer, "outputs": outputs, "progress": pbar,
            "n_slices": n_slices, "slice": None, "done_slices": 0, "previews": 0,
            "started": time.monotonic(), "error": None, "done": False,
        }
        worker = create_worker(_generate, plan, self._cancel, _start_thread=False)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run_button.text = "Stop"
        self.status.value = "starting…"
        worker.start()
        return worker

    def stop(self):
        """Ask the run to end after the current step; the best result so far is kept."""
        if not self.running:
            return
        self._cancel.set()
        self.run_button.text = "Stopping…"
        self.run_button.enabled = False

    # ---- worker signals (main thread) ------------------------------------------------------

    @staticmethod
    def _show(run: dict):
        for layer, arr in zip(run["outputs"], run["plan"].to_layers(run["buffer"])):
            layer.data = arr

    def _on_progress(self, event):
        # Qt calls made here (progress bar, layer updates) may process pending events, so the
        # run can end (returned / finished) while this runs: re-check ``done`` after each.
        run = self._run
        if run is None or run["done"]:
            return
        plan = run["plan"]
        if event.preview is not None:
            preview = _cast_like(event.preview, run["buffer"].dtype)
            if plan.is_stack:
                run["buffer"][event.slice_index] = preview
            else:
                run["buffer"][...] = preview
            run["previews"] += 1
            self._show(run)
            if self.keep_snapshots.value and not run["done"]:
                tag = f" it {event.iteration}" + (
                    f" slice {event.slice_index}" if plan.is_stack else "")
                for source, arr in zip(plan.sources, plan.to_layers(run["buffer"].copy())):
                    kw = _layer_kwargs(source, plan, source.name + SUFFIX + tag)
                    self._viewer.add_image(arr, visible=False, **kw)
        if run["done"]:
            return
        pbar = run["progress"]
        if plan.is_stack:
            step = 0
            if run["slice"] is not None and event.slice_index != run["slice"]:
                run["done_slices"] += 1
                step = 1
            run["slice"] = event.slice_index
            where = f"slice {run['done_slices'] + 1}/{event.n_slices}, "
        else:
            total = event.max_iters * event.n_planes
            if pbar.total != total:
                pbar.total = total
            step = max(event.plane * event.max_iters + event.iteration - pbar.n, 0)
            where = ""
        plane = f"channel {event.plane + 1}/{event.n_planes}, " if event.n_planes > 1 else ""
        self.status.value = (
            f"{where}{plane}iteration {event.iteration}/{event.max_iters}, "
            f"loss {event.loss:.4g}"
        )
        if step:
            pbar.update(step)

    def _on_returned(self, value):
        run = self._run
        if run is None:
            return
        run["done"] = True
        if isinstance(value, _Failure):
            value = value.error
            run["error"] = value
            show_error(f"napari-dip: {value}")
            for layer in run["outputs"]:
                if layer in self._viewer.layers:
                    self._viewer.layers.remove(layer)
            self.status.value = f"failed: {value}"
            return
        result = value
        plan = run["plan"]
        run["buffer"] = np.asarray(result.image)
        record = dict(result.record)
        record["stop_iteration"] = record.get("iterations")
        record["widget"] = {
            "input_layers": [s.name for s in plan.sources],
            "mask_layer": None if self.mask.value is None or plan.task != "inpaint"
            else self.mask.value.name,
            "channel_axis": None if plan.layout.colour else plan.layout.channel,
            "stack": None if not plan.is_stack else (
                ALL if plan.slice_index is None else CURRENT),
            "slice_index": None if plan.slice_index is None
            else list(plan.layout.slice_position(plan.slice_index)),
            **plan.kwargs,
        }
        for layer, source, arr in zip(run["outputs"], plan.sources,
                                      plan.to_layers(run["buffer"])):
            if layer not in self._viewer.layers:  # deleted during the run: bring it back
                self._viewer.add_layer(layer)
            layer.data = arr
            layer.metadata = {**dict(source.metadata), "napari_dip": record}
        self.last_result = result
        pbar = run["progress"]
        if plan.is_stack and result.stop_reason != "user" and pbar.total > pbar.n:
            pbar.update(pbar.total - pbar.n)  # the last slice has no successor to count it
        stopped = STOP_REASON_TEXT.get(result.stop_reason, result.stop_reason)
        self.status.value = (
            f"done ({stopped}): {record['iterations']} iterations, best at "
            f"{record['best_iteration']}, seed {record.get('seed')}"
        ) + _slice_notes(record)
        failed = [e for e in record.get("slices", []) if "error" in e]
        if failed:  # the finished slices are kept; say which ones were not restored
            where = "; ".join(f"slice {_slice_name(plan, e['slice'])}: {e['error']}"
                              for e in failed)
            show_warning(f"napari-dip: {len(failed)} slice(s) could not be restored and were "
                         f"left as they were ({where}); the other slices were kept")
        if self.reference.value is not None:
            self.update_metrics()

    def _on_errored(self, exc):
        # napari already shows a notification for errors raised in workers
        if self._run is not None:
            self._run["done"] = True
            self._run["error"] = exc
            self.status.value = f"failed: {exc}"

    def _on_finished(self):
        run, self._run = self._run, None
        if run is not None:
            run["progress"].close()
        self._worker = None
        self._cancel = None
        self.run_button.text = "Run"
        self.run_button.enabled = True

    # ---- comparison ------------------------------------------------------------------------

    def _result_layers(self):
        image = self.image.value
        if image is None:
            return []
        name = image.name + SUFFIX
        return [lyr for lyr in self._viewer.layers if lyr.name == name]

    def update_metrics(self) -> dict | None:
        """PSNR and SSIM of the input and the result against the reference layer."""
        ref_layer, image = self.reference.value, self.image.value
        results = self._result_layers()
        if ref_layer is None or image is None or not results:
            self.metrics.value = ""
            return None
        ref = _layer_array(ref_layer)
        rng = data_range_of(ref)
        rgb = bool(image.rgb)
        out = {}
        for key, arr in (("input", _layer_array(image)), ("result", _layer_array(results[-1]))):
            if arr.shape != ref.shape:
                out[key] = None
                continue
            out[key] = {"psnr": psnr(ref, arr, rng), "ssim": ssim(ref, arr, rng, rgb)}
        text = [
            f"{k}: " + ("shape differs" if v is None
                        else f"PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.3f}")
            for k, v in out.items()
        ]
        self.metrics.value = f"vs {ref_layer.name!r}:\n" + "\n".join(text)
        results[-1].metadata = {**dict(results[-1].metadata), "napari_dip_metrics": {
            "reference": ref_layer.name, **out}}
        return out

    def _on_compare_button(self, value=None):
        self.compare(self._compare_state is None)

    def compare(self, enabled: bool = True):
        """Show input, mask, result (and reference) side by side with linked contrast."""
        from napari.experimental import link_layers, unlink_layers

        grid = self._viewer.canvas.grid
        if not enabled:
            state, self._compare_state = self._compare_state, None
            if state is None:
                return
            for group in state["linked"]:
                unlink_layers(group)
            for layer, visible in state["visible"].items():
                if layer in self._viewer.layers:
                    layer.visible = visible
            grid.enabled = state["grid"]
            self.compare_button.text = "Compare side by side"
            return
        image, results = self.image.value, self._result_layers()
        if image is None or not results:
            show_info("napari-dip: run a restoration first, then compare")
            return
        shown = [image]
        if self.mask.value is not None and self.task.value == "inpaint":
            shown.append(self.mask.value)
        shown.append(results[-1])
        if self.reference.value is not None:
            shown.append(self.reference.value)
        state = {
            "visible": {lyr: lyr.visible for lyr in self._viewer.layers},
            "grid": grid.enabled, "linked": [],
        }
        for layer in self._viewer.layers:
            layer.visible = any(layer is s for s in shown)
        group = [lyr for lyr in shown if lyr.__class__ is image.__class__]
        if len(group) > 1:
            for lyr in group[1:]:
                lyr.contrast_limits = image.contrast_limits
            link_layers(group, ("contrast_limits",))
            state["linked"].append(group)
        grid.stride = 1
        grid.enabled = True
        self._compare_state = state
        self.compare_button.text = "End comparison"
        self.update_metrics()
        self._viewer.reset_view()


def _slice_name(plan: Plan, flat: int) -> str:
    """A folded slice index as the layer's stack coordinates (e.g. '3' or '(1, 4)')."""
    pos = plan.layout.slice_position(flat)
    return str(pos[0]) if len(pos) == 1 else str(pos)


def _slice_notes(record: dict) -> str:
    """', 2 slice(s) skipped (constant)' for the status line."""
    skipped = [e for e in record.get("slices", []) if "skipped" in e]
    if not skipped:
        return ""
    reasons = sorted({e["skipped"] for e in skipped})
    return f", {len(skipped)} slice(s) passed through ({', '.join(reasons)})"


class _StopWhenUndocked(QObject):
    """Stops the run when the widget is taken out of the window (its dock closed): napari then
    only unparents it, so nothing else would end a run the user can no longer see."""

    def __init__(self, widget: DIPWidget):
        super().__init__(widget.native)
        self._widget = weakref.ref(widget)

    def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.ParentChange and obj.parent() is None:
            widget = self._widget()
            if widget is not None and widget.running:
                widget.stop()
        return False


@dataclass
class _Failure:
    """Wraps an input or memory error (workers raise an exception that is returned)."""

    error: BaseException


def _generate(plan: Plan, cancel: threading.Event):
    """The worker: yields engine progress (throttled), returns the Result or the user error."""
    from .engine import DIPMemoryError, restore_iter, restore_stack_iter

    try:
        kwargs = dict(mask=plan.mask, channel_axis=plan.layout.plane_channel_axis,
                      factor=plan.factor, cancel=cancel,
                      name=f"layer {plan.sources[0].name!r}", **plan.kwargs)
        if plan.is_stack:
            events = restore_stack_iter(
                plan.work, plan.task,
                slices=None if plan.slice_index is None else [plan.slice_index], **kwargs,
            )
        else:
            events = restore_iter(plan.work, plan.task, **kwargs)
        last, where = 0.0, None
        for event in events:
            if not hasattr(event, "iteration"):  # the Result
                return event
            now = time.monotonic()
            here = (event.slice_index, event.plane)
            if event.preview is not None or here != where or now - last > 0.1:
                last, where = now, here
                yield event
    except (ValueError, DIPMemoryError) as exc:
        return _Failure(exc)  # returned, not raised: a user error, not a crash
    raise RuntimeError("the restoration ended without a result")  # pragma: no cover


__all__ = ["DIPWidget", "make_plan"]
