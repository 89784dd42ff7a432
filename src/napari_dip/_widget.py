"""The napari dock widget (the entry point ``napari.yaml`` names): layers in, engine events out.

A thin adapter over :mod:`napari_dip.engine`, assembled from the parts in :mod:`napari_dip.gui`:
the settings (:mod:`~napari_dip.gui.controls`), layers to engine work and back
(:mod:`~napari_dip.gui.plan`, :mod:`~napari_dip.gui.results`), the run
(:mod:`~napari_dip.gui.run`) and the comparison (:mod:`~napari_dip.gui.compare`). torch
(through the engine) is imported only when the widget is created or run, so importing this
module, which napari does when it builds its menus, stays cheap.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from magicgui.widgets import Container, Label, PushButton
from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QEvent, QObject

from .gui.compare import Comparison
from .gui.controls import Controls
from .gui.plan import ALL, CURRENT, make_plan
from .gui.results import SUFFIX
from .gui.run import RunController

if TYPE_CHECKING:  # pragma: no cover
    import napari

#: The settings, reachable as attributes of the dock widget (``widget.task.value = "sr"``).
_CONTROL_NAMES = (
    "image", "task", "factor", "mask", "channel_axis", "channel_layers", "channels", "slices",
    "preset", "max_iters", "auto_stop", "device", "seed", "preview_every", "keep_snapshots",
)


class DIPWidget(Container):
    """Deep Image Prior restoration of the selected layer, with live previews."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(scrollable=False, labels=False)
        self._viewer = viewer
        self.controls = Controls(viewer)
        for name in _CONTROL_NAMES:
            setattr(self, name, getattr(self.controls, name))
        self.run_button = PushButton(text="Run")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.comparison = Comparison(viewer, self.controls._image_layers, self._selection)
        self.reference = self.comparison.reference
        self.compare_button = self.comparison.compare_button
        self.metrics = self.comparison.metrics
        self.extend([self.controls, self.run_button, self.status, self.comparison])

        self._run = RunController(viewer, keep_snapshots=lambda: self.keep_snapshots.value)
        self._run.status.connect(self._set_status)
        self._run.running_changed.connect(self._on_running_changed)
        self._run.finished.connect(self._on_finished)
        self.run_button.changed.connect(self._on_run_button)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._on_layers_changed)
        self._undock_filter = _StopWhenUndocked(self)
        self.native.installEventFilter(self._undock_filter)

    # ---- state -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._run.running

    @property
    def last_result(self):
        """The engine's Result of the last finished run."""
        return self._run.last_result

    def _selection(self):
        image = self.image.value
        mask = self.mask.value if self.task.value == "inpaint" else None
        return image, mask

    def _set_status(self, text: str):
        self.status.value = text

    def _on_layers_changed(self, event=None):
        self.reset_choices()
        self.controls.update_visibility()

    # ---- running ---------------------------------------------------------------------------

    def _on_run_button(self, value=None):
        if self.running:
            self.stop()
        else:
            self.run()

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
        plan.kwargs = self.controls.engine_kwargs()
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

    def _on_finished(self, result):
        if self.reference.value is not None:
            self.comparison.update_metrics()

    # ---- comparison ------------------------------------------------------------------------

    def update_metrics(self) -> dict | None:
        return self.comparison.update_metrics()

    def compare(self, enabled: bool = True):
        self.comparison.compare(enabled)


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


__all__ = ["ALL", "CURRENT", "SUFFIX", "DIPWidget", "make_plan"]
