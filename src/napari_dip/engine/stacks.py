"""Stacks (Z, T, ... over 2-D planes): restored slice by slice with one shared intensity map.

Sharing the normalisation keeps intensities comparable between slices; the slice loop lives
here so the CLI and the widget never iterate over axes themselves.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np

from . import arrays, axes
from .intensity import IntensityMap
from .restoration import Progress, Result, as_cancel_check, drain, draw_seed, restore_iter
from .stopping import combine_stop_reasons


def _stack_normalisation(stack: np.ndarray, layout: arrays.Layout, masks) -> IntensityMap:
    joint = layout.kind == "channels_last"
    return IntensityMap.combine([
        IntensityMap.fit(layout.to_cyx(s), joint, known=None if m is None else np.asarray(m) == 0)
        for s, m in zip(stack, masks)
    ])


def _passthrough(plane: np.ndarray, task: str, factor: int, layout: arrays.Layout) -> np.ndarray:
    """An unrestored slice in the output's shape (nearest-neighbour upsampled for SR)."""
    if task != "sr":
        return plane.copy()
    return layout.from_cyx(arrays.repeat_yx(layout.to_cyx(plane), factor, 1))


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
    **kwargs,
) -> Iterator[Progress | Result]:
    """Restore each 2-D plane along axis 0 of ``stack``; yields progress, then one Result.

    ``stack`` is (S, Y, X), (S, C, Y, X) or (S, Y, X, RGB); fold extra leading axes (T and Z)
    into S first. ``mask`` is (Y, X), shared by every slice, or one per slice (S, Y, X).
    ``slices`` restores only those indices; the others are copied through unchanged.
    ``channel_axis`` is counted in one slice's axes, as for :func:`restore_iter` (0 or -1).
    :mod:`.axes` folds N-D arrays into this form and back. Other keywords go to
    :func:`~napari_dip.engine.restore_iter`.
    """
    stack = np.asarray(stack)
    arrays.check_dtype(stack, name)
    if stack.ndim not in (3, 4):
        raise ValueError(
            f"{name} has shape {stack.shape}; a stack is (S, Y, X), (S, C, Y, X) or "
            "(S, Y, X, RGB). Reshape extra axes into the first one."
        )
    layout = arrays.infer_layout(stack[0], channel_axis, f"{name} slice")
    plane_axis = layout.channel_axis
    n = stack.shape[0]
    spatial = layout.to_cyx(stack[0]).shape[1:]
    masks = axes.slice_masks(mask, n, spatial)
    todo = list(range(n)) if slices is None else [int(i) % n for i in slices]
    arrays.check_values(stack[todo[0]] if len(todo) == 1 else stack, name)
    norm = _stack_normalisation(stack[todo], layout, [masks[i] for i in todo])
    if seed is None:
        seed = draw_seed()
    check = as_cancel_check(cancel)

    out = np.stack([_passthrough(s, task, factor, layout) for s in stack])
    records, history, last = [], [], {"task": task, "seed": seed}
    for i in todo:
        if check is not None and check():
            break
        result = last_progress = None
        for event in restore_iter(
            stack[i], task, mask=masks[i], channel_axis=plane_axis, factor=factor, seed=seed,
            cancel=check, normalisation=norm, name=f"{name} slice {i}",
            reference=None if reference is None else reference[i], **kwargs,
        ):
            if isinstance(event, Result):
                result = event
            else:
                event.slice_index, event.n_slices = i, len(todo)
                last_progress = event
                yield event
        if result.stop_reason != "user" and last_progress is not None:
            yield replace(last_progress, preview=result.image.astype(np.float32), final=True)
        out[i] = result.image
        records.append({"slice": i, **{k_: result.record[k_] for k_ in (
            "iterations", "best_iteration", "stop_reason", "seconds", "planes")}})
        history.append(result.history)
        last = result.record
        if result.stop_reason == "user":
            break
    stopped = [r["stop_reason"] for r in records]
    record = {
        **{k_: v for k_, v in last.items() if k_ not in ("planes",)},
        "input_shape": list(stack.shape),
        "slices": records,
        "slices_done": [r["slice"] for r in records if r["stop_reason"] != "user"],
        "stop_reason": "user" if len(records) < len(todo) else combine_stop_reasons(stopped),
        "iterations": sum(r["iterations"] for r in records),
        "best_iteration": [r["best_iteration"] for r in records],
        "seconds": round(sum(r["seconds"] for r in records), 3),
    }
    yield Result(out, record, history)


def restore_stack(stack: np.ndarray, task: str = "denoise", *, callback=None, **kwargs) -> Result:
    """Blocking form of :func:`restore_stack_iter`."""
    return drain(restore_stack_iter(stack, task, **kwargs), callback)
