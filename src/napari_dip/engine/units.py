"""Units of work: one slice of a stack, or one tile of a slice, restored independently.

A unit is what a worker runs (:func:`run_unit`: plain arrays in, a float image and its record
out, so any process or machine can run it) and what an output store records as done. The
driver cuts the units (:func:`plan_units`), sends each its pixels, and writes what comes back;
tiles of one slice are blended once all of them are in (:mod:`.tiles`).

Importing this module needs numpy only; :func:`run_unit` imports torch when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import arrays
from .tiles import Tile, Tiling

#: Errors that say the unit's input cannot be restored as asked: recorded, never retried.
INPUT_ERRORS = (ValueError, FloatingPointError)


@dataclass(frozen=True)
class Unit:
    """Slice ``slice`` of the folded stack, whole (``tile`` None) or one tile of it."""

    slice: int
    tile: Tile | None = None
    n_tiles: int = 1

    @property
    def key(self) -> str:
        """A name for the store's record: ``s000012`` or ``s000012-t0003``."""
        base = f"s{self.slice:06d}"
        return base if self.tile is None else f"{base}-t{self.tile.index:04d}"


def plan_units(n_slices: int, tiling: Tiling) -> list[Unit]:
    """Every unit of a stack of ``n_slices`` planes cut as ``tiling`` says: whole slices, or
    the tiles of each slice."""
    if not tiling.tiled:
        return [Unit(i) for i in range(n_slices)]
    plan = tiling.tiles()
    return [Unit(i, t, len(plan)) for i in range(n_slices) for t in plan]


def unit_input(plane: np.ndarray, unit: Unit, channel_axis: int | None) -> np.ndarray:
    """The pixels a unit restores: the whole plane, or its tile (any plane layout)."""
    if unit.tile is None:
        return plane
    layout = arrays.infer_layout(plane, channel_axis)
    ys, xs = unit.tile.yx()
    return layout.from_cyx(layout.to_cyx(plane)[:, ys, xs])


def unit_mask(mask: np.ndarray | None, unit: Unit) -> np.ndarray | None:
    """The slice's (Y, X) mask cut to the unit (None stays None)."""
    if mask is None or unit.tile is None:
        return mask
    return np.asarray(mask)[unit.tile.yx()]


def passthrough(plane: np.ndarray, channel_axis: int | None, factor: int = 1) -> np.ndarray:
    """An unrestored unit in the output's size, as float (nearest-neighbour for SR)."""
    layout = arrays.infer_layout(plane, channel_axis)
    cyx = layout.to_cyx(plane).astype(np.float32)
    if factor > 1:
        cyx = arrays.repeat_yx(cyx, factor, 1)
    return layout.from_cyx(cyx)


def skip_reason(plane: np.ndarray, mask, channel_axis: int | None, task: str) -> str | None:
    """Why a unit is passed through unrestored ('constant', 'nothing to fill'), or None."""
    from .tiles import skip_reason as reason

    layout = arrays.infer_layout(plane, channel_axis)
    colour, _ = arrays.split_alpha(layout.to_cyx(plane), layout)
    return reason(colour, mask, task)


