"""Stacks (Z, T, ... over 2-D planes): restored slice by slice with one shared intensity map.

Sharing the normalisation keeps intensities comparable between slices; the slice loop lives
here so the CLI and the widget never iterate over axes themselves (:mod:`.axes` folds N-D
arrays into stacks of planes and back).

How the slices are restored (``stack_mode``, :data:`napari_dip.choices.STACK_MODE`): each on its
own ('slices'); each starting from the network the previous slice ended with ('warm': far fewer
iterations when neighbouring slices are alike; the stopping rule still decides each one); or all
at once by one 3-D network ('3d', :mod:`.volume`). Left unset, it is chosen from the stack: warm
when neighbouring slices are alike, else slices. One noise model, fitted over the slices, serves
every slice, and so does a deconvolution's headroom (:mod:`.shared`).

A slice with nothing to restore (constant, e.g. a blank first plane; or, with one mask per
slice, a slice whose mask marks nothing) is passed through and marked as skipped; an error in one
slice is recorded and the others go on, so one bad slice never costs the rest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np

from ..choices import STACK_MODE
from . import arrays, axes
from .devices import DIPMemoryError
from .intensity import IntensityMap
from .restoration import (
    Progress, Result, _record, as_cancel_check, drain, draw_seed, overall_stop_reason, prepare,
    restore_iter,
)
from .shared import PlaneSample, deconvolves

#: Neighbouring slices this alike (mean Pearson correlation) make a warm start worthwhile.
WARM_MIN_CORRELATION = 0.5
#: Settings of a slice that starts from the previous slice's network (unless given): it is
#: already close, so it takes smaller steps (as DECO-DIP's later frames do) and a shorter output
#: average, which also shortens the wait after the stopping rule's pick.
WARM_SETTINGS = {"lr": 0.001, "ema": 0.98}


def _known(mask) -> np.ndarray | None:
    """Observed pixels (True) of a slice's mask, or None when every pixel counts."""
    if mask is None:
        return None
    known = ~arrays.fill_of(mask)
    return known if known.any() else None


def _colour(plane: np.ndarray, layout: arrays.Layout) -> np.ndarray:
    """The (C, Y, X) channels of a slice that are restored (an RGBA's alpha is not)."""
    return arrays.split_alpha(layout.to_cyx(plane), layout)[0]


def _skip_reason(plane: np.ndarray, mask, layout: arrays.Layout, task: str) -> str | None:
    """Why a slice is passed through unrestored, or None if it is to be restored."""
    from .tiles import skip_reason

    return skip_reason(_colour(plane, layout), mask, task)


def _passthrough(plane: np.ndarray, task: str, factor: int, layout: arrays.Layout) -> np.ndarray:
    """An unrestored slice in the output's shape (nearest-neighbour upsampled for SR)."""
    if task != "sr":
        return plane.copy()
    return layout.from_cyx(arrays.repeat_yx(layout.to_cyx(plane), factor, 1))


class StackRecord:
    """What became of each slice of a stack run, gathered as the run goes, and the run's record
    made from it: one builder for a stack in memory (:func:`restore_stack_iter`) and for a lazy
    one read slice by slice (the widget's), so that their records cannot drift apart."""

    def __init__(self, task: str, seed: int, norm: IntensityMap):
        self.norm = norm
        self.entries: dict[int, dict] = {}
        self.errors: list[tuple[int, Exception]] = []
        self.history: list = []
        self.settings = {"task": task, "seed": seed}  # a restored slice's record replaces it
        self.clipped = self.counted = 0

    def skipped(self, i: int, reason: str) -> None:
        self.entries[i] = {"slice": i, "skipped": reason, "iterations": 0, "seconds": 0.0}

    def failed(self, i: int, exc: Exception) -> None:
        self.errors.append((i, exc))
        self.entries[i] = {"slice": i, "error": f"{type(exc).__name__}: {exc}", "iterations": 0,
                           "seconds": 0.0}

    def restored(self, i: int, result: Result) -> None:
        self.entries[i] = {"slice": i, **{k: result.record[k] for k in (
            "iterations", "best_iteration", "stop_reason", "seconds", "planes")}}
        self.history.append(result.history)
        self.settings = result.record

    def count_clipped(self, colour: np.ndarray, known: np.ndarray | None) -> None:
        """Count a slice's (C, Y, X) pixels, and those the intensity map clips (observed only)."""
        self.clipped += self.norm.count_clipped(colour, known)
        self.counted += colour.size if known is None else int(known.sum()) * len(colour)

    def finish(self, todo: list[int], input_shape, mode: dict, cancelled: bool, check=None,
               **extra) -> dict:
        """The run's record over the slices ``todo`` (``extra`` keys after the totals); raises
        the first error when no slice was restored. ``cancelled``: a fit was stopped; ``check``
        (the cancel check) also tells a run stopped between two slices."""
        cancelled = cancelled or (check is not None and check() and len(self.entries) < len(todo))
        restored = [e for e in self.entries.values() if "stop_reason" in e]
        if self.errors and not restored:
            raise self.errors[0][1]
        records = [self.entries[i] for i in todo if i in self.entries]
        record = {
            **{k: v for k, v in self.settings.items() if k != "planes"},
            "input_shape": list(input_shape),
            "stack_mode": mode,
            "normalisation": {**self.norm.to_dict(),
                              "clipped_fraction": self.clipped / max(self.counted, 1)},
            "slices": records,
            "slices_done": [e["slice"] for e in restored if e["stop_reason"] != "user"],
            "stop_reason": overall_stop_reason([e["stop_reason"] for e in restored],
                                               complete=not cancelled),
            "iterations": sum(e["iterations"] for e in records),
            "best_iteration": [e.get("best_iteration") for e in records],
            "seconds": round(sum(e["seconds"] for e in records), 3),
            **extra,
        }
        if self.errors:
            record["errors"] = [{"slice": i, "error": self.entries[i]["error"]}
                                for i, _ in self.errors]
        return record


