"""Device choice, memory estimates and out-of-memory errors a user can act on."""

from __future__ import annotations

import contextlib
import os

import torch

from .generators import GeneratorSpec


class DIPMemoryError(MemoryError):
    """The device ran out of memory; the message says how big the job was and what to try."""


def available_devices() -> list[str]:
    """Devices torch can use here, best first; always ends with 'cpu'."""
    devices = [f"cuda:{i}" if i else "cuda" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return [*devices, "cpu"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' picks CUDA, then MPS, then the CPU; anything else must be usable here."""
    if device is None or device == "auto":
        return torch.device(available_devices()[0])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'mps'") from exc
    if dev.type == "cuda" and (
        not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()
    ):
        raise ValueError(
            f"device {device!r} is not available here (this torch sees "
            f"{torch.cuda.device_count()} CUDA device(s)); use 'auto' or 'cpu'"
        )
    if dev.type == "mps" and "mps" not in available_devices():
        raise ValueError("device 'mps' is not available here; use 'auto' or 'cpu'")
    return dev


# Peak bytes per output pixel of one training step, fitted to measurements on the CPU (fresh
# process, peak resident set growth over three steps at 256x256): the paper's net 7.7 KB/px,
# the light net 3.2 KB/px. Activations scale with the channel widths per scale (a scale holds
# 1/4 of the pixels of the one above); the rest (the input z and its jitter, the output, the
# full-resolution buffers of the first level) does not.
_BYTES_PER_CHANNEL_PIXEL = 17
_BYTES_PER_PIXEL_BASE = 2100


def estimate_memory(height: int, width: int, spec: GeneratorSpec) -> int:
    """Rough peak memory in bytes of one fit step on an image of ``height`` x ``width``."""
    weight = sum((d + u + k) / 4**i for i, (d, u, k) in enumerate(zip(spec.down, spec.up,
                                                                       spec.skip)))
    per_pixel = _BYTES_PER_CHANNEL_PIXEL * weight + _BYTES_PER_PIXEL_BASE
    return int(per_pixel * height * width) + 2**26


def device_memory(device: torch.device) -> int | None:
    """Total memory of ``device`` in bytes (system RAM for the CPU), or None if unknown."""
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[1]
        if device.type == "cpu":
            import os

            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (RuntimeError, ValueError, OSError, AttributeError):
        pass
    return None


def check_fits(height: int, width: int, spec: GeneratorSpec, device: torch.device,
               preset: str) -> None:
    """Refuse up front a job that cannot fit in the device's memory at all."""
    total = device_memory(device)
    if total is not None and estimate_memory(height, width, spec) > 0.9 * total:
        raise memory_error(height, width, spec, device, preset, total)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def memory_error(height: int, width: int, spec: GeneratorSpec, device: torch.device,
                 preset: str, total: int | None = None) -> DIPMemoryError:
    need = estimate_memory(height, width, spec) / 2**30
    has = "" if total is None else f" of the {total / 2**30:.0f} GiB it has"
    tips = []
    if preset != "light":
        tips.append("the 'light' preset")
    tips += ["a crop or a downscaled copy of the image"]
    if device.type != "cpu":
        tips.append("device 'cpu' (slower, but uses system memory)")
    return DIPMemoryError(
        f"{device} ran out of memory restoring a {height}x{width} image with the '{preset}' "
        f"network (a step needs about {need:.1f} GiB{has}). Try {', or '.join(tips)}."
    )


def choose_threads(reserve: int = 0) -> int:
    """torch threads for a CPU run: the cores this process may use, minus ``reserve`` (e.g. one
    for a GUI) and minus what other processes keep busy (the 1-minute load average).

    On a shared machine OpenMP threads spin-wait on each other: measured on a 2-core machine at
    load 2, two threads used 4x the CPU time of one and ran 4x slower. The environment variable
    ``NAPARI_DIP_THREADS`` overrides the choice (e.g. for cluster jobs given N cores).
    """
    fixed = os.environ.get("NAPARI_DIP_THREADS")
    if fixed:
        return max(1, int(fixed))
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, min(cores - reserve, int(cores - reserve - busy + 0.5)))


@contextlib.contextmanager
def cpu_threads(threads: int | None):
    """Run the block with ``threads`` torch threads (None: :func:`choose_threads`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or choose_threads())
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