def shared_map(read: Callable, slices, masks, channel_axis: int | None, task: str,
               joint: bool, name: str, *, tiling: Tiling | None = None,
               slice_name: Callable | None = None, on_plane: Callable | None = None):
    """One intensity map over the slices of a stack that are restored, in one pass that reads
    one slice at a time (``read(i)``: folded plane ``i``), so the stack is never held whole.

    Slices with nothing to restore (constant, nothing to fill) take no part. With a
    ``tiling`` that tiles, each slice's map is fitted tile by tile as its tiles will be
    (:func:`.tiles.fit_map`).
    ``on_plane(i, colour, known)`` sees each slice that counts (e.g. to keep a few for a
    noise model). ValueError when no slice has anything to restore."""
    from . import tiles
    from .intensity import IntensityMap

    maps = []
    for i in slices:
        plane = read(i)
        lay = arrays.infer_layout(plane, channel_axis)
        colour, _ = arrays.split_alpha(lay.to_cyx(plane), lay)
        if tiles.skip_reason(colour, masks[i], task):
            continue
        arrays.check_values(colour, slice_name(i) if slice_name else f"{name} slice {i}")
        known = None if masks[i] is None else ~arrays.fill_of(masks[i])
        if tiling is None or not tiling.tiled:
            maps.append(IntensityMap.fit(colour, joint, known))
        else:
            maps.append(tiles.fit_map(colour, tiling.tiles(), joint, known))
        if on_plane is not None:
            on_plane(i, colour, known)
    if not maps:
        which = "the image" if len(masks) == 1 else "every slice"
        raise ValueError(f"{name}: {which} is constant or has nothing to fill; there is "
                         "nothing to restore.")
    return IntensityMap.combine(maps)


def integer_levels(read: Callable, slices, masks, channel_axis: int | None, task: str,
                   name: str) -> int | None:
    """The integer levels the input spans (:class:`.intensity.IntegerRange`), None for float
    data: over the slices :func:`.shared.spread` picks (at most 8, those the noise model is
    chosen from), one read at a time, so that asking before a run costs little. What the
    'auto' result type decides on (:func:`napari_dip.choices.result_is_float`); None too when
    every slice picked has nothing to restore."""
    from . import tiles

    sample = LevelSample(slices)
    for i in sample.picked:
        plane = read(i)
        lay = arrays.infer_layout(plane, channel_axis)
        colour, _ = arrays.split_alpha(lay.to_cyx(plane), lay)
        if tiles.skip_reason(colour, masks[i], task):  # as shared_map skips it
            continue
        sample.see(i, colour, None if masks[i] is None else ~arrays.fill_of(masks[i]))
    return sample.levels  # None: float data, or nothing to restore here


class LevelSample:
    """:func:`integer_levels`, seen during a pass that reads every slice anyway (the intensity
    map's, :func:`shared_map`'s ``on_plane``): the same slices, no read of its own."""

    def __init__(self, slices):
        from .shared import spread

        self.picked = spread(slices)  # in the order a pass meets them
        self.sampled, self.ranges = set(self.picked), []

    def see(self, i: int, colour: np.ndarray, known) -> None:
        from .intensity import IntegerRange

        if i in self.sampled:
            self.ranges.append(IntegerRange.of(colour, known))

    @property
    def levels(self) -> int | None:
        from .intensity import IntegerRange

        span = IntegerRange.combine(self.ranges)
        return None if span is None else span.levels


def folded_levels(planes: np.ndarray, layout, mask, task: str, name: str,
                  slices=None) -> int | None:
    """:func:`integer_levels` of an input held in memory: ``planes`` folded by ``layout`` (an
    :class:`~.axes.AxisLayout`; a stack, or one plane), with its folded ``mask``; ``slices``
    of a stack (None: all)."""
    from .axes import slice_masks

    n = planes.shape[0] if layout.is_stack else 1
    read = (lambda i: planes[i]) if layout.is_stack else (lambda i: planes)
    todo = range(n) if slices is None or not layout.is_stack else slices
    return integer_levels(read, todo, slice_masks(mask, n, layout.yx_shape),
                          layout.plane_channel_axis, task, name)


def _worker_device(device: str) -> str:
    """On a dask worker of a machine with several GPUs, spread workers over them: worker
    ``n`` of a LocalCluster takes GPU ``n % count`` (elsewhere the device stays as asked)."""
    if device not in ("auto", "cuda"):
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return device
    import torch

    count = torch.cuda.device_count()
    if count > 1 and isinstance(name, int):
        return f"cuda:{name % count}"
    return device


