"""Public entry points: restore one 2-D plane (grey, multi-channel or RGB) with DIP.

:func:`restore_iter` is a generator of :class:`Progress` events ending with one :class:`Result`;
:func:`restore` drains it for scripts. Stacks are in :mod:`.stacks`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import arrays
from .devices import check_fits, is_out_of_memory, memory_error, resolve_device
from .fit import fit
from .intensity import IntensityMap
from .operators import Downsample, Identity, Mask, Operator
from .presets import TASKS, make_config
from .stopping import combine_stop_reasons


@dataclass
class Progress:
    """One fit step. ``preview`` (float32, in the input's units and layout) is set every
    ``preview_every`` iterations; ``psnr`` only when a reference was given. In a stack, each
    finished slice also sends one event with ``final=True`` whose preview is the kept image."""

    iteration: int
    max_iters: int
    loss: float
    signal: float | None
    best_iteration: int | None
    elapsed: float
    preview: np.ndarray | None = None
    psnr: float | None = None
    plane: int = 0
    n_planes: int = 1
    slice_index: int | None = None
    n_slices: int | None = None
    final: bool = False


@dataclass
class Result:
    """The restored image (input dtype and layout; SR scales Y and X) and the run's record."""

    image: np.ndarray
    record: dict
    history: list = field(default_factory=list, repr=False)

    @property
    def stop_reason(self) -> str:
        return self.record["stop_reason"]

    @property
    def best_iteration(self):
        return self.record["best_iteration"]


Cancel = threading.Event | Callable[[], bool] | None


def as_cancel_check(cancel: Cancel) -> Callable[[], bool] | None:
    if cancel is None or callable(cancel) and not isinstance(cancel, threading.Event):
        return cancel
    return cancel.is_set


def make_operator(task: str, spatial: tuple[int, int], mask, factor: int,
                  mask_name: str = "mask") -> Operator:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    if task == "inpaint":
        if mask is None:
            raise ValueError("task 'inpaint' needs a mask: non-zero pixels are the ones to fill")
        return Mask(arrays.mask_to_known(mask, spatial, mask_name))
    if mask is not None:
        raise ValueError(f"a mask is only used by task 'inpaint', not {task!r}")
    if task == "sr":
        return Downsample(factor)
    return Identity()


def _initial_guess(obs: torch.Tensor, op: Operator) -> torch.Tensor:
    """What the preview shows before a plane is restored: the input, upsampled for SR."""
    if isinstance(op, Downsample):
        return F.interpolate(obs, scale_factor=op.factor, mode="bicubic").clamp(0, 1)
    return obs.clone()


def draw_seed() -> int:
    """A fresh random seed, recorded with the run so it can be repeated."""
    return int(np.random.default_rng().integers(2**31 - 1))


def restore_iter(
    image: np.ndarray,
    task: str = "denoise",
    *,
    mask: np.ndarray | None = None,
    factor: int = 4,
    preset: str = "auto",
    device: str | torch.device = "auto",
    seed: int | None = None,
    channel_axis: int | None = None,
    channels: str = "joint",
    max_iters: int | None = None,
    stopping: str | None = None,
    patience: int | None = None,
    preview_every: int | None = None,
    cancel: Cancel = None,
    reference: np.ndarray | None = None,
    normalisation: IntensityMap | None = None,
    name: str = "image",
    mask_name: str = "mask",
    net_input: np.ndarray | None = None,
    **overrides,
) -> Iterator[Progress | Result]:
    """Restore ``image`` with Deep Image Prior, yielding progress and finally the result.

    Parameters
    ----------
    image : (Y, X), (C, Y, X) or (Y, X, 3|4) array of any integer or float dtype; never modified.
    task : 'denoise', 'jpeg', 'inpaint' or 'sr'.
    mask : for 'inpaint', (Y, X); non-zero pixels are the ones to fill.
    factor : super-resolution factor for 'sr' (2, 4 or 8).
    preset : network size: 'paper' (the reference net), 'light' (CPU-sized) or 'auto'
        (paper on CUDA, light elsewhere).
    device : 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.
    seed : makes a run reproducible on the same device; drawn at random (and recorded) if None.
    channels : 'joint' (one network for all channels) or 'separate' (one run per channel).
    max_iters, stopping ('wmv', 'emv', 'none'), patience, preview_every : override the preset.
    cancel : a threading.Event or a callable; when set, the run ends after the current step
        and the best estimate so far is returned.
    reference : ground truth (same layout as the output) to report PSNR per step; it never
        influences the run.
    name, mask_name : how error messages refer to the image and the mask (e.g. a layer name).
    net_input : (Cz, Y, X) array at the output's size to use as the network input instead of
        random noise (values are used as given, so scale them to about [0, 1]).
    **overrides : any other :class:`~napari_dip.engine.presets.FitConfig` field (lr, jitter, ...).
    """
    image = np.asarray(image)
    arrays.check_dtype(image, name)
    layout = arrays.infer_layout(image, channel_axis, name)
    cyx = layout.to_cyx(image)
    alpha = None
    if layout.kind == "channels_last" and cyx.shape[0] == 4:
        cyx, alpha = cyx[:3], cyx[3]  # alpha is passed through, not restored
    spatial = cyx.shape[1:]
    arrays.check_spatial(spatial, name)
    arrays.check_values(cyx, name)
    if channels not in ("joint", "separate"):
        raise ValueError(f"channels must be 'joint' or 'separate', not {channels!r}")
    operator = make_operator(task, spatial, mask, factor, mask_name)

    dev = resolve_device(device)
    size = ("paper" if dev.type == "cuda" else "light") if preset == "auto" else preset
    config = make_config(
        task, size, factor if task == "sr" else None, max_iters=max_iters, stopping=stopping,
        patience=patience, preview_every=preview_every, **overrides,
    )
    if seed is None:
        seed = draw_seed()
    known = operator.known[0, 0].numpy() if isinstance(operator, Mask) else None
    norm = normalisation or IntensityMap.fit(cyx, joint=layout.kind == "channels_last",
                                             known=known)
    obs = torch.from_numpy(norm.forward(cyx))[None]
    out_hw = operator.output_size(spatial)
    check_fits(*out_hw, config.net, dev, size)

    ref = None
    if reference is not None:
        ref_cyx = layout.to_cyx(np.asarray(reference))[: cyx.shape[0]]
        if ref_cyx.shape[1:] != out_hw:
            raise ValueError(
                f"the reference has spatial shape {ref_cyx.shape[1:]}, expected {out_hw}"
            )
        ref = torch.from_numpy(norm.forward(ref_cyx))

    z_in = None
    if net_input is not None:
        z_in = np.asarray(net_input, dtype=np.float32)
        if z_in.ndim == 2:
            z_in = z_in[None]
        if z_in.ndim != 3 or not np.isfinite(z_in).all():
            raise ValueError("net_input must be a finite (C, Y, X) or (Y, X) array")
        z_in = torch.from_numpy(z_in)[None]

    groups = [list(range(cyx.shape[0]))] if channels == "joint" else [
        [c] for c in range(cyx.shape[0])
    ]
    current = _initial_guess(obs, operator)[0]
    check = as_cancel_check(cancel)

    def denormalised(x: torch.Tensor, as_float: bool) -> np.ndarray:
        out = norm.inverse(x.numpy(), as_float=as_float)
        if alpha is not None:
            a = alpha if task != "sr" else arrays.repeat_yx(alpha, factor, 0)
            out = np.concatenate([out, a[None].astype(out.dtype)])
        return layout.from_cyx(out)

    planes, history = [], []
    for gi, group in enumerate(groups):
        if check is not None and check():
            break
        steps = fit(
            obs[:, group], operator, config, device=dev, seed=seed, cancel=check,
            reference=None if ref is None else ref[group], net_input=z_in,
        )
        try:
            while True:
                step = next(steps)
                preview = None
                if config.preview_every and step.iteration % config.preview_every == 0:
                    shown = current.clone()
                    shown[group] = step.estimate.detach().clamp(0, 1).cpu()
                    preview = denormalised(shown, as_float=True)
                yield Progress(
                    step.iteration, config.max_iters, step.loss, step.signal,
                    step.best_iteration, step.elapsed, preview, step.psnr, gi, len(groups),
                )
        except StopIteration as done:
            outcome = done.value
        except Exception as exc:
            if is_out_of_memory(exc):
                raise memory_error(*out_hw, config.net, dev, size) from exc
            raise
        finally:
            steps.close()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        current[group] = outcome.image
        history.append(outcome.history)
        planes.append({
            "channels": group,
            "iterations": outcome.iterations,
            "best_iteration": outcome.best_iteration,
            "returned_iteration": outcome.returned_iteration,
            "stop_reason": outcome.stop_reason,
            "stopping": outcome.stopping,
            "backtracks": outcome.backtracks,
            "lr_drops": outcome.lr_drops,
            "steps": outcome.steps,
            "seconds": round(outcome.seconds, 3),
            "cpu_seconds": round(outcome.cpu_seconds, 3),
            "seconds_per_iter": outcome.seconds / max(outcome.iterations, 1),
            **({"oracle": outcome.oracle} if outcome.oracle else {}),
        })
        parameters = outcome.parameters
        if outcome.stop_reason == "user":
            break

    reasons = [p["stop_reason"] for p in planes]
    stop_reason = "user" if len(planes) < len(groups) else combine_stop_reasons(reasons)
    from .. import __version__

    record = {
        "napari_dip": __version__,
        "task": task,
        "factor": factor if task == "sr" else None,
        "preset": size,
        "device": str(dev),
        "seed": seed,
        "channels": channels,
        "input_shape": list(image.shape),
        "input_dtype": str(image.dtype),
        "operator": operator.describe(),
        "config": config.to_dict(),
        "normalisation": {**norm.to_dict(),
                          "clipped_fraction": norm.clipped_fraction(cyx, known)},
        "parameters": parameters if planes else None,
        "stop_reason": stop_reason,
        "iterations": sum(p["iterations"] for p in planes),
        "best_iteration": (
            planes[0]["best_iteration"] if len(planes) == 1
            else [p["best_iteration"] for p in planes]
        ),
        "seconds": round(sum(p["seconds"] for p in planes), 3),
        "planes": planes,
        "torch": torch.__version__,
    }
    yield Result(denormalised(current, as_float=False), record, history)


def restore(image: np.ndarray, task: str = "denoise", *,
            callback: Callable[[Progress], None] | None = None, **kwargs) -> Result:
    """Blocking form of :func:`restore_iter`; ``callback`` receives each :class:`Progress`."""
    return drain(restore_iter(image, task, **kwargs), callback)


def drain(events: Iterator[Progress | Result],
          callback: Callable[[Progress], None] | None = None) -> Result:
    """Run an event generator to its :class:`Result`, passing progress to ``callback``."""
    for event in events:
        if isinstance(event, Result):
            return event
        if callback is not None:
            callback(event)
    raise RuntimeError("the restoration ended without a result")  # pragma: no cover
