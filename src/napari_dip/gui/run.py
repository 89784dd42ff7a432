"""One restoration at a time: the worker thread, its typed state and the layer updates.

The engine's generator runs in a napari ``thread_worker``; its events arrive here on the main
thread, where the result layers are made and updated. :class:`RunController` tells the dock
what to show through its signals and never touches the dock's widgets itself.

The result layer appears with the network's first estimate (a preview), not before: until then
the input stays as it was. While the result is shown, the inputs are hidden (and shown again
afterwards), and the result is drawn opaque on top. When the run ends, the layer's name, the
status and its metadata say what it holds (:func:`.results.describe_outcome`).
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from napari.qt.threading import GeneratorWorker
from napari.utils.notifications import show_error, show_warning
from psygnal import Signal
from qtpy.QtCore import QTimer

from .plan import METADATA_KEY, Plan, unwrap
from .results import (
    SUFFIX, Outcome, cast_like, describe_outcome, failed_slices_text, fit_parts, preparing_text,
    progress_text, result_layer_kwargs, run_record,
)

#: Progress events reach the main thread at most this often (previews and new fits always).
EVENT_INTERVAL_S = 0.1
#: How long closing the viewer waits for the worker to leave the engine (one fit step).
SHUTDOWN_WAIT_S = 60.0


@dataclass
class RunState:
    """What one run holds while it goes on (main thread only, but for a lazy run's store,
    which the worker makes before it yields any event: :func:`open_store`)."""

    plan: Plan
    cancel: threading.Event
    buffer: np.ndarray | None  # the output in the engine's (folded) layout, in the result's
    # dtype; a lazy run's store (None until the worker makes it)
    started: float  # time.monotonic() at Run
    progress: object = None  # the napari progress bar in the activity dock
    outputs: list = field(default_factory=list)  # result layers, made at the first estimate
    hidden_inputs: dict = field(default_factory=dict)  # input layer -> its visibility before
    removed_outputs: list = field(default_factory=list)  # result layers the user deleted
    fit: tuple | None = None  # (slice, channel group) of the latest event
    last_event: object = None  # the latest Progress (for the status line)
    slices_finished: list[int] = field(default_factory=list)
    previews: int = 0  # estimates of the network received (tiles' included)
    stop_cause: str | None = None  # why the run was asked to stop: 'user', 'input removed', ...
    done: bool = False  # the result (or an error) arrived; later events are stale
    queue: list = field(default_factory=list)  # events not handled yet (see _on_progress)
    handling: bool = False  # an event is being handled
    store_path: str | None = None  # a lazy run's result store on disk (``buffer`` is its array)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class _NamedTask(functools.partial):
    """The worker's function with a name for people: napari's task list (and its dialog on
    closing the window) shows ``str(function)``."""

    label = "Deep Image Prior restoration"

    def __str__(self):
        return self.label

    __repr__ = __str__


class RestorationWorker(GeneratorWorker):
    """napari's generator worker that says when it has left the engine, and lets the
    controller react when napari cancels it (closing the window calls ``quit``)."""

    def __init__(self, func, *args, **kwargs):
        super().__init__(func, *args, **kwargs)
        self.ended = threading.Event()
        self.on_quit = None

    def work(self):
        try:
            return super().work()
        finally:
            self._gen.close()  # an aborted generator is closed here, in its own thread
            self.ended.set()

    def quit(self):
        super().quit()
        callback, self.on_quit = self.on_quit, None
        if callback is not None:
            callback()


class RunController:
    """Starts, stops and follows a run; owns the worker and the :class:`RunState`."""

    status = Signal(str)
    running_changed = Signal(bool)
    fit_started = Signal(str, str)  # title, stopping rule: a new slice or channel group
    progressed = Signal(object)  # a Progress event
    slice_finished = Signal(int)  # the folded index of a finished slice
    finished = Signal(object, object)  # the engine's Result (None if it failed), the Outcome

    def __init__(self, viewer, keep_snapshots=lambda: False, rule=lambda: None):
        self._viewer = viewer
        self._keep_snapshots = keep_snapshots
        self._rule = rule  # () -> the stopping rule a run uses (for the plot)
        self._worker: RestorationWorker | None = None
        self._closed = False
        self.state: RunState | None = None
        self.last_result = None  # the engine's Result of the last run that kept a result
        self.result_layers: list = []  # the result layers of that run (objects, not names)
        self.last_plan: Plan | None = None  # the plan of that run
        self._clock = QTimer()
        self._clock.setInterval(1000)
        self._clock.timeout.connect(self._tick)

    @property
    def running(self) -> bool:
        return self._worker is not None

    @property
    def progress_bar(self):
        return None if self.state is None else self.state.progress

    def start(self, plan: Plan) -> RestorationWorker:
        from napari.qt.threading import create_worker
        from napari.utils import progress

        n = len(plan.slices_asked)
        # A lazy (dask/zarr) stack is read a slice at a time and written into a store that the
        # worker makes after its first pass (:func:`open_store`); nothing is read here.
        state = RunState(plan, threading.Event(), None if plan.lazy else plan.upsampled(plan.work),
                         time.monotonic())
        # A bar that counts slices (when there are several), never iterations: the stopping
        # rule, not the cap, decides how many there will be.
        state.progress = progress(total=n if n > 1 else 0, desc="napari-dip: preparing")
        self.state = state
        names = ", ".join(repr(s.name) for s in plan.sources)
        task = _NamedTask(restoration, plan, state.cancel,
                          functools.partial(open_store, state) if plan.lazy else None)
        task.label = f"Deep Image Prior restoration of {names}"
        worker = create_worker(task, _worker_class=RestorationWorker, _start_thread=False)
        worker.on_quit = self.shutdown
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.running_changed.emit(True)
        self.status.emit(preparing_text(0))
        self._clock.start()
        worker.start()
        return worker

    def stop(self, cause: str = "user"):
        """Ask the run to end after the current step; the best result so far is kept."""
        if self.running and self.state is not None:
            self.state.stop_cause = self.state.stop_cause or cause
            self.state.cancel.set()

    def layer_removed(self, layer):
        """A layer left the viewer: an input or a result of the run stops it (and says so)."""
        run = self.state
        layer = unwrap(layer)
        if run is None or run.done:
            return
        if any(layer is s for s in run.plan.sources):
            run.hidden_inputs.pop(layer, None)
            show_warning(
                f"napari-dip: the input layer {layer.name!r} was removed during the run, so the "
                "run stops after the current step; what it restored so far is kept."
            )
            self.stop("input removed")
        elif any(layer is o for o in run.outputs):
            run.removed_outputs.append(layer)
            show_warning(
                f"napari-dip: the result layer {layer.name!r} was removed during the run, so "
                "the run stops and that result is not brought back."
            )
            self.stop("result removed")

    def shutdown(self):
        """The viewer (or the widget) is closing: stop the run, let no callback reach the
        dock again, and wait until the worker thread has left the engine (one step), so that
        no thread is left running into an exiting interpreter."""
        self._closed = True
        try:
            self._clock.stop()
        except RuntimeError:  # Qt already deleted the timer (the application is exiting)
            pass
        worker, run = self._worker, self.state
        self._worker = self.state = None
        if worker is None:
            return
        if run is not None:
            run.cancel.set()
            run.done = True
            if run.progress is not None:
                run.progress.close()
        for signal, slot in ((worker.yielded, self._on_progress),
                             (worker.returned, self._on_returned),
                             (worker.errored, self._on_errored),
                             (worker.finished, self._on_finished)):
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass
        worker.on_quit = None
        worker.quit()
        worker.ended.wait(SHUTDOWN_WAIT_S)
        deadline = time.monotonic() + 5
        while worker.is_running and time.monotonic() < deadline:
            time.sleep(0.005)  # run() emits its last signals after leaving the generator

    # ---- worker signals (main thread) ------------------------------------------------------

    def _tick(self):
        run = self.state
        if run is None or run.done or self._closed:
            return
        self.status.emit(self._status_text(run))

    def _status_text(self, run: RunState) -> str:
        if run.last_event is None:
            return preparing_text(run.elapsed())
        return progress_text(run.plan, run.last_event, run.elapsed(), len(run.slices_finished))

    def _on_progress(self, event):
        """A progress event. Qt calls made while handling it (napari's progress bar, layer
        updates) may process pending events, which can deliver the next event, or the result,
        in the middle: events are queued and handled one after another, and ``done`` is checked
        again after each call that can let the result in."""
        run = self.state
        if self._closed or run is None or run.done:
            return
        run.queue.append(event)
        if run.handling:
            return
        run.handling = True
        try:
            while run.queue and not run.done and not self._closed:
                pending, run.queue = run.queue, []
                # of a burst, every preview and finished slice counts; only the latest of the
                # other events does (the status and the plot show the newest state)
                last = pending[-1]
                for item in pending:
                    if item is last or item.preview is not None or item.final:
                        self._handle(run, item)
                    if run.done:
                        break
        finally:
            run.handling = False

    def _handle(self, run: RunState, event):
        plan = run.plan
        fit = (event.slice_index, getattr(event, "tile_index", None), event.plane)
        if fit != run.fit and not event.final:
            run.fit = fit
            title = self._fit_title(plan, event)
            self.fit_started.emit(title, self._rule() or "")
            run.progress.set_description(f"napari-dip: {title or 'restoring'}")
            if run.done:
                return
        if event.preview is not None:
            self._show_preview(run, event)
        if run.done:
            return
        if event.final:  # a slice of a stack is finished; its preview is the kept image
            run.slices_finished.append(event.slice_index)
            if plan.lazy:  # the slice is in the store: show it, and say so
                self._refresh_lazy(run)
                for layer in run.outputs:
                    record = layer.metadata.get(METADATA_KEY, {})
                    record.setdefault("outcome", {})["slices_restored"] = \
                        list(run.slices_finished)
                if run.done:
                    return
            if run.progress.total:
                run.progress.update(1)
            self.slice_finished.emit(event.slice_index)
            return
        run.last_event = event
        self.progressed.emit(event)
        self.status.emit(self._status_text(run))

    @staticmethod
    def _fit_title(plan: Plan, event) -> str:
        parts = []
        if plan.is_stack and event.slice_index is not None:
            parts.append(f"slice {plan.slice_name(event.slice_index)}")
        return ", ".join(parts + fit_parts(event))

    def _refresh_lazy(self, run: RunState):
        """A lazy run wrote into its store: the result layers show it (made at the first
        estimate) and read it again."""
        if not run.outputs:
            self._add_outputs(run)
            return
        for layer in run.outputs:
            if layer not in run.removed_outputs and layer in self._viewer.layers:
                layer.refresh()

    def _show_preview(self, run: RunState, event):
        plan = run.plan
        run.previews += 1
        if plan.lazy:  # the worker wrote the estimate into the store (no snapshots: they
            self._refresh_lazy(run)  # would hold the whole stack in memory)
            return
        # one slice of a stack, or the whole of it (stack mode '3d' has no slice index)
        whole = not plan.is_stack or event.slice_index is None
        target = run.buffer if whole else run.buffer[event.slice_index]
        if event.preview.shape != target.shape:
            return  # a tile's own preview: its place in the plane is not in the event
        target[...] = cast_like(event.preview, run.buffer.dtype)
        if not run.outputs:
            self._add_outputs(run)
        else:
            for layer, arr in zip(run.outputs, plan.to_layers(run.buffer)):
                if layer not in run.removed_outputs:
                    layer.data = arr
        if self._keep_snapshots() and not run.done:
            tag = f" it {event.iteration}" + (
                f" slice {plan.slice_name(event.slice_index)}" if plan.is_stack else "")
            meta = {"snapshot": True, "iteration": event.iteration,
                    "slice": event.slice_index}
            for i, (source, arr) in enumerate(zip(plan.sources,
                                                  plan.to_layers(run.buffer.copy()))):
                kw = result_layer_kwargs(source, plan, source.name + SUFFIX + tag,
                                         covers=i == 0, metadata=meta)
                self._viewer.add_image(arr, visible=False, **kw)

    def _add_outputs(self, run: RunState):
        """The first estimate: the result layers appear (on top, opaque) and the inputs hide."""
        plan = run.plan
        meta = {"outcome": {"state": "running"}, "widget": {
            "input_layers": [s.name for s in plan.sources]}}
        if plan.lazy:  # the store's zarr array, which napari reads a slice at a time
            meta["store"] = run.store_path
        for i, (source, arr) in enumerate(zip(plan.sources, self._result_arrays(run))):
            kw = result_layer_kwargs(source, plan, source.name + SUFFIX, covers=i == 0,
                                     metadata=meta)
            if plan.lazy:
                kw["multiscale"] = False
            run.outputs.append(unwrap(self._viewer.add_image(arr, **kw)))
        for source in plan.sources:
            if source in self._viewer.layers and source not in run.hidden_inputs:
                run.hidden_inputs[source] = source.visible
                source.visible = False

    @staticmethod
    def _result_arrays(run: RunState) -> list:
        """What the result layers show: the store's array (a lazy run), or the buffer in each
        source layer's axes."""
        return [run.buffer] if run.plan.lazy else run.plan.to_layers(run.buffer)

    def _restore_inputs(self, run: RunState):
        for layer, visible in run.hidden_inputs.items():
            if layer in self._viewer.layers:
                layer.visible = visible
        run.hidden_inputs.clear()

    def _on_returned(self, value):
        run = self.state
        if self._closed or run is None:
            return
        run.done = True
        if isinstance(value, _Failure):  # nothing restored (a lazy run's store is empty)
            self._discard(run)
            self._remove_store(run)
            show_error(f"napari-dip: {value.error}")
            self.status.emit(f"failed: {value.error}")
            self.finished.emit(None, None)
            return
        result, plan = value, run.plan
        if not plan.lazy:
            run.buffer = np.asarray(result.image)
        outcome = describe_outcome(plan, result.record,
                                   estimate_shown=run.previews > 0 or bool(run.slices_finished))
        kept = [o for o in run.outputs if o not in run.removed_outputs]
        if run.removed_outputs and not kept:
            outcome = Outcome("empty", "", f"stopped: the result layer "
                              f"{run.removed_outputs[0].name!r} was removed; no result kept")
        if not outcome.keeps_result:
            self._discard(run)
            self._remove_store(run)
            self.status.emit(outcome.text)
            self.finished.emit(None, outcome)
            return
        if not run.outputs:  # finished before its first preview
            self._add_outputs(run)
        if run.store_path:
            outcome.text += f"\n{store_text(run.store_path, outcome.state == 'partial')}"
        record = run_record(plan, result.record, outcome)
        self.result_layers = []
        for layer, source, arr in zip(run.outputs, plan.sources, self._result_arrays(run)):
            if layer in run.removed_outputs or layer not in self._viewer.layers:
                continue
            if plan.lazy:
                layer.refresh()  # the store holds the result; nothing is read into memory
            else:
                layer.data = arr
            layer.name = outcome.layer_name(source.name)
            layer.metadata = {**dict(source.metadata), METADATA_KEY: record}
            self.result_layers.append(layer)
        self._restore_inputs(run)
        self.last_result, self.last_plan = result, plan
        self.status.emit(outcome.text)
        warning = failed_slices_text(plan, record)
        if warning:  # the finished slices are kept; say which ones were not restored
            show_warning(f"napari-dip: {warning}")
        self.finished.emit(result, outcome)

    @staticmethod
    def _remove_store(run: RunState):
        """A lazy run that kept nothing: its own temporary folder goes."""
        if run.store_path:
            shutil.rmtree(os.path.dirname(run.store_path), ignore_errors=True)
            run.store_path = None

    def _discard(self, run: RunState):
        for layer in run.outputs:
            if layer in self._viewer.layers:
                self._viewer.layers.remove(layer)
        run.outputs.clear()
        self._restore_inputs(run)

    def _on_errored(self, exc):
        # napari already shows a notification for errors raised in workers
        run = self.state
        if self._closed or run is None:
            return
        run.done = True
        for layer in run.outputs:
            if layer in self._viewer.layers:
                layer.name = f"{layer.name} (failed)"
                layer.metadata = {**dict(layer.metadata), METADATA_KEY: {
                    "outcome": {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}}}
        self._restore_inputs(run)
        kept = f"\n{store_text(run.store_path, True)}" if run.store_path else ""
        self.status.emit(f"failed: {type(exc).__name__}: {exc}{kept}")
        self.finished.emit(None, None)

    def _on_finished(self):
        run, self.state = self.state, None
        self._clock.stop()
        if run is not None:
            run.progress.close()
            self._restore_inputs(run)
        self._worker = None
        if not self._closed:
            self.running_changed.emit(False)


