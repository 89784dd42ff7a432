"""Engine results back to layers: dtypes, display and world metadata, names and records.

Pure numpy (no Qt, no torch), like :mod:`.plan`.
"""

from __future__ import annotations

import numpy as np

from .plan import ALL, CURRENT, Plan

SUFFIX = " [dip]"
STOP_REASON_TEXT = {
    "noise-level": "automatic stop at the noise level",
    "minimum": "automatic stop",
    "no-minimum": "automatic stop found no clear minimum",
    "cap": "iteration cap",
    "user": "stopped by the user",
}


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float values in the dtype of the input (rounded and clipped for integers)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype, copy=False)


def result_layer_kwargs(source, plan: Plan, name: str) -> dict:
    """Display and world metadata for an output layer, taken from its source layer."""
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
        "blending": source.blending,
        "rgb": bool(source.rgb),
    }
    if not source.rgb:
        kw["colormap"] = source.colormap
        kw["contrast_limits"] = source.contrast_limits
        kw["gamma"] = source.gamma
    return kw


def run_record(plan: Plan, record: dict) -> dict:
    """The engine's record of a run plus what the widget took from the layers."""
    record = dict(record)
    record["stop_iteration"] = record.get("iterations")
    record["widget"] = {
        "input_layers": [s.name for s in plan.sources],
        "mask_layer": plan.mask_name,
        "channel_axis": None if plan.layout.colour else plan.layout.channel,
        "stack": None if not plan.is_stack else (ALL if plan.slice_index is None else CURRENT),
        "slice_index": None if plan.slice_index is None
        else list(plan.layout.slice_position(plan.slice_index)),
        **plan.kwargs,
    }
    return record


def finished_text(record: dict, stop_reason: str) -> str:
    """The status line of a finished run."""
    stopped = STOP_REASON_TEXT.get(stop_reason, stop_reason)
    return (
        f"done ({stopped}): {record['iterations']} iterations, best at "
        f"{record['best_iteration']}, seed {record.get('seed')}"
    ) + slice_notes(record)


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
