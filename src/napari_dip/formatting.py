"""Numbers for people: durations and sizes (no torch, no Qt; the CLI, the widget and the engine
share it)."""

from __future__ import annotations


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
