"""The napari dock widget (the entry point ``napari.yaml`` names): layers in, engine events out.

A thin adapter over :mod:`napari_dip.engine`, assembled from the parts in :mod:`napari_dip.gui`:

- the settings and which of them apply (:mod:`~napari_dip.gui.controls`),
- layers to engine work and back, with no Qt (:mod:`~napari_dip.gui.plan`,
  :mod:`~napari_dip.gui.results`),
- the estimate shown before Run (:mod:`~napari_dip.gui.estimate`),
- the run: worker, typed state, layer updates (:mod:`~napari_dip.gui.run`),
- the live plot of the fit (:mod:`~napari_dip.gui.plot`),
- the comparison and its metrics (:mod:`~napari_dip.gui.compare`).

torch (through the engine) is imported only when the widget is created or run, and matplotlib
when the first run starts, so importing this module, which napari does when it builds its
menus, stays cheap.
"""

from __future__ import annotations

import functools
import weakref
from typing import TYPE_CHECKING

from magicgui.widgets import Container, PushButton
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QEvent, QObject, QTimer
from superqt import QCollapsible

from .gui.compare import Compared, Comparison
from .gui.controls import AdvancedControls, Controls, on_change, text_label
from .gui.estimate import EstimateView
from .gui.plan import (
    ALL, CURRENT, estimate_size, is_dip_output, make_plan, resolve_task, unwrap,
)
from .gui.plot import FitPlot
from .gui.results import SUFFIX
from .gui.run import RunController

if TYPE_CHECKING:  # pragma: no cover
    import napari

#: Settings reachable as attributes of the dock widget (``widget.task.value = "sr"``).
_CONTROLS = ("image", "task", "factor", "mask", "invert_mask", "composite", "psf", "psf_sigma",
             "guide",
             "channel_axis", "channel_note", "channel_layers", "channels", "slices",
             "stack_mode", "noise_model", "output_dtype", "preset")
_ADVANCED = ("stopping", "refine", "max_iters", "patience", "seed", "preview_every",
             "keep_snapshots", "device", "restore_defaults_button")


def _holder(qt_widget) -> Container:
    """A magicgui container around a plain Qt widget, so it can take its place in the dock."""
    box = Container(scrollable=False, labels=False)
    box.margins = (0, 0, 0, 0)
    box.native.layout().addWidget(qt_widget)
    return box


