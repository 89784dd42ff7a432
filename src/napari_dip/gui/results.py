"""Engine results back to layers: dtypes, display and world metadata, what a result is, and the
words the dock shows while a run goes on.

Pure numpy (no Qt, no torch), like :mod:`.plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..choices import result_type_record
from ..formatting import choice_notes, format_duration
from .plan import ALL, CURRENT, METADATA_KEY, Plan

SUFFIX = " [dip]"
STOP_REASON_TEXT = {
    "noise-level": "automatic stop at the noise level",
    "minimum": "automatic stop at the variance minimum",
    "no-minimum": "automatic stop, no clear minimum found",
    "cap": "iteration cap reached",
    "user": "stopped",
}
#: What a result layer holds: the whole run; a run stopped early (its best estimate so far);
#: some slices of a stack (the others are the input); nothing worth keeping.
STATES = ("finished", "stopped", "partial", "empty")


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float values in the dtype of the input (rounded and clipped for integers)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def result_layer_kwargs(source, plan: Plan, name: str, *, covers: bool = True,
                        metadata: dict | None = None) -> dict:
    """Display and world metadata for an output layer, taken from its source layer.

    ``covers``: the layer is drawn opaque over what lies below (the input), instead of
    inheriting the input's blending (additive inputs would be summed with their result).
    Further channels of one result keep their source's blending, so they still combine with
    the first one as the inputs did."""
    scale = np.array(source.scale, dtype=float)
    translate = np.array(source.translate, dtype=float)
    if plan.task == "sr":
        f = plan.factor
        nd = len(scale)
        for ax in (nd - 2, nd - 1):
            # output pixel j sits at input coordinate (j + 0.5) / f - 0.5
            translate[ax] -= scale[ax] * (f - 1) / (2 * f)
            scale[ax] /= f
    kw = {
        "name": name,
        "scale": scale,
        "translate": translate,
        "rotate": source.rotate,
        "shear": source.shear,
        "units": source.units,
        "axis_labels": source.axis_labels,
        "blending": "translucent" if covers else source.blending,
        "opacity": 1.0,
        "rgb": bool(source.rgb),
        "metadata": {**dict(source.metadata), METADATA_KEY: dict(metadata or {})},
    }
    if not source.rgb:
        kw["colormap"] = source.colormap
        kw["contrast_limits"] = source.contrast_limits
        kw["gamma"] = source.gamma
    return kw


def run_record(plan: Plan, record: dict, outcome: Outcome) -> dict:
    """The engine's record of a run plus what the widget took from the layers and what the
    result layer holds."""
    record = dict(record)
    record["stop_iteration"] = record.get("iterations")
    record["result_type"] = result_type(plan)
    record["widget"] = {
        "input_layers": [s.name for s in plan.sources],
        "mask_layer": plan.mask_name,
        "mask_inverted": plan.mask_inverted,
        "channel_axis": None if plan.layout.colour else plan.layout.channel,
        "stack": None if not plan.is_stack else (ALL if plan.slice_index is None else CURRENT),
        "slice_index": None if plan.slice_index is None
        else list(plan.layout.slice_position(plan.slice_index)),
        **plan.kwargs,
        "task": plan.task,
        "psf_layer": plan.psf_name,
        "psf_sigma": plan.psf_sigma,
        "guide_layer": plan.guide_name,
        "stack_mode": (plan.stack_mode or "auto") if plan.is_stack else None,
        "output_dtype": f"{plan.output_dtype} ({plan.result_dtype})",
        "voxel_size": None if plan.voxel_size is None else list(plan.voxel_size),
    }
    record["outcome"] = outcome.to_dict()
    return record


@dataclass
class Outcome:
    """What a finished run's result layer holds, in words and for its metadata."""

    state: str  # one of STATES
    label: str  # added to the layer name ('' for a finished run)
    text: str  # the dock's status line
    slices_restored: list[int] = field(default_factory=list)
    slices_not_restored: list[int] = field(default_factory=list)  # left as the input
    slice_stopped: int | None = None  # the slice stopped part-way (holds its best estimate)

    @property
    def keeps_result(self) -> bool:
        return self.state != "empty"

    def layer_name(self, source_name: str) -> str:
        return source_name + SUFFIX + (f" ({self.label})" if self.label else "")

    def to_dict(self) -> dict:
        out = {"state": self.state, "description": self.label or "finished"}
        if self.slices_restored or self.slices_not_restored:
            out["slices_restored"] = self.slices_restored
            out["slices_not_restored"] = self.slices_not_restored
            out["slice_stopped"] = self.slice_stopped
        return out