def run_unit(data: np.ndarray, *, mask: np.ndarray | None, options: dict, normalisation,
             seed: int, channel_axis: int | None, name: str,
             cancel=None, callback: Callable | None = None) -> dict:
    """Restore one unit; returns ``{"status": "done", "image": float32, "record": ...}``, or
    ``{"status": "error", "error": ...}`` when its input cannot be restored as asked.

    ``options`` are :func:`~napari_dip.engine.restore_iter` keywords (task, preset, max_iters,
    ...); every unit of a run gets the same ones, the same ``seed`` and the same intensity map
    (``normalisation``), so a unit's result does not depend on where or when it runs. Other
    exceptions (out of memory, a lost worker) propagate, so that a scheduler can retry them.
    """
    from .restoration import Result, restore_iter

    options = dict(options)
    options["device"] = _worker_device(options.get("device", "auto"))
    try:
        for event in restore_iter(data, mask=mask, normalisation=normalisation, seed=seed,
                                  channel_axis=channel_axis, name=name, cancel=cancel,
                                  as_float=True, tile=False, **options):
            if isinstance(event, Result):
                return {"status": "partial" if event.stop_reason == "user" else "done",
                        "image": event.image, "record": event.record}
            if callback is not None:
                callback(event)
    except INPUT_ERRORS as exc:
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    raise RuntimeError(f"{name}: the restoration ended without a result")  # pragma: no cover


def batch_size(payload: dict, job=None) -> int:
    """How many units like this one a worker fits together (:func:`run_unit_batch`): the
    ``batch`` option, else the device's default (one at a time off CUDA). ``job``: the
    payload already prepared, if it is (else it is prepared here when CUDA needs it)."""
    options = payload["options"]
    if options.get("batch") is not None:
        return max(1, int(options["batch"]))
    from .devices import resolve_device

    if resolve_device(_worker_device(options.get("device", "auto"))).type != "cuda":
        return 1
    from .batch_planes import resolve_batch
    from .batched import MAX_DEFAULT_BATCH

    return resolve_batch(None, job if job is not None else _prepare_unit(payload),
                         MAX_DEFAULT_BATCH)


def _prepare_unit(payload: dict):
    from .restoration import prepare

    options = {k: v for k, v in payload["options"].items() if k != "batch"}
    options["device"] = _worker_device(options.get("device", "auto"))
    return prepare(payload["data"], mask=payload["mask"], normalisation=payload["normalisation"],
                   seed=payload["seed"], channel_axis=payload["channel_axis"],
                   name=payload["name"], **options)


def run_unit_batch(payloads: list[dict], cancel=None, callback: Callable | None = None):
    """Restore units of one shape together, as independent networks in one pass
    (:mod:`.batch_planes`); yields ``(index into payloads, result)`` as each unit finishes,
    each result as :func:`run_unit` returns it. Errors other than the input's propagate (the
    caller can run the units one at a time instead)."""
    from .batch_planes import PlaneDone, fit_planes
    from .restoration import _record, as_cancel_check

    jobs, index = [], []
    for k, payload in enumerate(payloads):
        try:
            jobs.append(_prepare_unit(payload))
            index.append(k)
        except INPUT_ERRORS as exc:
            yield k, {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    if not jobs:
        return
    size = max(1, min(batch_size(payloads[index[0]], jobs[0]), len(jobs)))
    for event in fit_planes(jobs, as_cancel_check(cancel), size):
        if not isinstance(event, PlaneDone):
            if callback is not None:
                callback(event)
            continue
        job, fits = jobs[event.job], event.fits
        if event.error is not None:
            if not isinstance(event.error, INPUT_ERRORS):
                raise event.error
            result = {"status": "error", "error": f"{type(event.error).__name__}: {event.error}"}
        else:
            record = _record(job, fits)
            result = {"status": "partial" if record["stop_reason"] == "user" else "done",
                      "image": job.output(fits.image, as_float=True), "record": record}
        yield index[event.job], result
