"""Numbers and choices for people: durations, sizes and what a run chose for itself (no torch,
no Qt; the CLI, the widget and the engine share it)."""

from __future__ import annotations

import numpy as np


def format_duration(seconds: float) -> str:
    """'4.2 s', '12 s', '3 min 05 s', '2 h 10 min'."""
    seconds = max(float(seconds), 0.0)
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_bytes(n: float) -> str:
    """'512 bytes', '2.5 MB', '1.2 GB' (powers of 1000)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def choice_notes(record: dict) -> str:
    """The noise model, a deconvolution's headroom, a float32 result chosen for an input of few
    integer levels, the stack mode and the second stage a run used, and why where it chose them
    itself, one per line, e.g. '\\nnoise model: poisson-gaussian (auto: noise std grows
    3.10x ...)'; '' for records without them."""
    lines = []
    noise = record.get("noise_model")
    if isinstance(noise, dict) and noise.get("model"):
        auto = noise.get("requested") == "auto"
        lines.append(f"noise model: {noise['model']}"
                     + (f" (auto: {noise.get('reason')})" if auto and noise.get("reason") else ""))
    op = record.get("operator")
    if isinstance(op, dict) and op.get("peak_ratio") is not None:
        lines.append(_headroom_note(op, record.get("output_dtype", record.get("input_dtype"))))
    result = record.get("result_type")
    if isinstance(result, dict) and result.get("reason") and "input_levels" in result:
        lines.append(f"result type: {result['dtype']} (auto: {result['reason']})")
    mode = record.get("stack_mode")
    if isinstance(mode, dict) and mode.get("mode"):
        auto = mode.get("requested") is None and mode.get("reason")
        lines.append(f"stack mode: {mode['mode']}" + (f" (auto: {mode['reason']})" if auto else ""))
    fits = [p for r in (record, *(record.get("slices") or [])) if isinstance(r, dict)
            for p in r.get("planes") or [] if isinstance(p, dict)]
    stages = {p["refinement"]["method"] for p in fits if isinstance(p.get("refinement"), dict)}
    if stages:
        done = sum(isinstance(p.get("refinement"), dict) for p in fits)
        where = "" if done == len(fits) else f" on {done} of {len(fits)} fits"
        auto = any(p["refinement"].get("asked") == "auto" for p in fits
                   if isinstance(p.get("refinement"), dict))
        pilot = ("the fit's estimate" if stages <= {"wiener"}
                 else "the fit's estimate averaged with hard thresholding")
        lines.append(f"second stage: {', '.join(sorted(stages))}{where}"
                     f"{' (auto: by the noise model)' if auto else ''} (a Wiener filter of the "
                     f"image with {pilot} as pilot)")
    return "".join("\n" + line for line in lines)


def _headroom_note(op: dict, dtype) -> str:
    """Whether a deconvolution could restore peaks above the input's range, and why (per
    channel where there are several; records before per-channel headroom hold one number)."""
    ratios = np.atleast_1d(op["peak_ratio"]).tolist()
    gains = np.broadcast_to(np.atleast_1d(op.get("gain", 1.0)), (len(ratios),)).tolist()
    clipped = "; 8-bit result: its peaks stop at 255, choose result type float32 to keep " \
        "them" if dtype == "uint8" and max(gains) > 1 else ""

    def room(gain, ratio, where=""):
        test = f"a short Richardson-Lucy run raised the peaks{where} {ratio:.1f}x"
        if gain == 1.0:
            return f"within the input's range ({test})"
        return f"room for peaks up to {gain:.0f}x the input's range ({test})"

    if len(ratios) == 1:
        return f"deconvolution: {room(gains[0], ratios[0])}{clipped}"
    if len(set(gains)) == 1:  # channels fitted jointly share one room: say it once
        lo, hi = min(ratios), max(ratios)
        span = f"{lo:.1f}x" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}-{hi:.1f}x"
        test = f"a short Richardson-Lucy run raised the channels' peaks {span}"
        if gains[0] == 1.0:
            return f"deconvolution: within the input's range ({test}){clipped}"
        return (f"deconvolution: room for peaks up to {gains[0]:.0f}x the input's range in "
                f"every channel ({test}){clipped}")
    return "deconvolution: " + "; ".join(
        f"channel {c}: {room(g, r, ' there')}" for c, (g, r) in enumerate(zip(gains, ratios))
    ) + clipped