def describe_outcome(plan: Plan, record: dict, estimate_shown: bool) -> Outcome:
    """Finished, stopped at iteration k, some slices restored, or nothing worth keeping.

    ``estimate_shown``: the run sent at least one estimate of the network (a preview) before
    it ended; a run stopped before that holds only the untrained network's output.
    The text ends with what the run chose for itself (:func:`choice_notes`) and how it used a
    3-D PSF layer (:func:`psf_note`)."""
    outcome = _outcome(plan, record, estimate_shown)
    if outcome.keeps_result:
        outcome.text += choice_notes({**record, "result_type": result_type(plan)}) + \
            psf_note(plan, record)
    return outcome


def result_type(plan: Plan) -> dict:
    """The record's ``result_type``: what was asked, the result's dtype and why 'auto' chose
    float32 (:func:`napari_dip.choices.result_type_record`)."""
    return result_type_record(plan.output_dtype, plan.task, plan.result_dtype, plan.levels)


def psf_note(plan: Plan, record: dict) -> str:
    """'\nPSF: the in-focus plane of the 3-D PSF layer ...' when a run fitted 2-D planes with
    a 3-D PSF layer (the engine keeps its in-focus plane), with the way to use it whole; ''
    otherwise."""
    if plan.psf is None or np.squeeze(plan.psf).ndim != 3:
        return ""
    used = ((record.get("operator") or {}).get("psf") or {}).get("shape")
    if used is None or len(used) != 2:
        return ""  # used whole (stack mode '3d'), or no fit ran
    how = ("slices are restored one by one; stack mode '3d' with 'all slices' deconvolves "
           "with the whole PSF") if plan.is_stack else "the image is one plane"
    return f"\nPSF: the in-focus plane of the 3-D PSF layer {plan.psf_name!r} ({how})"


def _outcome(plan: Plan, record: dict, estimate_shown: bool) -> Outcome:
    stopped = record.get("stop_reason") == "user"
    kept = f"kept iteration {_picked_iteration(record)}"
    seed = f"seed {record.get('seed')}"
    volume = (record.get("stack_mode") or {}).get("mode") == "3d"  # one fit, no slices
    if plan.is_stack and plan.slice_index is None and not volume:
        return _stack_outcome(plan, record, stopped, estimate_shown, seed)
    iterations = record.get("iterations", 0)
    if not stopped:
        how = STOP_REASON_TEXT.get(record.get("stop_reason"), record.get("stop_reason"))
        text = (f"done: {how} after {iterations} iterations ({kept}), "
                f"{format_duration(record.get('seconds', 0))}, {seed}")
        return Outcome("finished", "", text + slice_notes(record))
    if not estimate_shown:
        return Outcome("empty", "", f"stopped at iteration {iterations}, before the first "
                       "estimate: no result kept")
    label = f"stopped at iteration {iterations}"
    return Outcome("stopped", label, f"{label} ({kept}), {seed}: the estimate at that point, "
                   "not a finished result")