def restore_stack_iter(
    stack: np.ndarray,
    task: str = "denoise",
    *,
    mask: np.ndarray | None = None,
    channel_axis: int | None = None,
    slices: Sequence[int] | None = None,
    factor: int = 4,
    seed: int | None = None,
    cancel=None,
    reference: np.ndarray | None = None,
    name: str = "image",
    stack_mode: str | None = None,
    voxel_size=None,
    noise_model="auto",
    guide: np.ndarray | None = None,
    batch: int | None = None,
    **kwargs,
) -> Iterator[Progress | Result]:
    """Restore each 2-D plane along axis 0 of ``stack``; yields progress, then one Result.

    ``stack`` is (S, Y, X), (S, C, Y, X) or (S, Y, X, RGB); fold extra leading axes (T and Z)
    into S first. ``mask`` is (Y, X), shared by every slice, or one per slice (S, Y, X).
    ``slices`` restores only those indices; the others are copied through unchanged.
    ``channel_axis`` is counted in one slice's axes, as for :func:`restore_iter` (0 or -1).
    :mod:`.axes` folds N-D arrays into this form and back. ``stack_mode`` is 'slices', 'warm' or
    '3d' (None: chosen from the stack, see the module's text); ``voxel_size`` (Z, Y, X) shapes
    the 3-D network. ``guide`` is one plane for every slice, or one per slice (``guide[i]``).
    ``batch`` slices (or, with ``channels='separate'``, channels of slices) are fitted at once
    as independent networks (:mod:`.batched`; their progress events interleave); None chooses
    from the device (several on CUDA, one at a time elsewhere); warm-started and guided stacks
    go one slice at a time. The record's ``"batch"`` says which path ran. Other keywords go to
    :func:`~napari_dip.engine.restore_iter`.

    The record lists every slice asked for under ``"slices"``: restored ones with their fit,
    skipped ones with ``"skipped"`` (e.g. ``"constant"``), failed ones with ``"error"`` (the
    slice is then passed through, and ``"errors"`` lists them). Only when no slice could be
    restored is the first error raised.
    """
    stack = np.asarray(stack)
    arrays.check_dtype(stack, name)
    if stack.ndim not in (3, 4):
        raise ValueError(
            f"{name} has shape {stack.shape}; a stack is (S, Y, X), (S, C, Y, X) or "
            "(S, Y, X, RGB). Reshape extra axes into the first one."
        )
    layout = arrays.infer_layout(stack[0], channel_axis, f"{name} slice")
    n = stack.shape[0]
    masks = axes.slice_masks(mask, n, layout.to_cyx(stack[0]).shape[1:])
    todo = list(range(n)) if slices is None else [int(i) % n for i in slices]
    mode = choose_stack_mode(stack_mode, stack, todo, layout, batch)
    if mode["mode"] == "3d":
        yield from _restore_3d(stack, task, mode, mask=mask, slices=slices, layout=layout,
                               factor=factor, seed=seed, cancel=cancel, reference=reference,
                               name=name, voxel_size=voxel_size, noise_model=noise_model,
                               guide=guide, **kwargs)
        return
    skipped = {i: r for i in todo if (r := _skip_reason(stack[i], masks[i], layout, task))}
    to_fit = [i for i in todo if i not in skipped]
    if not to_fit:
        which = f"slice {todo[0]}" if len(todo) == 1 else "every slice"
        raise ValueError(f"{name}: {which} to restore is {skipped[todo[0]]}; there is nothing "
                         "to restore.")
    arrays.check_values(stack[to_fit], name)
    known = {i: _known(masks[i]) for i in to_fit}
    colour = {i: _colour(stack[i], layout) for i in to_fit}
    joint = layout.kind == "channels_last"
    norm = IntensityMap.combine([IntensityMap.fit(colour[i], joint, known[i]) for i in to_fit])
    if seed is None:
        seed = draw_seed()
    check = as_cancel_check(cancel)
    sample = PlaneSample(to_fit, brightest=deconvolves(task, kwargs))
    for i in to_fit:
        sample.see(i, colour[i], known[i])
    kwargs["noise_model"] = noise_model
    shared = sample.take_choices(task, norm, name, kwargs)
    per_slice_guide = guide is not None and np.ndim(guide) >= 3 and \
        np.shape(guide)[:3] == stack.shape[:3]
    warm_states = {} if mode["mode"] == "warm" else None

    out = np.stack([_passthrough(s, task, factor, layout) for s in stack])
    if kwargs.get("as_float"):
        out = out.astype(np.float32)
    log, cancelled = StackRecord(task, seed, norm), False
    for i in skipped:
        log.skipped(i, skipped[i])

    if warm_states is not None or guide is not None:
        batch = 1  # each warm slice starts from the one before; a guide is the input of one fit

    def per_slice(i):
        return dict(mask=masks[i], channel_axis=layout.channel_axis, factor=factor, seed=seed,
                    normalisation=norm, name=f"{name} slice {i}",
                    reference=None if reference is None else reference[i],
                    guide=guide[i] if per_slice_guide else guide, **shared,
                    warm_states=warm_states, **{**kwargs, **_warm_settings(warm_states, kwargs)})

    runs, last = _slice_runs(stack, task, to_fit, per_slice, check, batch, len(todo)), {}
    try:
        for event in runs:
            if isinstance(event, Progress):
                last[event.slice_index] = event
                yield event
                continue
            i, result, exc = event
            if exc is not None:
                log.failed(i, exc)
                if isinstance(exc, MemoryError):
                    break  # the next slices, of the same size, would not fit either
                continue
            if result.stop_reason != "user" and i in last:
                yield replace(last[i], preview=result.image.astype(np.float32), final=True)
            out[i] = result.image
            log.restored(i, result)
            cancelled = cancelled or result.stop_reason == "user"
    finally:
        runs.close()
    for i in to_fit:
        log.count_clipped(colour[i], known[i])
    record = log.finish(todo, stack.shape, mode, cancelled, check)
    yield Result(out, record, log.history)