class DIPWidget(Container):
    """Deep Image Prior restoration of the selected layer, with live previews."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(scrollable=False, labels=False)
        self._viewer = viewer
        self.comparison = Comparison(viewer, self._reference_choices)
        self.controls = Controls(viewer, exclude=lambda lyr: lyr is self.reference.value)
        self.advanced_controls = AdvancedControls(self.controls.task)
        for name in _CONTROLS:
            setattr(self, name, getattr(self.controls, name))
        for name in _ADVANCED:
            setattr(self, name, getattr(self.advanced_controls, name))
        self.reference = self.comparison.reference
        self.compare_button = self.comparison.compare_button
        self.metrics = self.comparison.metrics

        self.advanced = QCollapsible("Advanced")
        self.advanced.addWidget(self.advanced_controls.native)
        self.advanced.setToolTip("seed, stopping rule, second stage, iteration cap, previews, "
                                 "device")
        self._estimate = EstimateView(self._estimate_settings)
        self.estimate = self._estimate.label
        self.run_button = PushButton(text="Run")
        self.run_button.tooltip = "start; while running, Stop keeps the best result so far"
        self.status = text_label()
        self.plot = FitPlot(getattr(viewer, "theme", None))
        self.extend([
            self.controls, _holder(self.advanced), self.estimate, self.run_button, self.status,
            _holder(self.plot.native), self.comparison.reference_row, self.compare_button,
            self.metrics,
        ])

        self._run = RunController(viewer, keep_snapshots=lambda: self.keep_snapshots.value,
                                  rule=self.advanced_controls.rule)
        self._run.status.connect(self._set_status)
        self._run.running_changed.connect(self._on_running_changed)
        self._run.fit_started.connect(self.plot.start)
        self._run.progressed.connect(
            lambda e: self.plot.add(e.iteration, e.loss, e.signal, e.best_iteration))
        self._run.finished.connect(self._on_finished)
        self.slice_finished = self._run.slice_finished
        self.run_button.changed.connect(self._on_run_button)
        self.restore_defaults_button.changed.connect(self.restore_defaults)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        for widget in (self.image, self.task, self.factor, self.channels, self.channel_layers,
                       self.slices, self.stack_mode, self.preset, self.max_iters, self.device,
                       self.psf, self.psf_sigma):
            widget.changed.connect(self._estimate.refresh)
        for combo in (self.channel_axis, self.stopping):
            on_change(combo, self._estimate.refresh)
        self._teardown = _StopWhenUndocked(self)
        self.native.installEventFilter(self._teardown)
        self.native.destroyed.connect(functools.partial(_shutdown, weakref.ref(self)))
        self._estimate.refresh()

    # ---- state -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._run.running

    @property
    def last_result(self):
        """The engine's Result of the last run that kept a result."""
        return self._run.last_result

    @property
    def result_layers(self) -> list:
        """The result layers of the last run that kept a result (objects, not names)."""
        return list(self._run.result_layers)

    @property
    def controller(self) -> RunController:
        """The run controller (its signals: status, progressed, slice_finished, finished)."""
        return self._run

    @property
    def progress_bar(self):
        """The current run's bar in napari's activity dock (None when idle)."""
        return self._run.progress_bar

    def _reference_choices(self, widget=None):
        from napari.layers import Image

        return [(lyr.name, unwrap(lyr)) for lyr in self._viewer.layers
                if isinstance(lyr, Image) and not is_dip_output(lyr)]

    def _set_status(self, text: str):
        self.status.value = text

    def _report(self, message: str, warning: bool = False):
        """A notification (napari shows its first line), and the whole of it in the dock."""
        (show_warning if warning else show_error)(f"napari-dip: {message}")
        self._run.status.emit(("warning: " if warning else "error: ") + message)

    def _on_layers_changed(self, event=None):
        self.controls.refresh()
        self.reference.reset_choices()
        self._estimate.refresh()

    def _on_layer_removed(self, event):
        # Reacted to a moment later: closing the viewer removes every layer before it
        # cancels the run, and that is no reason for warnings.
        QTimer.singleShot(0, functools.partial(self._run.layer_removed, unwrap(event.value)))
        self._on_layers_changed()

    def _estimate_settings(self):
        """Keyword arguments of engine.cost.estimate_run for the current choices."""
        layer = self.image.value
        if layer is None:
            return None
        extra = self.controls.plan_kwargs()
        size = estimate_size(  # stack mode '3d': one fit of the whole stack
            layer, channel_axis=self.channel_axis.value,
            channel_layers=list(self.channel_layers.value), slices=self.slices.value,
            channels=self.channels.value, stack_mode=extra["stack_mode"])
        try:  # a PSF makes 'denoise' a deconvolution
            task = resolve_task(self.task.value, extra["psf_layer"], extra["psf_sigma"])
        except ValueError:  # said when Run is pressed
            task = self.task.value
        return dict(**size, task=task, preset=self.preset.value, device=self.device.value,
                    factor=int(self.factor.value), max_iters=self.max_iters.value or None,
                    stopping=self.stopping.value, threads=_threads())

    def restore_defaults(self, value=None):
        """Every setting back to its default (the chosen layers stay)."""
        self.controls.restore_defaults()
        self.advanced_controls.restore_defaults()

    # ---- running ---------------------------------------------------------------------------

    def _on_run_button(self, value=None):
        if self.running:
            self.stop()
        else:
            self.run()

    def run(self):
        """Start a restoration; returns the worker, or None if refused (already running or
        invalid input, reported as a notification and in the status line)."""
        if self.running:
            self._report("a restoration is already running in this widget; press Stop (or "
                         "wait for it to finish) before starting another.", warning=True)
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
                current_point=point, **self.controls.plan_kwargs(),
            )
        except ValueError as exc:
            self._report(str(exc))
            return None
        plan.kwargs = {**self.controls.engine_kwargs(), **self.advanced_controls.engine_kwargs(),
                       "threads": _threads()}
        self.comparison.set_layers(None)
        self.comparison.clear_metrics()
        return self._run.start(plan)

    def stop(self):
        """Ask the run to end after the current step; the best result so far is kept."""
        if not self.running:
            return
        self._run.stop()
        self.run_button.text = "Stopping…"
        self.run_button.enabled = False

    def _on_running_changed(self, running: bool):
        self.run_button.text = "Stop" if running else "Run"
        self.run_button.enabled = True
        self.controls.enabled = not running
        self.advanced.setEnabled(not running)
        self._estimate.enabled = not running
        if not running:
            self._estimate.refresh()

    def _on_finished(self, result, outcome):
        """The run kept a result: the plot shows its last fit in full, the comparison and the
        metrics follow its layers."""
        layers, plan = self._run.result_layers, self._run.last_plan
        if result is None or not layers or plan is None:
            return
        record = layers[0].metadata.get("napari_dip", {})
        history = result.history  # nested: slices, tiles, channel groups; the last fit's steps
        while history and isinstance(history[-1], list):
            history = history[-1]
        plane = (record.get("planes") or result.record.get("planes") or [{}])[-1]
        slices = [e for e in record.get("slices", []) if e.get("planes")]
        if plan.is_stack and slices:  # (a 3-D stack is one fit, with no slices)
            plane = slices[-1]["planes"][-1]
        kept = plane.get("best_iteration")
        if history:
            self.plot.show_history(history, kept if isinstance(kept, int) else None,
                                   target=(plane.get("stopping") or {}).get("target"))
        self.comparison.set_layers(Compared(list(plan.sources), list(layers), plan.mask_layer))

    # ---- comparison ------------------------------------------------------------------------

    def update_metrics(self) -> dict | None:
        return self.comparison.update_metrics()

    def compare(self, enabled: bool = True):
        self.comparison.compare(enabled)


def _threads() -> int:
    """CPU threads for a run: chosen from the machine's load, leaving a core to napari."""
    from .engine.devices import choose_threads

    return choose_threads(reserve=1)


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


def _shutdown(widget_ref, *_):
    """The dock widget is being deleted (with its viewer): end the threads it started."""
    widget = widget_ref()
    if widget is not None:
        widget._estimate.close()
        widget._run.shutdown()


__all__ = ["ALL", "CURRENT", "SUFFIX", "DIPWidget", "make_plan"]