def _stack_outcome(plan: Plan, record: dict, stopped: bool, estimate_shown: bool,
                   seed: str) -> Outcome:
    entries = {e["slice"]: e for e in record.get("slices", [])}
    asked = plan.slices_asked
    skipped = [i for i in asked if "skipped" in entries.get(i, {})]
    restored = list(record.get("slices_done", []))
    counted = [i for i in asked if i not in skipped]
    not_restored = [i for i in counted if i not in restored]
    in_progress = [i for i, e in entries.items() if e.get("stop_reason") == "user"]
    slice_stopped = in_progress[0] if in_progress else None
    if not not_restored:
        how = STOP_REASON_TEXT.get(record.get("stop_reason"), record.get("stop_reason"))
        text = (f"done: {len(restored)} slice(s) restored ({how}), "
                f"{record.get('iterations', 0)} iterations in all, "
                f"{format_duration(record.get('seconds', 0))}, {seed}")
        return Outcome("finished", "", text + slice_notes(record), restored, [])
    if not restored and not estimate_shown:
        return Outcome("empty", "", "stopped before the first estimate: no result kept",
                       [], not_restored)
    label = f"{len(restored)} of {len(counted)} slices restored"
    names = ", ".join(plan.slice_name(i) for i in not_restored[:6]) + (
        ", …" if len(not_restored) > 6 else "")
    how = "stopped" if stopped else "some slices failed"
    partly = "" if slice_stopped is None else (
        f"; slice {plan.slice_name(slice_stopped)} holds its estimate when stopped")
    left = "left empty, read as 0" if plan.lazy else "left as the input"
    text = (f"{how}: {label}; not restored ({left}): {names}{partly}, {seed}"
            + slice_notes(record))
    return Outcome("partial", label, text, restored, not_restored, slice_stopped)


def _picked_iteration(record: dict):
    """The iterate the stopping rule picked (the image kept is the output average centred on
    it); several for channels restored one at a time."""
    best = record.get("best_iteration")
    if isinstance(best, (list, tuple)):
        return ", ".join(str(b) for b in best if b is not None) or "none"
    return best


def slice_notes(record: dict) -> str:
    """', 2 slice(s) passed through (constant)' for the status line."""
    skipped = [e for e in record.get("slices", []) if "skipped" in e]
    if not skipped:
        return ""
    reasons = sorted({e["skipped"] for e in skipped})
    return f", {len(skipped)} slice(s) passed through ({', '.join(reasons)})"


def failed_slices_text(plan: Plan, record: dict) -> str | None:
    """A warning naming the slices that could not be restored, or None."""
    failed = [e for e in record.get("slices", []) if "error" in e]
    if not failed:
        return None
    where = "; ".join(f"slice {plan.slice_name(e['slice'])}: {e['error']}" for e in failed)
    return (f"{len(failed)} slice(s) could not be restored and were left as they were "
            f"({where}); the other slices were kept")


def progress_text(plan: Plan, event, elapsed: float, slices_done: int) -> str:
    """The status line during a fit: where, iterations done, time, the stopping rule's state.
    The iteration cap is not shown as a goal: the stopping rule usually ends a fit earlier."""
    parts = []
    if plan.is_stack and event.slice_index is not None:
        where = f"slice {plan.slice_name(event.slice_index)}"
        if plan.slice_index is None:
            where += f" ({slices_done + 1} of {len(plan.slices_asked)})"
        parts.append(where)
    parts += fit_parts(event)
    parts.append(f"iteration {event.iteration}")
    parts.append(format_duration(elapsed))
    if event.status:
        parts.append(event.status)
    return " · ".join(parts)


def fit_parts(event) -> list[str]:
    """Which fit of a plane an event is from: its tile, its channel group ('' parts omitted)."""
    parts = []
    n_tiles = getattr(event, "n_tiles", None)
    if n_tiles and n_tiles > 1:
        parts.append(f"tile {event.tile_index + 1} of {n_tiles}")
    if event.n_planes > 1:
        parts.append(f"channel {event.plane + 1} of {event.n_planes}")
    return parts


def preparing_text(elapsed: float) -> str:
    return ("preparing: intensity range, noise level and network (the first steps are the "
            f"slowest) · {format_duration(elapsed)}")
