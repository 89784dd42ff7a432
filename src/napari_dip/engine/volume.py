"""Native 3-D DIP: one 3-D generator fitted to a whole z-stack (``stack_mode='3d'``).

Neighbouring planes share structure, which a 3-D network uses and a plane-by-plane fit cannot.
The network (:func:`~.generators.volume_spec`) follows the voxel size: a coarse or short Z axis is
never down-sampled, and planes too far apart get no Z filter. Denoising and deconvolution (with a
3-D PSF) are supported, with the same noise models as in 2-D.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch

from ..choices import CHANNELS, resolve_preset
from . import arrays
from .devices import check_fits, cpu_run, resolve_device
from .fit import fit, start_level
from .generators import volume_spec
from .intensity import IntensityMap
from .noise import estimate_noise
from .operators import Blur, Headroom, Identity, Stabilised
from .presets import make_config
from .psf import PSF, make_psf
from .restoration import (
    Progress, Result, _Fits, _group_operator, as_cancel_check, draw_seed, fit_progress,
    overall_stop_reason, unbiased,
)
from .wiener import check as check_refine
from .vst import NoiseModelChoice, choose_noise_model

#: Whether a volume's fit keeps freed memory (:func:`.devices.keep_freed_memory`): not, since
#: its peak grew 15-60% for ~5% less CPU time.
KEEP_FREED = False

VOLUME_TASKS = ("denoise", "deconvolve")


def _planes(czyx: np.ndarray) -> np.ndarray:
    """(C, Z, Y, X) as (C, Z*Y', X) with Y' even: the planes side by side for the 2-D noise
    estimator, without 2x2 blocks straddling two planes."""
    c, z, y, x = czyx.shape
    return czyx[:, :, : y // 2 * 2].reshape(c, z * (y // 2 * 2), x)


def restore_volume_iter(
    stack: np.ndarray,
    task: str = "denoise",
    *,
    channel_axis: int | None = None,
    voxel_size=None,
    noise_model: str | NoiseModelChoice = "auto",
    psf=None,
    psf_sigma=None,
    psf_name: str = "PSF",
    preset: str = "auto",
    device="auto",
    seed: int | None = None,
    channels: str = "joint",
    cancel=None,
    reference: np.ndarray | None = None,
    name: str = "image",
    threads: int | None = None,
    as_float: bool = False,
    max_iters: int | None = None,
    stopping: str | None = None,
    patience: int | None = None,
    preview_every: int | None = None,
    **overrides,
) -> Iterator[Progress | Result]:
    """Restore a z-stack (Z, Y, X) or (Z, C, Y, X) (``channel_axis`` 0, counted in one plane) with
    one 3-D network; yields progress, then one Result (image in the input's dtype and shape).

    ``voxel_size`` (Z, Y, X) in any one unit shapes the network (None: isotropic). ``psf`` may be
    3-D (used whole) or 2-D (no blur along Z). ``as_float`` returns float32 in the input's units.
    A deconvolved image may go above the input's range (restored peaks): in the input's dtype,
    integers are clipped to the dtype's range (``as_float`` keeps every value).
    Other keywords as for :func:`~.restoration.restore_iter`.
    """
    stack = np.asarray(stack)
    arrays.check_dtype(stack, name)
    if task not in VOLUME_TASKS:
        raise ValueError(f"stack mode '3d' restores tasks {' and '.join(VOLUME_TASKS)}, not "
                         f"{task!r}; use stack mode 'slices' or 'warm'")
    if stack.ndim not in (3, 4):
        raise ValueError(f"{name} has shape {stack.shape}; a volume is (Z, Y, X) or (Z, C, Y, X)")
    layout = arrays.infer_layout(stack[0], channel_axis, f"{name} plane")
    if layout.kind == "channels_last":
        raise ValueError(f"{name}: stack mode '3d' takes grey or channel-first (Z, C, Y, X) "
                         "stacks, not RGB")
    CHANNELS.check(channels)
    czyx = np.stack([layout.to_cyx(p) for p in stack], axis=1)
    arrays.check_spatial(czyx.shape[2:], name)
    arrays.check_values(czyx, name)
    norm = IntensityMap.combine([IntensityMap.fit(np.ascontiguousarray(czyx[:, i]))
                                 for i in range(czyx.shape[1])])
    observed = norm.forward(czyx)

    if isinstance(noise_model, NoiseModelChoice):
        noise = noise_model
    else:
        est = estimate_noise(_planes(observed))
        noise = choose_noise_model(noise_model, est, observed.reshape(len(observed), -1), name)
    anscombe = noise.anscombe()
    data = observed if anscombe is None else anscombe.forward(observed)
    # The data term's noise level, in its own space: measured here, as the fit's 2-D
    # estimator cannot read a volume's planes together.
    noise_variance = estimate_noise(_planes(data)).mean_variance

    operator = Identity()
    if task == "deconvolve" or psf is not None or psf_sigma is not None:
        task = "deconvolve"
        p = psf if isinstance(psf, PSF) else make_psf(psf, psf_sigma, 3, psf_name)
        operator = Blur(p.kernel, p.to_dict()).with_headroom(
            Headroom.test([observed], p.kernel), channels)
    fit_operator = operator if anscombe is None else Stabilised(operator, anscombe)

    dev = resolve_device(device)
    preset = resolve_preset(preset, dev.type)
    config = make_config(task, preset, None, max_iters=max_iters, stopping=stopping,
                         patience=patience, preview_every=preview_every, **overrides)
    z, h, w = czyx.shape[1:]
    config = replace(config, net=volume_spec(config.net, z, voxel_size))
    check_refine(config.refine, operator, task)
    check_fits(h, w, config.net.base, dev, preset, planes=z)
    seed = draw_seed() if seed is None else seed
    gen = torch.Generator().manual_seed(seed)
    net_input = torch.rand((1, config.input_channels, z, h, w), generator=gen) * \
        config.input_scale
    ref = None
    if reference is not None:
        ref_czyx = np.stack([layout.to_cyx(p) for p in np.asarray(reference)], axis=1)
        ref = torch.from_numpy(norm.forward(ref_czyx))

    groups = [list(range(len(czyx)))] if channels == "joint" else [[c] for c in range(len(czyx))]
    # what is not fitted stays as observed (in the network's units)
    fits = _Fits(image=operator.unscaled(torch.from_numpy(observed)))
    check = as_cancel_check(cancel)

    def output(x: torch.Tensor, as_float: bool = False) -> np.ndarray:
        out = norm.inverse(unbiased(operator.scaled(x.numpy()), fit_operator),
                           as_float=as_float)
        return np.stack([layout.from_cyx(out[:, i]) for i in range(out.shape[1])])

    def run():
        for gi, group in enumerate(groups):
            if check is not None and check():
                break
            op = _group_operator(fit_operator, group, len(czyx))
            steps = fit(torch.from_numpy(data[group])[None], op, config, device=dev, seed=seed,
                        cancel=check, reference=None if ref is None else ref[group],
                        net_input=net_input, noise_variance=noise_variance,
                        output_level=start_level(torch.from_numpy(observed[group])[None], op))
            outcome = yield from fit_progress(steps, config, gi, len(groups),
                                              lambda e: fits.preview(output, group, e))
            fits.add(group, outcome)
            fits.planes[-1]["parameters"] = outcome.parameters
            if outcome.stop_reason == "user":
                break

    if dev.type == "cpu":
        with cpu_run(threads, KEEP_FREED) as fits.threads:
            yield from run()
    else:
        yield from run()

    from .. import __version__

    planes = fits.planes
    complete = len(planes) == len(groups)
    record = {
        "napari_dip": __version__,
        "task": task,
        "stack_mode": {"mode": "3d", "voxel_size": None if voxel_size is None
                       else [float(v) for v in voxel_size]},
        "preset": preset,
        "device": str(dev),
        "threads": fits.threads,
        "seed": seed,
        "channels": channels,
        "input_shape": list(stack.shape),
        "input_dtype": str(stack.dtype),
        "operator": operator.describe(),
        "noise_model": noise.to_dict(),
        "config": config.to_dict(),
        "normalisation": {**norm.to_dict(),
                          "clipped_fraction": norm.clipped_fraction(
                              czyx.reshape(len(czyx), z * h, w))},
        "parameters": planes[0]["parameters"] if planes else None,
        "stop_reason": overall_stop_reason([p["stop_reason"] for p in planes], complete),
        "iterations": sum(p["iterations"] for p in planes),
        "best_iteration": (planes[0].get("best_iteration") if len(planes) == 1
                           else [p.get("best_iteration") for p in planes]),
        "seconds": round(sum(p["seconds"] for p in planes), 3),
        "planes": planes,
        "torch": torch.__version__,
    }
    yield Result(output(fits.image, as_float=as_float), record, fits.history)