@dataclass
class _Failure:
    """Wraps an input or memory error (workers raise an exception that is returned)."""

    error: BaseException


def store_text(path: str, partial: bool = False) -> str:
    """Where a lazy run's result is, for the status line."""
    return (f"result store: {path} (in a temporary folder: copy it elsewhere to keep it"
            + ("; slices not restored read as 0)" if partial else ")"))


def open_store(state: RunState, plan: Plan):
    """A lazy run's result store, made by the worker after its first pass; ``state`` holds it
    from then on (the main thread reads it only when the worker's next event arrives)."""
    from .lazy import create_store

    try:
        state.buffer, state.store_path = create_store(plan)
    except OSError as exc:
        raise ValueError(f"cannot create the result store on disk: {exc}") from exc
    return state.buffer


def restoration(plan: Plan, cancel: threading.Event, open_store=None):
    """The worker: yields engine progress (throttled), returns the Result or the user error.
    A lazy plan is restored slice by slice into the store ``open_store(plan)`` makes
    (:mod:`.lazy`)."""
    from ..engine import DIPMemoryError, restore_iter, restore_stack_iter

    try:
        if plan.lazy:
            from .lazy import restore_lazy_iter

            events = restore_lazy_iter(plan, cancel, open_store)
        else:
            kwargs = dict(mask=plan.mask, channel_axis=plan.layout.plane_channel_axis,
                          factor=plan.factor, cancel=cancel,
                          name=f"layer {plan.sources[0].name!r}",
                          mask_name=f"the mask {plan.mask_name!r}", **plan.kwargs,
                          **plan.engine_kwargs())
            events = restore_stack_iter(
                plan.work, plan.task,
                slices=None if plan.slice_index is None else [plan.slice_index], **kwargs,
            ) if plan.is_stack else restore_iter(plan.work, plan.task, **kwargs)
        last, where = 0.0, None
        for event in events:
            if not hasattr(event, "iteration"):  # the Result
                return event
            now = time.monotonic()
            here = (event.slice_index, event.plane)
            if event.preview is not None or event.final or here != where or \
                    now - last > EVENT_INTERVAL_S:
                last, where = now, here
                yield event
    except (ValueError, DIPMemoryError) as exc:
        return _Failure(exc)  # returned, not raised: a user error, not a crash
    raise RuntimeError("the restoration ended without a result")  # pragma: no cover
