"""What a run will cost, known before it starts: memory, and time per iteration.

Memory comes from the network's size (:func:`.devices.estimate_memory`). Time per iteration is
measured: a few real fit steps of the run's network on random data of the run's size (a crop
of at most :data:`MEASURE_PIXELS` output pixels, scaled up by the pixel count for larger
images, since a convolutional network's cost grows with its pixels). Measurements are cached
per size, task, preset, device and thread count, so asking again is free.

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

from ..choices import STOPPING, TASK, resolve_preset
from ..formatting import format_bytes, format_duration
from .devices import cpu_threads, estimate_memory, resolve_device
from .generators import padded_size
from .presets import make_config
from .tiles import default_overlap, plan_tiles, tile_size_for

#: Largest number of output pixels measured directly; larger images are measured on a crop.
MEASURE_PIXELS = 256 * 256
#: Fit steps timed after one warm-up step (which builds the network and allocates memory).
MEASURE_STEPS = 3
#: A deconvolution is timed with a Gaussian PSF of this sigma (pixels) standing in for the
#: run's: the PSF is not part of the settings an estimate is cached under, and its blur costs
#: little next to the network.
MEASURE_PSF_SIGMA = 1.5

_cache: dict[tuple, tuple[float, tuple[int, int]]] = {}
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
    measured_on: tuple[int, int] | None = None  # output size of the measured crop
    tile: int | None = None  # tile side when one fit of the whole plane would not fit
    tiles: int = 1  # tiles per plane

    @property
    def max_seconds(self) -> float | None:
        """Time if every fit ran to its cap (the whole run when there is no stopping rule)."""
        if self.seconds_per_iteration is None:
            return None
        return self.seconds_per_iteration * self.max_iterations * self.fits

    def describe(self) -> str:
        """One line for people, e.g. for the widget or the CLI."""
        parts = [f"memory ≈ {format_bytes(self.memory_bytes)} ({self.device}, {self.preset})"]
        if self.tile is not None:
            parts.append(f"too big for one fit: {self.tiles} tiles of {self.tile} px per plane")
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
        return " · ".join(parts)


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
) -> RunEstimate:
    """Memory and time of restoring ``fits`` planes of ``height`` x ``width`` (the input's
    size; super-resolution multiplies it by ``factor``) with ``channels`` channels each.

    ``max_iters``, ``stopping`` and ``threads`` (CPU threads; None: chosen from the machine's
    load, as a run chooses them) are as in :func:`~napari_dip.engine.restore`.
    ``measure=False`` skips the timing (memory only).
    """
    TASK.check(task)
    dev = resolve_device(device)
    preset = resolve_preset(preset, dev.type)
    config = make_config(task, preset, factor if task == "sr" else None,
                         max_iters=max_iters, stopping=stopping)
    STOPPING.check(config.stopping)
    f = factor if task == "sr" else 1
    # a plane too big for one fit is restored in tiles (as restore_iter does by default)
    tile = tile_size_for(height, width, config.net, dev, f)
    fit_hw, n_tiles = (height, width), 1
    if tile is not None:
        n_tiles = len(plan_tiles((height, width), tile, default_overlap(config.net, tile)))
        fit_hw = (min(tile, height), min(tile, width))
    spi = measured = None
    if measure:
        spi, measured = seconds_per_iteration(*fit_hw, task, preset=preset, device=dev,
                                              factor=factor, channels=channels, threads=threads)
    return RunEstimate(
        memory_bytes=estimate_memory(fit_hw[0] * f, fit_hw[1] * f, config.net),
        seconds_per_iteration=spi, max_iterations=config.max_iters, stopping=config.stopping,
        fits=max(int(fits), 1) * n_tiles, device=str(dev), preset=preset, measured_on=measured,
        tile=tile, tiles=n_tiles,
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
    with cpu_threads(threads) as n_threads:
        key = (padded_size(height * f, depth), padded_size(width * f, depth), task, preset,
               str(dev), f, int(channels), n_threads if dev.type == "cpu" else None)
        with _lock:
            if key in _cache:
                return _cache[key]
        seconds = _measure(h, w, task, preset, dev, factor, channels)
    value = (seconds * full / crop, (h * f, w * f))
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
    config = replace(config, max_iters=MEASURE_STEPS + 1, stopping="none", preview_every=0)
    rng = np.random.default_rng(0)
    observation = torch.from_numpy(rng.random((1, channels, height, width), dtype=np.float32))
    mask = None
    if task == "inpaint":
        mask = np.zeros((height, width), bool)
        mask[::5, ::5] = True  # a few pixels to fill
    psf = gaussian_psf(MEASURE_PSF_SIGMA, 2) if task == "deconvolve" else None
    operator = make_operator(task, (height, width), mask, factor, psf=psf)
    steps = fit(observation, operator, config, device=device, seed=0)
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
