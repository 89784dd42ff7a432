"""Restore many prepared planes together: their fits (one per plane and channel group) run in
batches of independent networks (:func:`.batched.fit_batch`), the rest as in
:func:`~.restoration.restore_iter`: the same progress events, per-plane fits and records.

A unit is one fit: a plane (channels joint) or one channel of it (channels separate). Units run
in the order given, ``batch`` at a time; a batch that runs out of device memory is split in two
and retried, down to one unit at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .batched import UnitDone, default_batch, fit_batch
from .devices import cpu_run, is_out_of_memory, memory_error
from .fit import start_level
from .restoration import (
    PreviewSchedule, Progress, _Fits, _group_operator, _initial_guess, _Job,
)

#: What a run's record says about the path its fits took.
ONE_AT_A_TIME = "one-at-a-time"
BATCHED = "grouped-convolutions"


def batch_record(size: int) -> dict:
    return {"size": size, "path": BATCHED if size > 1 else ONE_AT_A_TIME}


def resolve_batch(batch: int | None, job: _Job, n_units: int) -> int:
    """The batch size asked for, or the device's default (:func:`.batched.default_batch`) for
    None; never more than there are units."""
    if batch is None:
        channels = len(job.groups[0])
        return default_batch(job.device, n_units, job.out_hw, job.config, channels)
    if int(batch) < 1:
        raise ValueError(f"batch must be at least 1 (units fitted together), not {batch}")
    return max(1, min(int(batch), n_units))


@dataclass
class PlaneDone:
    """Plane ``job`` (an index into the jobs given) is finished: its fits, or its error."""

    job: int
    fits: _Fits | None
    error: Exception | None = None


def fit_planes(jobs: list[_Job], check: Callable[[], bool] | None, batch: int,
               slice_indices: list[int | None] | None = None,
               n_slices: int | None = None) -> Iterator[Progress | PlaneDone]:
    """Fit every channel group of every job, ``batch`` units at a time; yields
    :class:`~.restoration.Progress` (``slice_index`` from ``slice_indices``) and one
    :class:`PlaneDone` per job as soon as its last group is done. Jobs must share their
    shape (a stack's slices); only jobs with the same settings share a batch. After a cancel,
    the planes cut short are reported with what they have and the others are not started.
    Returns the batch size it ended with (smaller than ``batch`` after running out of device
    memory)."""
    if jobs[0].device.type != "cpu":
        return (yield from _fit_planes(jobs, check, batch, slice_indices, n_slices, None))
    with cpu_run(jobs[0].threads) as threads:
        return (yield from _fit_planes(jobs, check, batch, slice_indices, n_slices, threads))


def _fit_planes(jobs, check, batch, slice_indices, n_slices, threads):
    slice_indices = slice_indices or [None] * len(jobs)
    fits = [_Fits(image=_initial_guess(j.observation, j.operator)[0], threads=threads,
                  batch=batch_record(batch)) for j in jobs]
    outcomes: list[dict] = [{} for _ in jobs]  # group index -> outcome
    finished: set[int] = set()  # jobs reported (done or failed)
    queue = [(j, g) for j, job in enumerate(jobs) for g in range(len(job.groups))]
    size = batch
    while queue and not (check is not None and check()):
        # A batch shares one configuration: planes whose settings differ (e.g. inpainting masks
        # of different kinds) go in different batches.
        config = jobs[queue[0][0]].config
        units = [u for u in queue if jobs[u[0]].config == config][:size]
        queue = [u for u in queue if u not in units]
        try:
            for event in _run(jobs, fits, units, check, slice_indices, n_slices):
                if isinstance(event, Progress):
                    yield event
                    continue
                j, g = units[event.unit]
                if j in finished:
                    continue
                if event.error is not None:
                    finished.add(j)
                    yield PlaneDone(j, None, event.error)
                    continue
                outcomes[j][g] = event.outcome
                if len(outcomes[j]) == len(jobs[j].groups):
                    finished.add(j)
                    yield PlaneDone(j, _collect(jobs[j], fits[j], outcomes[j]))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if size > 1:  # retry these units in smaller batches (they start over)
                size = max(1, size // 2)
                queue = [(j, g) for j, g in units if j not in finished] + queue
                for j, g in units:
                    outcomes[j].pop(g, None)
                continue
            job = jobs[units[0][0]]
            error = memory_error(*job.out_hw, job.config.net, job.device, job.preset)
            for j in dict.fromkeys(j for j, _ in units + queue):
                yield PlaneDone(j, None, error)
            return size
        finally:
            if jobs[0].device.type == "cuda":
                torch.cuda.empty_cache()
        queue = [(j, g) for j, g in queue if j not in finished]
    # Cancelled: the planes cut short keep what their fits returned.
    for j, done in enumerate(outcomes):
        if done and j not in finished:
            yield PlaneDone(j, _collect(jobs[j], fits[j], done))
    return size


def _run(jobs, fits, units, check, slice_indices, n_slices):
    """One batch: yields Progress, and UnitDone events whose ``unit`` indexes ``units``."""
    first = jobs[units[0][0]]
    config = first.config
    group_of = [jobs[j].groups[g] for j, g in units]
    refs = [None if jobs[j].reference is None else jobs[j].reference[group]
            for (j, _), group in zip(units, group_of)]
    ops = [_group_operator(jobs[j].fit_operator, group, len(jobs[j].cyx))
           for (j, _), group in zip(units, group_of)]
    steps = fit_batch(
        [jobs[j].data[:, group] for (j, _), group in zip(units, group_of)], ops, config,
        device=first.device,
        seeds=[jobs[j].seed for j, _ in units], cancel=check,
        references=refs if all(r is not None for r in refs) else None,
        net_input=first.net_input,
        output_levels=[start_level(jobs[j].observation[:, group], op)
                       for ((j, _), group), op in zip(zip(units, group_of), ops)],
    )
    schedules = [PreviewSchedule(config.preview_every) for _ in units]
    running = len(units)
    try:
        for event in steps:
            if isinstance(event, UnitDone):
                running -= 1
                yield event
                continue
            k = event.unit
            (j, g), job = units[k], jobs[units[k][0]]
            preview = fits[j].preview(job.output, group_of[k], event.estimate) \
                if schedules[k].due(event.iteration) else None
            yield Progress(
                event.iteration, config.max_iters, event.loss, event.signal,
                event.best_iteration, event.elapsed, preview, event.psnr, g, len(job.groups),
                slice_index=slice_indices[j], n_slices=n_slices, status=event.status,
                batch=running,
            )
    finally:
        steps.close()


def _collect(job: _Job, fits: _Fits, outcomes: dict) -> _Fits:
    """A plane's fits once its groups are done (in group order, as restore_iter records)."""
    for g in sorted(outcomes):
        fits.add(job.groups[g], outcomes[g])
    fits.complete = len(outcomes) == len(job.groups)
    return fits
