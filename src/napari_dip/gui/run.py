"""One restoration at a time: the worker thread, its typed state and the layer updates.

The engine's generator runs in a napari ``thread_worker``; its events arrive here on the main
thread, where the result layers are updated. :class:`RunController` tells the dock what to show
through its signals (``status``, ``running_changed``, ``finished``) and never touches the dock's
widgets itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from napari.utils.notifications import show_error, show_warning
from psygnal import Signal

from .plan import Plan
from .results import (
    SUFFIX, cast_like, failed_slices_text, finished_text, result_layer_kwargs, run_record,
)


@dataclass
class RunState:
    """What one run holds while it goes on (main thread only)."""

    plan: Plan
    buffer: np.ndarray  # the output in the engine's (folded) layout, updated by previews
    outputs: list  # the result layers, one per source layer
    progress: object  # the napari progress bar in the activity dock
    n_slices: int  # slices to restore (0 for a single plane)
    started: float
    slice: int | None = None  # the slice the latest event came from
    done_slices: int = 0
    previews: int = 0
    error: BaseException | None = None
    done: bool = False  # the result (or an error) arrived; later events are stale


@dataclass
class _Failure:
    """Wraps an input or memory error (workers raise an exception that is returned)."""

    error: BaseException


class RunController:
    """Starts, stops and follows a run; owns the worker and the :class:`RunState`."""

    status = Signal(str)
    running_changed = Signal(bool)
    finished = Signal(object)  # the engine's Result, or None when the run failed

    def __init__(self, viewer, keep_snapshots: Callable[[], bool] = lambda: False):
        self._viewer = viewer
        self._keep_snapshots = keep_snapshots
        self._worker = None
        self._cancel: threading.Event | None = None
        self.state: RunState | None = None
        self.last_result = None  # the engine's Result of the last finished run

    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self, plan: Plan):
        from napari.qt.threading import create_worker
        from napari.utils import progress

        work = plan.work
        buffer = plan.upsampled(work)
        outputs = []
        for source, arr in zip(plan.sources, plan.to_layers(buffer)):
            kw = result_layer_kwargs(source, plan, source.name + SUFFIX)
            outputs.append(self._viewer.add_image(arr, **kw))
        self._cancel = threading.Event()
        n_slices = (1 if plan.slice_index is not None else work.shape[0]) if plan.is_stack else 0
        pbar = progress(total=n_slices or 0, desc="napari-dip")
        self.state = RunState(plan, buffer, outputs, pbar, n_slices, time.monotonic())
        worker = create_worker(restoration, plan, self._cancel, _start_thread=False)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.running_changed.emit(True)
        self.status.emit("starting…")
        worker.start()
        return worker

    def stop(self):
        """Ask the run to end after the current step; the best result so far is kept."""
        if self.running:
            self._cancel.set()

    # ---- worker signals (main thread) ------------------------------------------------------

    @staticmethod
    def _show(run: RunState):
        for layer, arr in zip(run.outputs, run.plan.to_layers(run.buffer)):
            layer.data = arr

    def _on_progress(self, event):
        # Qt calls made here (progress bar, layer updates) may process pending events, so the
        # run can end (returned / finished) while this runs: re-check ``done`` after each.
        run = self.state
        if run is None or run.done:
            return
        plan = run.plan
        if event.preview is not None:
            preview = cast_like(event.preview, run.buffer.dtype)
            if plan.is_stack:
                run.buffer[event.slice_index] = preview
            else:
                run.buffer[...] = preview
            run.previews += 1
            self._show(run)
            if self._keep_snapshots() and not run.done:
                tag = f" it {event.iteration}" + (
                    f" slice {event.slice_index}" if plan.is_stack else "")
                for source, arr in zip(plan.sources, plan.to_layers(run.buffer.copy())):
                    kw = result_layer_kwargs(source, plan, source.name + SUFFIX + tag)
                    self._viewer.add_image(arr, visible=False, **kw)
        if run.done:
            return
        pbar = run.progress
        if plan.is_stack:
            step = 0
            if run.slice is not None and event.slice_index != run.slice:
                run.done_slices += 1
                step = 1
            run.slice = event.slice_index
            where = f"slice {run.done_slices + 1}/{event.n_slices}, "
        else:
            total = event.max_iters * event.n_planes
            if pbar.total != total:
                pbar.total = total
            step = max(event.plane * event.max_iters + event.iteration - pbar.n, 0)
            where = ""
        plane = f"channel {event.plane + 1}/{event.n_planes}, " if event.n_planes > 1 else ""
        self.status.emit(
            f"{where}{plane}iteration {event.iteration}/{event.max_iters}, "
            f"loss {event.loss:.4g}"
        )
        if step:
            pbar.update(step)

    def _on_returned(self, value):
        run = self.state
        if run is None:
            return
        run.done = True
        if isinstance(value, _Failure):
            run.error = value.error
            show_error(f"napari-dip: {value.error}")
            for layer in run.outputs:
                if layer in self._viewer.layers:
                    self._viewer.layers.remove(layer)
            self.status.emit(f"failed: {value.error}")
            return
        result = value
        plan = run.plan
        run.buffer = np.asarray(result.image)
        record = run_record(plan, result.record)
        for layer, source, arr in zip(run.outputs, plan.sources, plan.to_layers(run.buffer)):
            if layer not in self._viewer.layers:  # deleted during the run: bring it back
                self._viewer.add_layer(layer)
            layer.data = arr
            layer.metadata = {**dict(source.metadata), "napari_dip": record}
        self.last_result = result
        pbar = run.progress
        if plan.is_stack and result.stop_reason != "user" and pbar.total > pbar.n:
            pbar.update(pbar.total - pbar.n)  # the last slice has no successor to count it
        self.status.emit(finished_text(record, result.stop_reason))
        warning = failed_slices_text(plan, record)
        if warning:  # the finished slices are kept; say which ones were not restored
            show_warning(f"napari-dip: {warning}")
        self.finished.emit(result)

    def _on_errored(self, exc):
        # napari already shows a notification for errors raised in workers
        if self.state is not None:
            self.state.done = True
            self.state.error = exc
            self.status.emit(f"failed: {exc}")

    def _on_finished(self):
        run, self.state = self.state, None
        if run is not None:
            run.progress.close()
        self._worker = None
        self._cancel = None
        self.running_changed.emit(False)


def restoration(plan: Plan, cancel: threading.Event):
    """The worker: yields engine progress (throttled), returns the Result or the user error."""
    from ..engine import DIPMemoryError, restore_iter, restore_stack_iter

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
