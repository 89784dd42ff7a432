"""Public entry points: restore one 2-D plane (grey, multi-channel or RGB) with DIP.

:func:`restore_iter` is a generator of :class:`Progress` events ending with one :class:`Result`;
:func:`restore` drains it for scripts. Stacks are in :mod:`.stacks`.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from ..choices import CHANNELS, NOISE_MODEL, SR_FACTOR, TASK, resolve_preset
from . import arrays
from .devices import (
    DIPMemoryError, check_fits, cpu_run, is_out_of_memory, memory_error, resolve_device,
)
from .fit import fit, start_level
from .intensity import IntensityMap
from .masks import classify_mask
from .noise import estimate_noise
from .operators import Blur, Downsample, Headroom, Identity, Mask, Operator, Stabilised
from .presets import FitConfig, make_config
from .wiener import check as check_refine
from .psf import PSF, make_psf
from .stopping import combine_stop_reasons
from .vst import NoiseModelChoice, choose_noise_model


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
    status: str = ""  # the stopping rule's state in words (what it is waiting for)
    tile_index: int | None = None  # a plane restored in tiles: which one is fitting
    n_tiles: int | None = None
    batch: int = 1  # fits running together; above 1, events of different planes interleave


@dataclass
class Result:
    """The restored image (input dtype, or float32 with ``as_float``; input layout; SR scales Y
    and X) and the run's record, which says the image's dtype as ``output_dtype``."""

    image: np.ndarray
    record: dict
    history: list = field(default_factory=list, repr=False)

    def __post_init__(self):
        dtype = getattr(self.image, "dtype", None)  # a lazy run's store has one too
        if dtype is not None:
            self.record["output_dtype"] = str(dtype)

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
                  mask_name: str = "mask", psf: PSF | None = None) -> Operator:
    TASK.check(task)
    if task == "deconvolve":
        if psf is None:
            raise ValueError("task 'deconvolve' needs a PSF: a PSF image or Gaussian sigmas")
        return Blur(psf.kernel, psf.to_dict())
    if psf is not None:
        raise ValueError(f"a PSF is only used by task 'deconvolve', not {task!r}")
    if task == "inpaint":
        if mask is None:
            raise ValueError("task 'inpaint' needs a mask: non-zero pixels are the ones to fill")
        return Mask(arrays.mask_to_known(mask, spatial, mask_name))
    if mask is not None:
        raise ValueError(f"a mask is only used by task 'inpaint', not {task!r}")
    if task == "sr":
        return Downsample(SR_FACTOR.check(factor))
    return Identity()


def _initial_guess(obs: torch.Tensor, op: Operator) -> torch.Tensor:
    """What the preview shows before a plane is restored, in the network's units: the input,
    upsampled for SR."""
    if isinstance(op, Downsample):
        return F.interpolate(obs, scale_factor=op.factor, mode="bicubic").clamp(0, 1)
    return op.unscaled(obs)


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
    composite: bool = True,
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
    threads: int | None = None,
    tile: int | bool | None = None,
    as_float: bool = False,
    noise_model: str | NoiseModelChoice = "auto",
    psf: np.ndarray | PSF | None = None,
    psf_sigma=None,
    guide: np.ndarray | None = None,
    guide_name: str = "guide",
    psf_name: str = "PSF",
    headroom: Headroom | None = None,
    warm_states: dict | None = None,
    batch: int | None = None,
    **overrides,
) -> Iterator[Progress | Result]:
    """Restore ``image`` with Deep Image Prior, yielding progress and finally the result.

    Parameters
    ----------
    image : (Y, X), (C, Y, X) or (Y, X, 3|4) array of any integer or float dtype; never modified.
    task : 'denoise', 'jpeg', 'inpaint', 'sr' or 'deconvolve' (:data:`napari_dip.choices.TASK`);
        giving a PSF to 'denoise' makes it 'deconvolve'.
    mask : for 'inpaint', (Y, X); non-zero pixels are the ones to fill.
    factor : super-resolution factor for 'sr' (2, 3, 4 or 8).
    preset : network preset: 'paper' (the reference net), 'light' (CPU-sized) or 'auto'
        (paper on CUDA, light elsewhere).
    device : 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.
    seed : makes a run reproducible on the same device; drawn at random (and recorded) if None.
    channels : 'joint' (one network for all channels) or 'separate' (one run per channel).
    composite : for 'inpaint', return the known pixels exactly as given and the network's
        output only where the mask is set; False returns the network's output everywhere.
    max_iters, stopping ('wmv', 'emv', 'none'), patience, preview_every : override the preset.
    cancel : a threading.Event or a callable; when set, the run ends after the current step
        and the best estimate so far is returned.
    reference : ground truth (same layout as the output) to report PSNR per step; it never
        influences the run.
    normalisation : an :class:`IntensityMap` to use instead of one fitted to ``image`` (a
        stack's slices share one).
    name, mask_name : how error messages refer to the image and the mask (e.g. a layer name).
    net_input : (Cz, Y, X) array at the output's size to use as the network input instead of
        random noise (values are used as given, so scale them to about [0, 1]).
    threads : torch threads on the CPU; None chooses from the machine and its load
        (:func:`~napari_dip.engine.devices.choose_threads`).
    tile : restore in overlapping tiles of this side (:mod:`.tiles`); None: only when one fit
        of the whole plane would not fit the device's memory; False: never (refuse instead).
    as_float : return float32 in the input's units (unrounded) instead of the input's dtype.
    noise_model : 'auto' (from the image's noise estimate), 'gaussian' (mean squared error) or
        'poisson-gaussian' (mean squared error after the generalised Anscombe transform, with the
        gain and read noise fitted from the image; :mod:`.vst`). A resolved
        :class:`~.vst.NoiseModelChoice` is used as given (a stack's slices share one).
    psf, psf_sigma : for 'deconvolve', the PSF as an image (2-D, or 3-D: its in-focus plane is
        used for a 2-D image; normalised and re-centred, :mod:`.psf`) or Gaussian sigmas in pixels
        (one value, (Y, X) or (Z, Y, X)); exactly one of them.
    guide : an image (Y, X), (C, Y, X) or (Y, X, RGB) of the output's size, used (normalised to
        [0, 1]) as the network's input instead of noise: guided restoration (the paper's
        flash/no-flash). Input jitter is off by default then, as in the paper.
    guide_name, psf_name : how error messages refer to the guide and the PSF.
    headroom : a deconvolution's :class:`~.operators.Headroom`, decided for a whole stack or
        plane (:mod:`.shared`); None: decided from this image.
    warm_states : for warm-started stacks, {channel group: network weights}; each group's fit
        starts from the weights given (a cold start where there are none) and leaves its final
        weights there for the next slice.
    batch : with ``channels='separate'``, how many channels to fit at once as independent
        networks in one pass (:mod:`~napari_dip.engine.batched`); None: the device's default
        (several on CUDA, one at a time elsewhere).
    **overrides : any other :class:`~napari_dip.engine.presets.FitConfig` field (lr, jitter, ...).
    """
    if task == "denoise" and (psf is not None or psf_sigma is not None):
        task = "deconvolve"
    settings = dict(max_iters=max_iters, stopping=stopping, patience=patience,
                    preview_every=preview_every, **overrides)
    microscopy = dict(noise_model=noise_model, psf=psf, psf_sigma=psf_sigma, psf_name=psf_name,
                      headroom=headroom)
    tiled = tile not in (None, False)
    if not tiled:
        try:
            job = _prepare(
                image, task, mask=mask, factor=factor, preset=preset, device=device, seed=seed,
                channel_axis=channel_axis, channels=channels, composite=composite,
                reference=reference, normalisation=normalisation, name=name,
                mask_name=mask_name, net_input=net_input, threads=threads, settings=settings,
                guide=guide, guide_name=guide_name, **microscopy,
            )
        except DIPMemoryError:
            if tile is False or net_input is not None or reference is not None or \
                    guide is not None:
                raise
            tiled = True  # too big for one fit: tiles instead of a refusal
    if tiled:
        if guide is not None:
            raise ValueError("a guide is used whole; it cannot be combined with tiles")
        from .tiles import restore_tiled_iter

        return (yield from restore_tiled_iter(
            image, task, tile=None if tile is True else tile, mask=mask, factor=factor,
            preset=preset, device=device, seed=seed, channel_axis=channel_axis,
            normalisation=normalisation, cancel=cancel, name=name, as_float=as_float,
            channels=channels, composite=composite, mask_name=mask_name, threads=threads,
            **microscopy, **settings,
        ))
    job.warm_states = warm_states
    fits = yield from _fit_groups(job, as_cancel_check(cancel), batch)
    yield Result(job.output(fits.image, as_float=as_float), _record(job, fits), fits.history)


def prepare(image: np.ndarray, task: str = "denoise", **kwargs) -> _Job:
    """The checked, prepared work :func:`restore_iter` would do with these arguments, without
    fitting (it raises what restore_iter raises). For callers that fit several planes together
    (:mod:`.batch_planes`; no tiling: a plane too big for the device raises DIPMemoryError).
    Arguments that are not :func:`_prepare`'s go to the settings, as restore_iter's
    ``max_iters``, ``stopping``, ... and overrides do."""
    bound = inspect.signature(restore_iter).bind(image, task, **kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    overrides = args.pop("overrides")
    for unused in ("cancel", "batch", "tile", "as_float", "warm_states"):  # how to run it
        args.pop(unused)
    own = inspect.signature(_prepare).parameters
    settings = {k: args.pop(k) for k in list(args) if k not in own}
    return _prepare(**args, settings={**settings, **overrides})


@dataclass
class _Job:
    """One plane's restoration, checked and prepared: what the fit loop and the record need."""

    task: str
    factor: int | None  # the SR factor, None for other tasks
    input_shape: tuple
    input_dtype: str
    layout: arrays.Layout
    cyx: np.ndarray  # the channels to restore (C, Y, X), input units; alpha taken out
    alpha: np.ndarray | None  # an RGBA image's alpha (Y, X), passed through
    operator: Operator  # the forward model
    fit_operator: Operator  # what the fit's data term uses (stabilised for Poisson-Gaussian)
    known: np.ndarray | None  # inpainting: (Y, X) bool, True where the pixel is observed
    composite: bool  # put the known pixels back exactly
    device: torch.device
    preset: str  # the concrete preset ('auto' resolved)
    config: FitConfig
    seed: int
    channels: str
    norm: IntensityMap
    observation: torch.Tensor  # (1, C, Y, X) in [0, 1]
    data: torch.Tensor  # what the fit compares with: the observation, stabilised or not
    noise: NoiseModelChoice
    reference: torch.Tensor | None  # (C, Y', X') in [0, 1]
    net_input: torch.Tensor | None
    threads: int | None  # CPU threads asked for (None: chosen from the machine's load)
    mask_kind: str | None = None  # inpainting: scattered, strokes or regions (picks the setting)
    guide: dict | None = None  # how the guide was used, for the record
    warm_states: dict | None = None  # {group: weights} carried from slice to slice

    @property
    def groups(self) -> list[list[int]]:
        """The channels fitted together: all of them, or one at a time."""
        n = self.cyx.shape[0]
        return [list(range(n))] if self.channels == "joint" else [[c] for c in range(n)]

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.operator.output_size(self.cyx.shape[1:])

    def output(self, x: torch.Tensor, as_float: bool = False) -> np.ndarray:
        """A normalised (C, Y', X') estimate in the caller's units, dtype and layout."""
        out = self.norm.inverse(unbiased(self.operator.scaled(x.numpy()), self.fit_operator),
                                as_float=as_float)
        if self.composite and self.known is not None:
            out = np.where(self.known, self.cyx.astype(out.dtype, copy=False), out)
        if self.alpha is not None:
            a = self.alpha if self.factor is None else arrays.repeat_yx(self.alpha, self.factor, 0)
            out = np.concatenate([out, a[None].astype(out.dtype)])
        return self.layout.from_cyx(out)


def unbiased(x: np.ndarray, fit_operator: Operator) -> np.ndarray:
    """A normalised estimate (C, ...) as E[z]: under the Poisson-Gaussian model a denoised
    image is E[f(z)] in stabilised space, mapped back by the exact unbiased inverse (the
    algebraic one is biased at low counts). Other models and tasks: unchanged."""
    if not (isinstance(fit_operator, Stabilised) and isinstance(fit_operator.inner, Identity)):
        return x
    anscombe = fit_operator.anscombe
    return np.clip(anscombe.unbiased_inverse(anscombe.forward(x)), 0, 1)


def _prepare(image, task, *, mask, factor, preset, device, seed, channel_axis, channels,
             composite, reference, normalisation, name, mask_name, net_input, threads,
             noise_model, psf, psf_sigma, guide, guide_name, psf_name, headroom,
             settings) -> _Job:
    """Check the inputs and build everything a run needs; raises ValueError for bad input."""
    image = np.asarray(image)
    arrays.check_dtype(image, name)
    layout = arrays.infer_layout(image, channel_axis, name)
    cyx, alpha = arrays.split_alpha(layout.to_cyx(image), layout)
    spatial = cyx.shape[1:]
    arrays.check_spatial(spatial, name)
    arrays.check_values(cyx, name)
    CHANNELS.check(channels)
    if task == "deconvolve" or psf is not None or psf_sigma is not None:
        psf = psf if isinstance(psf, PSF) else make_psf(psf, psf_sigma, 2, psf_name)
    operator = make_operator(task, spatial, mask, factor, mask_name, psf)

    dev = resolve_device(device)
    preset = resolve_preset(preset, dev.type)
    if guide is not None and settings.get("jitter") is None:
        settings = {**settings, "jitter": 0.0}  # the paper's flash/no-flash setting
    if guide is not None and settings.get("refine") is None:
        # A guided estimate holds what the guide shows and the noisy image does not; filtering
        # the noisy image with it as pilot lost that (30.1 -> 27.6 dB on the guide test's nuclei).
        settings = {**settings, "refine": "none"}
    known = operator.known[0, 0].numpy() > 0 if isinstance(operator, Mask) else None
    mask_kind = classify_mask(~known) if known is not None else None
    config = make_config(task, preset, factor if task == "sr" else None, mask_kind=mask_kind,
                         **settings)
    norm = normalisation or IntensityMap.fit(cyx, joint=layout.kind == "channels_last",
                                             known=known)
    out_hw = operator.output_size(spatial)
    check_refine(config.refine, operator, task)
    check_fits(*out_hw, config.net, dev, preset)

    ref = None
    if reference is not None:
        ref_cyx = layout.to_cyx(np.asarray(reference))[: cyx.shape[0]]
        if ref_cyx.shape[1:] != out_hw:
            raise ValueError(
                f"the reference has spatial shape {ref_cyx.shape[1:]}, expected {out_hw}"
            )
        ref = torch.from_numpy(norm.forward(ref_cyx))

    z_in = guide_info = None
    if guide is not None:
        if net_input is not None:
            raise ValueError("give either a guide or a net_input, not both")
        z_in, guide_info = _guide_input(guide, out_hw, guide_name)
    elif net_input is not None:
        z_in = np.asarray(net_input, dtype=np.float32)
        if z_in.ndim == 2:
            z_in = z_in[None]
        if z_in.ndim != 3 or not np.isfinite(z_in).all():
            raise ValueError("net_input must be a finite (C, Y, X) or (Y, X) array")
        z_in = torch.from_numpy(z_in)[None]

    observed = norm.forward(cyx)
    if isinstance(operator, Blur):
        if headroom is None:
            headroom = Headroom.test([observed], operator.kernel.numpy())
        operator = operator.with_headroom(headroom, channels)
    noise = noise_model if isinstance(noise_model, NoiseModelChoice) else resolve_noise_model(
        noise_model, observed, known, task, name)
    anscombe = noise.anscombe()
    fit_operator = operator if anscombe is None else Stabilised(operator, anscombe)
    data = observed if anscombe is None else anscombe.forward(observed)
    return _Job(
        task=task, factor=factor if task == "sr" else None, input_shape=tuple(image.shape),
        input_dtype=str(image.dtype), layout=layout, cyx=cyx, alpha=alpha, operator=operator,
        fit_operator=fit_operator, known=known, composite=bool(composite) and known is not None, device=dev,
        preset=preset, config=config, seed=draw_seed() if seed is None else seed,
        channels=channels, norm=norm, observation=torch.from_numpy(observed)[None],
        data=torch.from_numpy(data)[None], noise=noise, reference=ref, net_input=z_in,
        threads=threads, mask_kind=mask_kind, guide=guide_info,
    )


def resolve_noise_model(requested: str, observed: np.ndarray, known: np.ndarray | None,
                        task: str, name: str = "image") -> NoiseModelChoice:
    """The noise model for a normalised (C, Y, X) observation: 'auto' decides from the noise
    fitted to the image (JPEG artefacts are not photon noise: always Gaussian)."""
    requested = NOISE_MODEL.check(requested)
    estimate = estimate_noise(observed, known)
    if task == "jpeg":
        if requested == "poisson-gaussian":
            raise ValueError("task 'jpeg' removes compression artefacts, not photon noise; "
                             "use noise model 'auto' or 'gaussian'")
        return NoiseModelChoice("gaussian", requested, estimate, 1.0, "task jpeg")
    pixels = observed if known is None else observed[:, known]
    return choose_noise_model(requested, estimate, pixels.reshape(len(observed), -1), name)


def _guide_input(guide, out_hw, name: str) -> tuple[torch.Tensor, dict]:
    """A guide image as the network's input: (1, C, Y, X) in [0, 1], and its record."""
    guide = np.asarray(guide)
    arrays.check_dtype(guide, name)
    layout = arrays.infer_layout(guide, None, name)
    g = layout.to_cyx(guide)
    if tuple(g.shape[1:]) != tuple(out_hw):
        raise ValueError(f"{name} has spatial shape {tuple(g.shape[1:])}; a guide must have the "
                         f"restored image's shape {tuple(out_hw)}")
    arrays.check_values(g, name)
    gmap = IntensityMap.fit(g, joint=layout.kind == "channels_last")
    z = torch.from_numpy(gmap.forward(g))[None]
    return z, {"shape": list(guide.shape), "channels": int(g.shape[0]),
               "normalisation": gmap.to_dict()}


@dataclass
class _Fits:
    """What the fits of a plane's channel groups produced."""

    image: torch.Tensor  # (C, Y', X') normalised estimate: fitted groups, initial guess elsewhere
    planes: list[dict] = field(default_factory=list)  # one record per fitted group
    history: list = field(default_factory=list)
    parameters: int | None = None
    complete: bool = True  # every group ran to its own end (not cut short by the user)
    threads: int | None = None  # CPU threads used
    batch: dict = field(default_factory=lambda: {"size": 1, "path": "one-at-a-time"})

    def add(self, group: list[int], outcome) -> None:
        """Take the outcome of the fit of channel ``group``: its image, history and record."""
        self.image[group] = outcome.image
        self.history.append(outcome.history)
        self.planes.append(_plane_record(group, outcome))
        self.parameters = outcome.parameters

    def preview(self, output: Callable, group: list[int], estimate: torch.Tensor) -> np.ndarray:
        """What a preview shows: the plane so far with ``group``'s current estimate, in the
        caller's units (float; ``output`` as :meth:`_Job.output`)."""
        shown = self.image.clone()
        shown[group] = estimate.detach().clamp(0, 1).cpu()
        return output(shown, as_float=True)


#: FitOutcome fields that are not part of a plane's record (tensors, or recorded elsewhere).
_NOT_RECORDED = ("image", "history", "seed", "parameters", "state")


def _plane_record(group: list[int], outcome) -> dict:
    """A fit's outcome for the record: every field of FitOutcome that is set, generically, so
    new fields of the fit loop reach the record without changes here."""
    rec = {"channels": group}
    for f in fields(outcome):
        value = getattr(outcome, f.name)
        if f.name in _NOT_RECORDED or value is None or torch.is_tensor(value):
            continue
        rec[f.name] = round(value, 3) if f.name == "seconds" else value
    rec["seconds_per_iter"] = outcome.seconds / max(outcome.iterations, 1)
    return rec


def _group_operator(fit_operator: Operator, group: list[int], n_channels: int) -> Operator:
    """The data term's operator for the channels of one group, of ``n_channels`` (a
    stabilising transform and a deconvolution's headroom are per channel)."""
    return fit_operator if len(group) == n_channels else fit_operator.select(group)


def _fit_groups(job: _Job, check: Callable[[], bool] | None, batch: int | None = 1):
    """Fit each channel group in turn (or ``batch`` at a time), yielding :class:`Progress`;
    returns :class:`_Fits`."""
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be at least 1 (fits run together), not {batch}")
    if len(job.groups) > 1 and batch != 1:
        from .batch_planes import PlaneDone, fit_planes, resolve_batch

        size = resolve_batch(batch, job, len(job.groups))
        if size > 1:
            fits = _Fits(image=_initial_guess(job.observation, job.operator)[0], complete=False)
            for event in fit_planes([job], check, size):
                if not isinstance(event, PlaneDone):
                    yield event
                elif event.error is not None:
                    raise event.error
                else:
                    fits = event.fits
            return fits
    fits = _Fits(image=_initial_guess(job.observation, job.operator)[0])
    if job.device.type != "cpu":
        return (yield from _fit_each_group(job, check, fits))
    with cpu_run(job.threads) as fits.threads:
        return (yield from _fit_each_group(job, check, fits))


def _fit_each_group(job: _Job, check: Callable[[], bool] | None, fits: _Fits):
    config, groups = job.config, job.groups
    for gi, group in enumerate(groups):
        if check is not None and check():
            break
        op = _group_operator(job.fit_operator, group, len(job.cyx))
        steps = fit(
            job.data[:, group], op, config, device=job.device, seed=job.seed, cancel=check,
            reference=None if job.reference is None else job.reference[group],
            net_input=job.net_input,
            initial_state=None if job.warm_states is None else job.warm_states.get(gi),
            return_state=job.warm_states is not None,
            output_level=start_level(job.observation[:, group], op),
        )
        try:
            outcome = yield from fit_progress(steps, config, gi, len(groups),
                                              lambda e: fits.preview(job.output, group, e))
        except Exception as exc:
            if is_out_of_memory(exc):
                raise memory_error(*job.out_hw, config.net, job.device, job.preset) from exc
            raise
        finally:
            if job.device.type == "cuda":
                torch.cuda.empty_cache()
        fits.add(group, outcome)
        if job.warm_states is not None:
            fits.planes[-1]["warm_start"] = gi in job.warm_states
            job.warm_states[gi] = outcome.state
        if outcome.stop_reason == "user":
            break
    fits.complete = len(fits.planes) == len(groups)
    return fits


class PreviewSchedule:
    """When a fit shows a preview: at its first step at or past each multiple of ``every``
    iterations (None or 0: never). One per fit (a batch of fits keeps one for each)."""

    def __init__(self, every: int | None):
        self.every = self.next = every

    def due(self, iteration: int) -> bool:
        if not self.every or iteration < self.next:
            return False
        self.next = iteration - iteration % self.every + self.every
        return True


def fit_progress(steps, config: FitConfig, plane: int, n_planes: int,
                 preview: Callable[[torch.Tensor], np.ndarray]):
    """Run a fit's ``steps`` to their end, yielding a :class:`Progress` per step, with
    ``preview(estimate)`` every ``config.preview_every`` iterations; returns the outcome."""
    schedule = PreviewSchedule(config.preview_every)
    try:
        while True:
            step = next(steps)
            shown = preview(step.estimate) if schedule.due(step.iteration) else None
            yield Progress(step.iteration, config.max_iters, step.loss, step.signal,
                           step.best_iteration, step.elapsed, shown, step.psnr, plane,
                           n_planes, status=step.status)
    except StopIteration as done:
        return done.value
    finally:
        steps.close()


def overall_stop_reason(reasons: list[str], complete: bool) -> str:
    """One stop reason for a run of several fits (channel groups, slices): 'user' if the run
    ended before all of them ran, else the least trustworthy of theirs."""
    return combine_stop_reasons(reasons) if complete else "user"


def _record(job: _Job, fits: _Fits) -> dict:
    """Every setting of the run and what each fit did, JSON-ready."""
    from .. import __version__

    planes = fits.planes
    return {
        "napari_dip": __version__,
        "task": job.task,
        "factor": job.factor,
        "preset": job.preset,
        "device": str(job.device),
        "threads": fits.threads,
        "seed": job.seed,
        "channels": job.channels,
        "composite": job.composite if job.known is not None else None,
        "input_shape": list(job.input_shape),
        "input_dtype": job.input_dtype,
        "operator": {**job.operator.describe(),
                     **({"mask_kind": job.mask_kind} if job.mask_kind else {})},
        "noise_model": job.noise.to_dict(),
        "guide": job.guide,
        "config": job.config.to_dict(),
        "normalisation": {**job.norm.to_dict(),
                          "clipped_fraction": job.norm.clipped_fraction(job.cyx, job.known)},
        "parameters": fits.parameters,
        "stop_reason": overall_stop_reason([p["stop_reason"] for p in planes], fits.complete),
        "iterations": sum(p["iterations"] for p in planes),
        "best_iteration": (
            planes[0].get("best_iteration") if len(planes) == 1
            else [p.get("best_iteration") for p in planes]
        ),
        "seconds": round(sum(p["seconds"] for p in planes), 3),
        "planes": planes,
        "batch": fits.batch,
        "torch": torch.__version__,
    }


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
