"""Choices made once for all the pieces of one run (the slices of a stack, the tiles of a plane,
the units of a batch), so that every piece is restored alike: the noise model and a
deconvolution's headroom. Decided per piece, a warm-started slice could inherit weights fitted
at another gain, and blended tiles could meet at two intensity scales.

Both are decided from a few planes spread over the run (:class:`PlaneSample`), in the
normalised units the fits see; the headroom's sample also holds the brightest plane, since a
bead stack's points may be in focus in a few slices only.
"""

from __future__ import annotations

import numpy as np

from .intensity import IntensityMap

#: Planes, spread over the run, that the shared choices are made from.
SAMPLE_PLANES = 8
#: The :func:`~napari_dip.engine.restore_iter` keywords that the shared choices replace.
CHOICE_KEYS = ("noise_model", "psf", "psf_sigma", "psf_name", "headroom")


def deconvolves(task: str, options: dict) -> bool:
    """Whether a run of ``task`` with these restore_iter keywords is a deconvolution (a PSF
    makes 'denoise' one)."""
    has_psf = options.get("psf") is not None or options.get("psf_sigma") is not None
    return task == "deconvolve" or (task == "denoise" and has_psf)


def spread(indices, count: int = SAMPLE_PLANES) -> list:
    """Up to ``count`` of ``indices``, evenly spread (the first always among them)."""
    indices = list(indices)
    return indices[:: max(len(indices) // count, 1)][:count]


class PlaneSample:
    """The planes the shared choices are made from, gathered while the run's slices are read
    one at a time (:meth:`see`): those of :func:`spread`, and (``brightest``: for a
    deconvolution's headroom) the brightest one."""

    def __init__(self, indices, brightest: bool = False):
        self.wanted = set(spread(indices))
        self.brightest = brightest
        self.colour: dict[int, np.ndarray] = {}
        self.known: dict[int, np.ndarray | None] = {}
        self._brightest: tuple[float, int] | None = None

    def see(self, i: int, colour: np.ndarray, known: np.ndarray | None) -> None:
        """Plane ``i``'s (C, Y, X) channels in input units and its observed pixels (or None)."""
        if known is not None and not known.any():
            known = None
        if i in self.wanted:
            self.colour[i], self.known[i] = colour, known
        if not self.brightest:
            return
        peak = float(max(np.quantile(c if known is None else c[known], 0.999) for c in colour))
        if self._brightest is None or peak > self._brightest[0]:
            if self._brightest is not None and self._brightest[1] not in self.wanted:
                self.colour.pop(self._brightest[1]), self.known.pop(self._brightest[1])
            self._brightest = (peak, i)
            self.colour[i], self.known[i] = colour, known

    def take_choices(self, task: str, norm: IntensityMap, name: str, options: dict) -> dict:
        """:meth:`choices` from the keywords of ``options`` that they replace
        (:data:`CHOICE_KEYS`), which are taken out of ``options``."""
        return self.choices(task, norm, name,
                            **{k: options.pop(k) for k in CHOICE_KEYS if k in options})

    def choices(self, task: str, norm: IntensityMap, name: str, *, noise_model="auto",
                psf=None, psf_sigma=None, psf_name: str = "PSF", headroom=None) -> dict:
        """The :func:`~napari_dip.engine.restore_iter` keywords that make every piece of the run
        choose alike: ``noise_model`` resolved (a string is decided from the spread planes)
        and, for a deconvolution, the PSF prepared once and its ``headroom`` (from every sampled
        plane). Choices given already resolved are kept."""
        from .operators import Headroom
        from .psf import PSF, make_psf

        out = {}
        if isinstance(noise_model, str):
            spread_ones = [i for i in self.colour if i in self.wanted] or list(self.colour)
            noise_model = shared_noise_model(
                noise_model, [norm.forward(self.colour[i]) for i in spread_ones],
                [self.known[i] for i in spread_ones], task, name)
        out["noise_model"] = noise_model
        if deconvolves(task, {"psf": psf, "psf_sigma": psf_sigma}):
            p = psf if isinstance(psf, PSF) else make_psf(psf, psf_sigma, 2, psf_name)
            out["psf"], out["psf_sigma"] = p, None
            out["headroom"] = headroom or Headroom.test(
                [norm.forward(c) for c in self.colour.values()], p.kernel)
        elif psf is not None or psf_sigma is not None:  # restore_iter says why it refuses it
            out.update(psf=psf, psf_sigma=psf_sigma, psf_name=psf_name)
        return out


def shared_noise_model(requested: str, planes: list[np.ndarray], known: list, task: str,
                       name: str):
    """One noise model for normalised (C, Y, X) ``planes`` (their ``known`` pixels, or None
    where every pixel counts), fitted to them side by side."""
    from .restoration import resolve_noise_model

    joined = np.concatenate(planes, axis=-1)
    if all(k is None for k in known):
        mask = None
    else:
        mask = np.concatenate([np.ones(p.shape[1:], bool) if k is None else k
                               for p, k in zip(planes, known)], axis=-1)
    return resolve_noise_model(requested, joined, mask, task, name)


def choices_record(choices: dict) -> dict:
    """The record's ``noise_model`` and (for a deconvolution) ``operator`` entries for the
    shared ``choices`` (:meth:`PlaneSample.choices`, among the run's restore_iter keywords),
    as a restored plane's record has them."""
    from .operators import Blur

    rec = {}
    if hasattr(choices.get("noise_model"), "to_dict"):
        rec["noise_model"] = choices["noise_model"].to_dict()
    if choices.get("headroom") is not None:
        p = choices["psf"]
        rec["operator"] = Blur(p.kernel, p.to_dict()).with_headroom(
            choices["headroom"], choices.get("channels", "joint")).describe()
    return rec
