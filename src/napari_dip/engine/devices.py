"""Device choice, memory estimates and out-of-memory errors a user can act on."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading

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


# The 2-D estimate for as many pixels as a volume has voxels was 0.79-1.53x a 3-D fit's settled
# peak (40 iterations) on 8 stacks (benchmarks.memory3d): a volume has overheads of its own.
_VOLUME_FACTOR = 1.4


def estimate_memory(height: int, width: int, spec: GeneratorSpec, planes: int = 1) -> int:
    """Rough peak memory in bytes of a fit of an image of ``height`` x ``width``, or with
    ``planes`` > 1 of a 3-D fit of a (planes, height, width) volume (``spec`` then is the 2-D
    net the volume's is made from)."""
    weight = sum((d + u + k) / 4**i for i, (d, u, k) in enumerate(zip(spec.down, spec.up,
                                                                       spec.skip)))
    per_pixel = _BYTES_PER_CHANNEL_PIXEL * weight + _BYTES_PER_PIXEL_BASE
    need = per_pixel * planes * height * width + 2**26
    return int(need * _VOLUME_FACTOR if planes > 1 else need)


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
               preset: str, planes: int = 1) -> None:
    """Refuse up front a job that cannot fit in the device's memory at all (``planes`` as in
    :func:`estimate_memory`)."""
    total = device_memory(device)
    if total is not None and estimate_memory(height, width, spec, planes) > 0.9 * total:
        raise memory_error(height, width, spec, device, preset, total, planes)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def memory_error(height: int, width: int, spec: GeneratorSpec, device: torch.device,
                 preset: str, total: int | None = None, planes: int = 1) -> DIPMemoryError:
    need = estimate_memory(height, width, spec, planes) / 2**30
    has = "" if total is None else f" of the {total / 2**30:.0f} GiB it has"
    tips = []
    if preset != "light":
        tips.append("the 'light' preset")
    tips += ["a crop or a downscaled copy of the image"]
    if device.type != "cpu":
        tips.append("device 'cpu' (slower, but uses system memory)")
    what = f"{height}x{width} image" if planes == 1 else f"{planes}x{height}x{width} volume"
    return DIPMemoryError(
        f"{device} ran out of memory restoring a {what} with the '{preset}' "
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
def cpu_run(threads: int | None, keep_freed: bool = True):
    """Run the block as CPU fits do: ``threads`` torch threads (None: :func:`choose_threads`)
    and, with ``keep_freed``, freed memory kept for the next step (:func:`keep_freed_memory`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or choose_threads())
    try:
        with keep_freed_memory() if keep_freed else contextlib.nullcontext():
            yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


# Where glibc's own dynamic rule takes the thresholds once a process has freed a block of
# 32 MiB or more (mallopt(3)): a setting cannot hand the rule back, nor read it.
_GLIBC_MMAP_THRESHOLD_MAX = 32 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BELOW = 1 << 30
_heap = {"users": 0, "lock": threading.Lock()}


@functools.cache
def _glibc():
    """The C library where it is glibc (Linux), else None."""
    if not sys.platform.startswith("linux") or os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return None  # elsewhere nothing to do; a user's own setting wins
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # musl and others have no mallopt
        return None


@contextlib.contextmanager
def keep_freed_memory():
    """Keep the memory a fit frees in the process's heap while the block runs (glibc only).

    A fit step frees and re-allocates the same activations every iteration. glibc hands blocks
    above its mmap threshold straight back to the system, so every step paid for fresh zeroed
    pages: 1,800 (128²) to 74,000 (512²) page faults per iteration of the light denoising fit,
    10-25% of its CPU time (one thread, 2-core test machine). Inside the block no block under
    1 GiB is returned until the block ends. Then the thresholds go to where glibc's own rule
    takes them after a large block, and the heap is trimmed: the viewer does not keep a
    finished run's memory. The price is a higher peak while it runs (freed blocks a few bytes
    too small for the next, aligned, request wait to be merged): +7-27% on a 512² fit, which
    is why volumes do without.
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    with _heap["lock"]:
        _heap["users"] += 1
        if _heap["users"] == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BELOW)
    try:
        yield
    finally:
        with _heap["lock"]:
            _heap["users"] -= 1
            if _heap["users"] == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_THRESHOLD_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, 2 * _GLIBC_MMAP_THRESHOLD_MAX)
                libc.malloc_trim(0)
