"""A lazy layer (dask or zarr array) restored slice by slice into a zarr store on disk.

A run on a lazy stack never holds the stack, nor its result, whole: each slice is read when
it is about to be fitted (:meth:`.plan.Plan.read_slice`), restored by the engine's per-plane
:func:`~napari_dip.engine.restore_iter`, and written into the result's zarr array (one slice
per chunk) as soon as it is done; the result layer shows that array, which napari reads
lazily. As :func:`~napari_dip.engine.stacks.restore_stack_iter` does for a stack in memory,
every slice shares one intensity map (fitted first, in one pass that reads one slice at a time:
:func:`napari_dip.engine.units.shared_map`, the CLI's) and one noise model, and the run's
record is built as a stack's (:class:`~napari_dip.engine.stacks.StackRecord`).

Slices not restored (yet) read as the store's fill value (0). A run stopped part-way keeps
what it wrote. Qt-free; zarr and torch are imported when a run starts.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import replace

import numpy as np

from .plan import Plan
from .results import cast_like

#: The value of a result's slices that are not restored (yet).
FILL_VALUE = 0
#: The name of a run's temporary folder starts with this.
TEMP_PREFIX = "napari-dip-"


def create_store(plan: Plan, folder: str | None = None):
    """The zarr array a lazy run writes into, and its path: the result's shape (the input's;
    Y and X times the factor for SR) and dtype, one slice per chunk, filled with
    :data:`FILL_VALUE`, in ``folder`` (None: :func:`temporary_folder`)."""
    import zarr

    folder = folder or temporary_folder()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", plan.sources[0].name).strip("._") or "result"
    path = os.path.join(folder, f"{stem}-dip.zarr")
    array = zarr.create_array(store=path, shape=plan.output_shape, chunks=plan.output_chunks,
                              dtype=plan.result_dtype, fill_value=FILL_VALUE,
                              overwrite=False)
    array.attrs["napari_dip"] = {"input_layer": plan.sources[0].name, "state": "running",
                                 "slices_restored": []}
    return array, path


def temporary_folder() -> str:
    """A new folder for one run's store (``napari-dip-*`` in the system's temporary folder)."""
    return tempfile.mkdtemp(prefix=TEMP_PREFIX)


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item")
                                 else str(v)))


def restore_lazy_iter(plan: Plan, cancel, open_store=None):
    """Restore the asked slices of ``plan`` (a lazy stack) into a store that ``open_store(plan)``
    (default: :func:`create_store`'s array) makes once the first pass has read the levels its
    type depends on (:attr:`.Plan.levels`), so that no slice is read for them alone; yields the
    engine's Progress events (those of a finished slice once more with ``final``), then a
    Result whose image is the store. Each slice's previews and its result are in the store
    before their event is yielded."""
    from ..engine import arrays, axes
    from ..engine.restoration import Result, as_cancel_check, draw_seed, restore_iter
    from ..engine.shared import PlaneSample, deconvolves
    from ..engine.stacks import (NeighbourCorrelation, StackRecord, _warm_settings,
                                 fixed_stack_mode)
    from ..engine.units import LevelSample, passthrough, shared_map, skip_reason

    layout, task = plan.layout, plan.task
    n, todo, cax = layout.n_slices, plan.slices_asked, layout.plane_channel_axis
    name = f"layer {plan.sources[0].name!r}"
    masks = axes.slice_masks(plan.mask, n, layout.yx_shape)
    kwargs = {**plan.kwargs, **plan.engine_kwargs(result_type=False)}
    requested_mode = kwargs.pop("stack_mode", None)
    kwargs.pop("voxel_size", None)
    seed = kwargs.pop("seed", None)
    seed = draw_seed() if seed is None else seed
    guide = kwargs.pop("guide", None)
    folded = (n, *(layout.shape[a] for a in plan._plane_axes()))  # the stack, as the engine's
    per_slice_guide = guide is not None and np.ndim(guide) >= 3 and \
        np.shape(guide)[:3] == folded[:3]
    check = as_cancel_check(cancel)
    out_plane = tuple(plan.output_shape[a] for a in plan._plane_axes())

    def write(i: int, image: np.ndarray) -> None:
        store[plan.slice_key(i)] = plan.store_plane(cast_like(np.asarray(image), store.dtype))

    def pass_through(i: int, plane: np.ndarray) -> None:  # the input, in the output's shape
        write(i, passthrough(plane, cax, plan.factor if task == "sr" else 1))

    # One pass over the slices, one at a time: the shared intensity map, the few slices that
    # the choices every slice shares (noise model, a deconvolution's headroom) are made from,
    # and how alike neighbouring slices are (the stack mode, unless asked for).
    sample = PlaneSample(todo, brightest=deconvolves(task, kwargs))
    neighbours, levels = NeighbourCorrelation(), LevelSample(todo)

    def see(i, colour, known):
        sample.see(i, colour, known)
        neighbours.see(colour)
        levels.see(i, colour, known)

    norm = shared_map(plan.read_slice, todo, masks, cax, task, layout.colour, name,
                      on_plane=see)
    plan.learn_levels(levels.levels)
    if plan.as_float:
        kwargs["as_float"] = True
    store = open_store(plan) if open_store is not None else create_store(plan)[0]
    shared = sample.take_choices(task, norm, name, kwargs)
    sample = None  # its planes are not needed any more
    mode = fixed_stack_mode(requested_mode, len(todo)) or neighbours.choice()
    warm_states = {} if mode["mode"] == "warm" else None

    log, cancelled, restored_order = StackRecord(task, seed, norm), False, []
    for i in todo:
        if check is not None and check():
            cancelled = True
            break
        plane = plan.read_slice(i)
        if check is not None and check():  # stopped while the slice was read
            cancelled = True
            break
        reason = skip_reason(plane, masks[i], cax, task)
        if reason is not None:
            pass_through(i, plane)
            log.skipped(i, reason)
            continue
        result, last = None, None
        try:
            for event in restore_iter(
                    plane, task, mask=masks[i], channel_axis=cax, factor=plan.factor,
                    seed=seed, normalisation=norm, name=f"{name} slice {i}",
                    cancel=check, batch=1, **shared,
                    mask_name=f"the mask {plan.mask_name!r}",
                    guide=guide[i] if per_slice_guide else guide, warm_states=warm_states,
                    **{**kwargs, **_warm_settings(warm_states, kwargs)}):
                if isinstance(event, Result):
                    result = event
                    continue
                event.slice_index, event.n_slices = i, len(todo)
                if event.preview is not None and event.preview.shape == out_plane:
                    write(i, event.preview)  # on disk before the layer is refreshed
                last = event
                yield event
        except Exception as exc:  # noqa: BLE001 - recorded; the other slices go on
            log.failed(i, exc)
            pass_through(i, plane)
            if isinstance(exc, MemoryError):
                break  # the next slices, of the same size, would not fit either
            continue
        write(i, result.image)
        lay = arrays.infer_layout(plane, cax)
        log.count_clipped(arrays.split_alpha(lay.to_cyx(plane), lay)[0],
                          None if masks[i] is None else ~arrays.fill_of(masks[i]))
        log.restored(i, result)
        if result.stop_reason == "user":
            cancelled = True
            break
        restored_order.append(i)
        store.attrs["napari_dip"] = {"input_layer": plan.sources[0].name, "state": "running",
                                     "slices_restored": list(restored_order)}
        if last is not None:
            yield replace(last, preview=None, final=True)
    record = log.finish(todo, plan.data.shape, mode, cancelled, check, store=store_path(store))
    store.attrs["napari_dip"] = _jsonable({**record, "input_layer": plan.sources[0].name,
                                           "state": "done"})
    yield Result(store, record, log.history)


def store_path(store) -> str | None:
    """The folder of a zarr array on the local disk (None for other stores)."""
    root = getattr(getattr(store, "store", None), "root", None)
    if root is None:
        return None
    path = getattr(store, "path", "") or ""
    return os.path.join(str(root), path) if path else str(root)
