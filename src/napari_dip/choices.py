"""The options a user chooses from, with their labels, for the CLI, the widget and the engine.

One list per option, so argparse, the widget's menus and the engine's checks cannot drift
apart; :meth:`Option.check` is the one place each value is validated. No torch, so the CLI and
the widget can import it at start-up.

Adding a network preset: one line in :data:`PRESET` here and one in
:mod:`napari_dip.engine.presets` (which network it uses).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    """A setting with a fixed set of values, each with a label for people."""

    name: str  # how messages name the setting
    items: tuple[tuple[object, str], ...]  # (value, label), in menu order
    default: object

    @property
    def values(self) -> tuple:
        return tuple(v for v, _ in self.items)

    def label(self, value) -> str:
        return dict(self.items)[self.check(value)]

    def menu(self) -> list[tuple[str, object]]:
        """(label, value) pairs, as magicgui's ComboBox takes them."""
        return [(label, value) for value, label in self.items]

    def describe(self) -> str:
        """'value (label), ...' for help texts."""
        return ", ".join(str(v) if str(v) == lab else f"{v} ({lab})" for v, lab in self.items)

    def check(self, value):
        """``value`` if it is one of the choices, else a ValueError that lists them."""
        for v in self.values:
            if type(value) is not bool and value == v:
                return v
        raise ValueError(
            f"unknown {self.name} {value!r}: choose one of {', '.join(map(str, self.values))}"
        )


TASK = Option("task", (
    ("denoise", "denoise"),
    ("jpeg", "JPEG artefacts"),
    ("inpaint", "inpaint (mask > 0 = fill)"),
    ("sr", "super-resolution"),
    ("deconvolve", "deconvolve (PSF)"),
), default="denoise")

PRESET = Option("preset", (
    ("auto", "paper on CUDA, light otherwise"),
    ("paper", "the paper's networks"),
    ("light", "CPU-sized networks"),
), default="auto")

STOPPING = Option("stopping rule", (
    ("noise", "stop when the fit reaches the image's noise level"),
    ("wmv", "ES-WMV, windowed variance"),
    ("emv", "ES-EMV, exponential variance"),
    ("none", "none: run to the iteration cap"),
), default="noise")

REFINE = Option("second stage", (
    ("auto", "Wiener filter with the fit's estimate in the pilot: collaborative under Gaussian "
             "noise, blend under Poisson-Gaussian (denoising)"),
    ("blend", "the mean of three Wiener filters whose pilot is the fit's estimate averaged with "
              "BM3D's hard-thresholding step (denoising)"),
    ("collaborative", "Wiener filter of groups of alike blocks (BM3D's second step), whose pilot "
                      "is the fit's estimate averaged with BM3D's hard-thresholding step "
                      "(denoising)"),
    ("wiener", "local Wiener filter, block by block, the fit's estimate as pilot (denoising)"),
    ("none", "none: the fit's estimate as it is"),
), default="none")

SR_FACTOR = Option("super-resolution factor", (
    (2, "×2"), (3, "×3"), (4, "×4"), (8, "×8"),
), default=4)

CHANNELS = Option("channel mode", (
    ("joint", "jointly"),
    ("separate", "per channel"),
), default="joint")


NOISE_MODEL = Option("noise model", (
    ("auto", "auto: chosen from the image's noise"),
    ("gaussian", "Gaussian (constant noise)"),
    ("poisson-gaussian", "Poisson-Gaussian (shot + read noise)"),
), default="auto")

STACK_MODE = Option("stack mode", (
    ("slices", "each slice on its own"),
    ("warm", "each slice starts from the previous one"),
    ("3d", "one 3-D network for the whole stack"),
), default="slices")


def resolve_preset(preset: str, device_type: str) -> str:
    """The concrete preset for ``preset`` on a device of ``device_type`` ('cuda', 'cpu', ...)."""
    preset = PRESET.check(preset)
    if preset == "auto":
        return "paper" if device_type == "cuda" else "light"
    return preset


OUTPUT_DTYPE = Option("result type", (
    ("auto", "float32 for a deconvolution or an integer input of few levels, else the "
             "input's type"),
    ("input", "the input's type (integers rounded and clipped to its range)"),
    ("float32", "float32, in the input's units"),
), default="auto")


def result_is_float(output_dtype: str, task: str, levels: int | None = None) -> bool:
    """Whether a run's result is float32 (in the input's units) instead of the input's type:
    asked for, or ('auto') a deconvolution, whose restored peaks may rise above the input's
    range (an 8-bit result's would stop at 255), or an integer input whose data span so few
    ``levels`` that rounding the result back to them would lose much of it
    (:func:`napari_dip.engine.intensity.few_levels`; None: a float input or not known)."""
    from .engine.intensity import few_levels  # numpy only

    choice = OUTPUT_DTYPE.check(output_dtype)
    return choice == "float32" or (choice == "auto" and (task == "deconvolve"
                                                         or few_levels(levels)))


def result_type_record(output_dtype: str, task: str, dtype, levels: int | None) -> dict:
    """The record's ``result_type``: what was asked, the result's dtype and, where 'auto'
    chose float32, why (``levels``: the integer levels the input spans, None for float)."""
    from .engine.intensity import FEW_LEVELS, few_levels  # numpy only

    rec = {"requested": output_dtype, "dtype": str(dtype)}
    if levels is not None:
        rec["input_levels"] = int(levels)
    if output_dtype == "auto" and str(dtype) == "float32":
        if task == "deconvolve":
            rec["reason"] = "a deconvolution's peaks may rise above the input's range"
        elif few_levels(levels):
            rec["reason"] = (f"the input spans only {levels} integer levels (< {FEW_LEVELS}): "
                             "rounding the result back to them would lose much of it")
    return rec