def _warm_settings(warm_states: dict | None, given: dict) -> dict:
    """:data:`WARM_SETTINGS` for a slice that starts warm, except what the caller set."""
    if not warm_states:
        return {}
    return {k: v for k, v in WARM_SETTINGS.items() if given.get(k) is None}


class NeighbourCorrelation:
    """How alike neighbouring slices are, seen one slice at a time (so a stack read lazily, or
    unit by unit, never needs to be held whole): the mean Pearson correlation of consecutive
    slices after a light smoothing, so that noise does not hide shared structure. What
    :func:`choose_stack_mode` decides a warm start on."""

    def __init__(self):
        self._previous: np.ndarray | None = None
        self.values: list[float] = []

    def see(self, cyx: np.ndarray) -> None:
        """The next slice's restored channels (C, Y, X)."""
        from scipy import ndimage

        x = ndimage.gaussian_filter(np.asarray(cyx, np.float64), (0, 1, 1)).ravel()
        if self._previous is not None and self._previous.std() > 0 and x.std() > 0:
            self.values.append(float(np.corrcoef(self._previous, x)[0, 1]))
        self._previous = x

    def choice(self) -> dict:
        """'warm' when the mean correlation is at least :data:`WARM_MIN_CORRELATION`, else
        'slices', with the reason (a stack mode record)."""
        mean_r = float(np.mean(self.values)) if self.values else 0.0
        mode = "warm" if mean_r >= WARM_MIN_CORRELATION else "slices"
        sign = ">=" if mode == "warm" else "<"
        return {"mode": mode, "requested": None, "neighbour_correlation": round(mean_r, 3),
                "reason": f"neighbouring slices correlate {mean_r:.2f} ({sign} "
                          f"{WARM_MIN_CORRELATION})"}


def fixed_stack_mode(requested: str | None, n_slices: int,
                     independent: str | None = None) -> dict | None:
    """The stack mode where the slices need not be looked at: as asked, or 'slices' for one
    slice or where they are fitted independently (``independent`` says why); None: decided by
    how alike neighbours are (:class:`NeighbourCorrelation`)."""
    if requested is not None:
        return {"mode": STACK_MODE.check(requested), "requested": requested, "reason": "asked for"}
    if n_slices < 2:
        return {"mode": "slices", "requested": None, "reason": "one slice"}
    if independent:
        return {"mode": "slices", "requested": None, "reason": independent}
    return None


