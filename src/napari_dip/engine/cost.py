"""What a run will cost, known before it starts: memory, and time per iteration.

Memory comes from the network's size (:func:`.devices.estimate_memory`). Time per iteration is
measured: a few real fit steps of the run's network on random data of the run's size (a crop
of at most :data:`MEASURE_PIXELS` output pixels, scaled up by the pixel count for larger
images, since a convolutional network's cost grows with its pixels). Measurements are cached
per size, task, preset, device and thread count, so asking again is free.

In stack mode '3d' a run is one fit of a 3-D network over the whole stack (per channel group),
never tiled: its memory grows with the planes, and its step is measured the same way on a crop
of at most :data:`MEASURE_PLANES` planes and :data:`MEASURE_PIXELS` voxels.

How many iterations a run takes is *not* known beforehand when a stopping rule decides it; an
estimate says so and gives the iteration cap as an upper bound instead of inventing a figure.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..choices import STACK_MODE, STOPPING, TASK, resolve_preset
from ..formatting import format_bytes, format_duration
from .devices import DIPMemoryError, check_fits, cpu_run, estimate_memory, resolve_device
from .generators import padded_size, volume_spec
from .presets import make_config
from .tiles import choose_tiling

#: Largest number of output pixels measured directly; larger images are measured on a crop.
MEASURE_PIXELS = 256 * 256
#: Fit steps timed after one warm-up step (which builds the network, allocates memory and, on
#: CUDA, captures the step's graphs). The data term is read back at every step while timing:
#: each event is then one step, and the read waits for a GPU to finish it.
MEASURE_STEPS = 3
#: A deconvolution is timed with a Gaussian PSF of this sigma (pixels) standing in for the
#: run's: the PSF is not part of the settings an estimate is cached under, and its blur costs
#: little next to the network.
MEASURE_PSF_SIGMA = 1.5
#: Most planes of a 3-D crop measured (stack mode '3d'); Y and X shrink to fit MEASURE_PIXELS.
MEASURE_PLANES = 16

_cache: dict[tuple, tuple[float, tuple[int, ...]]] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class RunEstimate:
    """Memory and time of a run, before it starts."""

    memory_bytes: int  # peak of one fit (fits run one after another)
    seconds_per_iteration: float | None  # None when not measured
    max_iterations: int  # the cap of each fit
    stopping: str  # the stopping rule; 'none' runs every fit to the cap
    fits: int  # fits run one after another (slices x channel groups x tiles)
    device: str
    preset: str  # the concrete preset ('auto' resolved)
    measured_on: tuple[int, ...] | None = None  # output size of the measured crop
    tile: int | None = None  # tile side when one fit of the whole plane would not fit
    tiles: int = 1  # tiles per plane
    stack_mode: str | None = None  # as asked; None: a plane, or the engine chooses
    volume: tuple[int, int, int] | None = None  # (Z, Y, X) of one 3-D fit (stack mode '3d')
    too_big: bool = False  # a 3-D fit the device cannot hold (it is refused: never tiled)

    @property
    def max_seconds(self) -> float | None:
        """Time if every fit ran to its cap (the whole run when there is no stopping rule)."""
        if self.seconds_per_iteration is None:
            return None
        return self.seconds_per_iteration * self.max_iterations * self.fits

    def describe(self) -> str:
        """One line for people, e.g. for the widget or the CLI."""
        parts = [f"memory ≈ {format_bytes(self.memory_bytes)} ({self.device}, {self.preset})"]
        if self.volume is not None:
            parts.insert(0, "stack mode 3d: one fit of the whole {}×{}×{} stack".format(
                *self.volume))
        elif self.stack_mode is not None:
            parts.insert(0, f"stack mode {self.stack_mode}: one fit per slice")
        if self.too_big:
            parts.append(f"more than {self.device} has: a 3-D fit cannot be tiled, choose "
                         "stack mode 'slices' or 'warm'")
        if self.tile is not None:
            parts.append(f"too big for one fit: {self.tiles} tiles of {self.tile} px per plane")
        return " · ".join(parts + self.time_parts())

    def time_parts(self) -> list[str]:
        """The time per iteration (when measured) and the iterations: a bound when a stopping
        rule decides them, e.g. ['~0.05 s/iteration', 'the automatic stop (noise) decides how
        many iterations; at most 3000 per fit, 21 fits: ≤ 52 min 30 s']."""
        parts = []
        if self.seconds_per_iteration is not None:
            parts.append(f"~{self.seconds_per_iteration:.2g} s/iteration")
        each = "" if self.fits == 1 else f" per fit, {self.fits} fits"
        total = self.max_seconds
        if self.stopping == "none":
            text = f"runs {self.max_iterations} iterations{each}"
            parts.append(text if total is None else f"{text}: ≈ {format_duration(total)}")
        else:
            text = (f"the automatic stop ({self.stopping}) decides how many iterations; at most "
                    f"{self.max_iterations}{each}")
            parts.append(text if total is None else f"{text}: ≤ {format_duration(total)}")
        return parts


def estimate_run(
    height: int,
    width: int,
    task: str = "denoise",
    *,
    preset: str = "auto",
    device: str | torch.device = "auto",
    factor: int = 4,
    channels: int = 1,
    fits: int = 1,
    max_iters: int | None = None,
    stopping: str | None = None,
    threads: int | None = None,
    measure: bool = True,
    stack_mode: str | None = None,
    planes: int = 1,
    voxel_size=None,
) -> RunEstimate:
    """Memory and time of restoring ``fits`` planes of ``height`` x ``width`` (the input's
    size; super-resolution multiplies it by ``factor``) with ``channels`` channels each.

    ``stack_mode`` '3d' makes each fit one 3-D fit of a ``planes`` x ``height`` x ``width``
    stack (``fits`` then counts channel groups), with the network ``voxel_size`` (Z, Y, X)
    shapes; other modes only name the mode. ``max_iters``, ``stopping`` and ``threads`` (CPU
    threads; None: chosen from the machine's load, as a run chooses them) are as in
    :func:`~napari_dip.engine.restore`. ``measure=False`` skips the timing (memory only).
    """
    TASK.check(task)
    if stack_mode is not None:
        STACK_MODE.check(stack_mode)
    dev = resolve_device(device)
    preset = resolve_preset(preset, dev.type)
    config = make_config(task, preset, factor if task == "sr" else None,
                         max_iters=max_iters, stopping=stopping)
    STOPPING.check(config.stopping)
    if stack_mode == "3d":
        return _estimate_volume((int(planes), height, width), task, config, dev, preset,
                                channels=channels, fits=fits, voxel_size=voxel_size,
                                threads=threads, measure=measure)
    f = factor if task == "sr" else 1
    # a plane too big for one fit is restored in tiles (as restore_iter does by default)
    tiling = choose_tiling((height, width), config.net, dev, f)
    fit_hw, n_tiles = tiling.fit_shape, len(tiling.tiles()) if tiling.tiled else 1
    spi = measured = None
    if measure:
        spi, measured = seconds_per_iteration(*fit_hw, task, preset=preset, device=dev,
                                              factor=factor, channels=channels, threads=threads)
    return RunEstimate(
        memory_bytes=estimate_memory(fit_hw[0] * f, fit_hw[1] * f, config.net),
        seconds_per_iteration=spi, max_iterations=config.max_iters, stopping=config.stopping,
        fits=max(int(fits), 1) * n_tiles, device=str(dev), preset=preset, measured_on=measured,
        tile=tiling.tile, tiles=n_tiles, stack_mode=stack_mode,
    )


def _estimate_volume(zyx: tuple[int, int, int], task: str, config, dev: torch.device,
                     preset: str, *, channels: int, fits: int, voxel_size, threads: int | None,
                     measure: bool) -> RunEstimate:
    """Stack mode '3d': one 3-D fit of the whole (Z, Y, X) stack per channel group."""
    from .volume import VOLUME_TASKS

    if task not in VOLUME_TASKS:
        raise ValueError(f"stack mode '3d' restores tasks {' and '.join(VOLUME_TASKS)}, not "
                         f"{task!r}; use stack mode 'slices' or 'warm'")
    z, h, w = zyx
    try:  # the run's own check: a volume too big is refused, not tiled
        check_fits(h, w, config.net, dev, preset, planes=z)
        too_big = False
    except DIPMemoryError:
        too_big = True
    spi = measured = None
    if measure and not too_big:
        spi, measured = seconds_per_volume_iteration(
            z, h, w, task, preset=preset, device=dev, channels=channels,
            voxel_size=voxel_size, threads=threads)
    return RunEstimate(
        # counted as the run's memory check counts it (benchmarks.memory3d checks it against
        # the settled peak of real 3-D fits)
        memory_bytes=estimate_memory(h, w, config.net, planes=z),
        seconds_per_iteration=spi, max_iterations=config.max_iters, stopping=config.stopping,
        fits=max(int(fits), 1), device=str(dev), preset=preset, measured_on=measured,
        stack_mode="3d", volume=(z, h, w), too_big=too_big,
    )


def seconds_per_iteration(height: int, width: int, task: str = "denoise", *,
                          preset: str = "light", device: str | torch.device = "cpu",
                          factor: int = 4, channels: int = 1,
                          threads: int | None = None) -> tuple[float, tuple[int, int]]:
    """Measured wall time of one fit step on an image of this size, with ``threads`` CPU
    threads (None: chosen as a run chooses them), and the output size that was measured (a
    crop of large images; the time is scaled to the full size). Cached."""
    dev = resolve_device(device)
    preset = resolve_preset(preset, dev.type)
    f = factor if task == "sr" else 1
    depth = make_config(task, preset, factor if task == "sr" else None).net.depth
    # a crop with at most MEASURE_PIXELS output pixels, of the image's aspect ratio
    shrink = min(1.0, math.sqrt(MEASURE_PIXELS / (height * f * width * f)))
    h, w = max(round(height * shrink), 8), max(round(width * shrink), 8)
    full = padded_size(height * f, depth) * padded_size(width * f, depth)
    crop = padded_size(h * f, depth) * padded_size(w * f, depth)
    key = (padded_size(height * f, depth), padded_size(width * f, depth), task, preset,
           str(dev), f, int(channels))
    return _cached(key, dev, threads, lambda: _measure(h, w, task, preset, dev, factor, channels),
                   full / crop, (h * f, w * f))


def _cached(key: tuple, dev: torch.device, threads: int | None, measure, scale: float,
            measured_on: tuple[int, ...], keep_freed: bool = True) -> tuple[float, tuple[int, ...]]:
    """``measure()`` (seconds per step of a crop) times ``scale``, with the crop's size; cached
    under ``key`` plus the CPU threads it runs with, in the CPU settings of the run it times
    (``keep_freed``: see :func:`.devices.cpu_run`)."""
    with cpu_run(threads, keep_freed) as n_threads:
        key = (*key, n_threads if dev.type == "cpu" else None)
        with _lock:
            if key in _cache:
                return _cache[key]
        value = (measure() * scale, measured_on)
    with _lock:
        _cache[key] = value
    return value


def _measure(height: int, width: int, task: str, preset: str, device: torch.device,
             factor: int, channels: int) -> float:
    """Seconds per fit step of the run's network on random data of this (input) size."""
    from .fit import fit
    from .psf import gaussian_psf
    from .restoration import make_operator

    config = make_config(task, preset, factor if task == "sr" else None)
    config = replace(config, max_iters=MEASURE_STEPS + 1, stopping="none", preview_every=0,
                     sync_every=1)
    rng = np.random.default_rng(0)
    observation = torch.from_numpy(rng.random((1, channels, height, width), dtype=np.float32))
    mask = None
    if task == "inpaint":
        mask = np.zeros((height, width), bool)
        mask[::5, ::5] = True  # a few pixels to fill
    psf = gaussian_psf(MEASURE_PSF_SIGMA, 2) if task == "deconvolve" else None
    operator = make_operator(task, (height, width), mask, factor, psf=psf)
    return _time_steps(fit(observation, operator, config, device=device, seed=0))


def seconds_per_volume_iteration(planes: int, height: int, width: int, task: str = "denoise",
                                 *, preset: str = "light", device: str | torch.device = "cpu",
                                 channels: int = 1, voxel_size=None,
                                 threads: int | None = None) -> tuple[float, tuple[int, ...]]:
    """Measured wall time of one step of the 3-D fit of a ``planes`` x ``height`` x ``width``
    stack (stack mode '3d'), and the (Z, Y, X) crop measured; scaled to the whole stack by the
    voxels the network computes. Cached, as :func:`seconds_per_iteration`."""
    from .volume import KEEP_FREED

    dev = resolve_device(device)
    preset = resolve_preset(preset, dev.type)
    base = make_config(task, preset, None).net
    spec = volume_spec(base, planes, voxel_size)
    # a crop of at most MEASURE_PLANES planes and MEASURE_PIXELS voxels, of the plane's shape
    z = min(planes, MEASURE_PLANES)
    shrink = min(1.0, math.sqrt(MEASURE_PIXELS / (z * height * width)))
    h, w = max(round(height * shrink), 8), max(round(width * shrink), 8)
    crop_spec = volume_spec(base, z, voxel_size)
    full = _padded_voxels(planes, height, width, spec)
    crop = _padded_voxels(z, h, w, crop_spec)
    key = ("3d", planes, padded_size(height, base.depth), padded_size(width, base.depth),
           spec.z_strides, spec.z_kernels, task, preset, str(dev), int(channels))
    return _cached(key, dev, threads,
                   lambda: _measure_volume(z, h, w, task, preset, dev, channels, voxel_size),
                   full / crop, (z, h, w), keep_freed=KEEP_FREED)


def _padded_voxels(planes: int, height: int, width: int, spec) -> int:
    """Voxels a 3-D network computes for a stack: Y and X padded as in 2-D, Z to its strides."""
    return (-(-planes // spec.z_multiple) * spec.z_multiple
            * padded_size(height, spec.depth) * padded_size(width, spec.depth))


def _measure_volume(planes: int, height: int, width: int, task: str, preset: str,
                    device: torch.device, channels: int, voxel_size) -> float:
    """Seconds per step of the 3-D fit on random data of this (Z, Y, X) size."""
    from .fit import fit
    from .operators import Blur, Identity
    from .psf import gaussian_psf

    config = make_config(task, preset, None)
    config = replace(config, net=volume_spec(config.net, planes, voxel_size),
                     max_iters=MEASURE_STEPS + 1, stopping="none", preview_every=0, sync_every=1)
    rng = np.random.default_rng(0)
    shape = (planes, height, width)
    observation = torch.from_numpy(rng.random((1, channels, *shape), dtype=np.float32))
    net_input = torch.from_numpy(
        rng.random((1, config.input_channels, *shape), dtype=np.float32)) * config.input_scale
    operator = Blur(gaussian_psf(MEASURE_PSF_SIGMA, 3).kernel) if task == "deconvolve" \
        else Identity()
    # a fixed noise level: the 2-D estimator cannot read a volume, and 'none' never stops
    return _time_steps(fit(observation, operator, config, device=device, seed=0,
                           net_input=net_input, noise_variance=1e-3))


def _time_steps(steps) -> float:
    """Seconds per step of a fit, after one warm-up step."""
    try:
        next(steps)  # warm-up: builds the network, allocates its buffers
        t0 = time.perf_counter()
        for _ in range(MEASURE_STEPS):
            next(steps)
        return (time.perf_counter() - t0) / MEASURE_STEPS
    finally:
        steps.close()


def clear_cache() -> None:
    """Forget every measurement (e.g. after changing the number of torch threads)."""
    with _lock:
        _cache.clear()
