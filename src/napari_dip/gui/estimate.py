"""The estimate of a run's memory and time, shown before Run and kept up to date.

Memory is known at once; the time per iteration is measured by the engine
(:mod:`napari_dip.engine.cost`) on a background thread, a moment after the settings stop
changing, and cached there, so returning to earlier settings costs nothing.
"""

from __future__ import annotations

import threading

from qtpy.QtCore import QTimer

from .controls import text_label

#: Wait this long after the last change of the settings before measuring (ms).
SETTLE_MS = 400


class EstimateView:
    """A full-width label with the engine's :class:`~napari_dip.engine.cost.RunEstimate`.

    ``settings()`` returns the keyword arguments of :func:`~napari_dip.engine.cost.estimate_run`
    for the current choices, or None when there is nothing to estimate."""

    def __init__(self, settings):
        self._settings = settings
        self.label = text_label(
            "Before Run: the memory one fit needs and the time per iteration, measured on "
            "this image's size. How many iterations a run takes is up to the stopping rule; "
            "the cap bounds it.")
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(SETTLE_MS)
        self._timer.timeout.connect(self._measure)
        self._worker = None
        self._idle = threading.Event()
        self._idle.set()
        self._pending = False
        self.enabled = True
        self.closed = False

    def refresh(self, *_):
        """The settings changed: show the memory now, measure the time a moment later."""
        if self.closed:
            return
        try:  # a choice Run would refuse is said here, in Run's words
            kwargs = self._settings()
        except ValueError as exc:
            self.label.value = f"no estimate: {exc}"
            return
        except AttributeError:  # the widget is still being built
            kwargs = None
        if kwargs is None:
            self.label.value = ""
            return
        try:
            from ..engine.cost import estimate_run

            self.label.value = estimate_run(**kwargs, measure=False).describe() + \
                " · measuring the time per iteration…"
        except ValueError as exc:
            self.label.value = f"no estimate: {exc}"
            return
        self._timer.start()

    def _current(self):
        try:
            return self._settings()
        except (ValueError, AttributeError):
            return None

    def _measure(self):
        if self.closed or not self.enabled:
            return
        if self._worker is not None:  # one at a time; measure again when it is done
            self._pending = True
            return
        kwargs = self._current()
        if kwargs is None:
            return
        from superqt.utils import create_worker  # not napari's: no entry in the close dialog

        from ..engine.cost import estimate_run

        def measure():
            try:
                return estimate_run(**kwargs)
            finally:
                self._idle.set()

        self._idle.clear()
        worker = create_worker(measure, _start_thread=False)
        worker.returned.connect(lambda est, k=kwargs: self._show(est, k))
        worker.errored.connect(self._failed)
        worker.finished.connect(self._done)
        self._worker = worker
        worker.start()

    def _show(self, estimate, kwargs):
        if not self.closed and kwargs == self._current():
            self.label.value = estimate.describe()

    def _failed(self, exc):
        if not self.closed:
            self.label.value = f"no time estimate: {exc}"

    def _done(self):
        self._worker = None
        if self._pending and not self.closed:
            self._pending = False
            self._measure()

    def close(self, wait_s: float = 30.0):
        """Stop measuring; waits for a measurement in flight (a few fit steps)."""
        self.closed = True
        try:
            self._timer.stop()
        except RuntimeError:  # Qt already deleted the timer (the application is exiting)
            pass
        self._idle.wait(wait_s)