def choose_stack_mode(requested: str | None, stack: np.ndarray, todo: list[int],
                      layout: arrays.Layout, batch: int | None = None) -> dict:
    """The stack mode to use, and why: as asked, or (None) 'warm' when neighbouring slices
    are alike (:class:`NeighbourCorrelation`), else 'slices'. A batch of several slices asked
    for means 'slices' (warm slices run one after another)."""
    fixed = fixed_stack_mode(requested, len(todo), f"a batch of {batch} slices fitted "
                             "together was asked for" if batch is not None and batch > 1 else None)
    if fixed is not None:
        return fixed
    neighbours = NeighbourCorrelation()
    for i in todo:
        neighbours.see(_colour(stack[i], layout))
    return neighbours.choice()


def _restore_3d(stack, task, mode, *, mask, slices, layout, factor, seed, cancel, reference,
                name, voxel_size, noise_model, guide, **kwargs):
    """Stack mode '3d': the whole stack through :func:`~.volume.restore_volume_iter`."""
    from .volume import restore_volume_iter

    if mask is not None or guide is not None or slices is not None:
        raise ValueError("stack mode '3d' restores the whole stack and takes no mask, guide or "
                         "slice selection; use stack mode 'slices' or 'warm'")
    if kwargs.pop("tile", None) not in (None, False):
        raise ValueError("stack mode '3d' fits the whole volume at once; it cannot be tiled")
    for key in ("normalisation", "net_input", "composite", "mask_name", "guide_name",
                "warm_states"):
        kwargs.pop(key, None)
    result = None
    for event in restore_volume_iter(stack, task, channel_axis=layout.channel_axis,
                                     voxel_size=voxel_size, noise_model=noise_model, seed=seed,
                                     cancel=cancel, reference=reference, name=name, **kwargs):
        if isinstance(event, Result):
            result = event
        else:
            yield event
    result.record["stack_mode"] = {**mode, **result.record["stack_mode"]}
    yield result


def _slice_runs(stack, task, to_fit, per_slice, check, batch, n_slices):
    """Fit the slices ``to_fit``, one at a time or ``batch`` units at a time; yields Progress
    and (slice, Result or None, error or None) per slice as it ends. Stops at a cancel."""
    # Tiles asked for: every slice goes through restore_iter, which cuts it (one at a time).
    if batch != 1 and to_fit and per_slice(to_fit[0]).get("tile") in (None, False):
        from .batch_planes import PlaneDone, fit_planes, resolve_batch

        size, first = 1, None
        while to_fit and first is None:
            try:
                first = prepare(stack[to_fit[0]], task, **per_slice(to_fit[0]))
            except DIPMemoryError:
                break  # too big for one fit: one at a time, in tiles (restore_iter)
            except Exception as exc:  # noqa: BLE001 - recorded; the other slices go on
                yield to_fit[0], None, exc
                to_fit = to_fit[1:]
        if first is not None:
            units = len(first.groups)
            size = resolve_batch(batch, first, len(to_fit) * units)
        if size > 1:
            # Slices are prepared a batch at a time: a long stack's inputs are never all held.
            per_batch = max(1, size // units)
            for start in range(0, len(to_fit), per_batch):
                if check is not None and check():
                    return
                jobs, ready = [], []
                for i in to_fit[start: start + per_batch]:
                    try:
                        jobs.append(first if i == to_fit[0]
                                    else prepare(stack[i], task, **per_slice(i)))
                        ready.append(i)
                    except Exception as exc:  # noqa: BLE001 - recorded; the others go on
                        yield i, None, exc
                if not jobs:
                    continue
                events = fit_planes(jobs, check, size, ready, n_slices)
                while True:
                    try:
                        event = next(events)
                    except StopIteration as end:
                        size = end.value or size  # smaller after running out of memory
                        break
                    if not isinstance(event, PlaneDone):
                        yield event
                        continue
                    job, fits = jobs[event.job], event.fits
                    result = None if fits is None else Result(
                        job.output(fits.image), _record(job, fits), fits.history)
                    yield ready[event.job], result, event.error
            return
    for i in to_fit:
        if check is not None and check():
            return
        result = None
        try:
            for event in restore_iter(stack[i], task, cancel=check, batch=1, **per_slice(i)):
                if isinstance(event, Result):
                    result = event
                else:
                    event.slice_index, event.n_slices = i, n_slices
                    yield event
        except Exception as exc:  # noqa: BLE001 - recorded; the other slices go on
            yield i, None, exc
            continue
        yield i, result, None
        if result.stop_reason == "user":
            return


def restore_stack(stack: np.ndarray, task: str = "denoise", *, callback=None, **kwargs) -> Result:
    """Blocking form of :func:`restore_stack_iter`."""
    return drain(restore_stack_iter(stack, task, **kwargs), callback)
