"""napari-dip's restoration engine: pure torch/numpy, no napari or Qt.

>>> from napari_dip.engine import restore
>>> result = restore(noisy, "denoise")          # doctest: +SKIP
>>> result.image, result.record["best_iteration"]  # doctest: +SKIP

The public names load on first use, so that the torch-free modules (:mod:`.axes`,
:mod:`.arrays`) can be imported by the widget and the CLI at start-up without torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "collaborative": ("collaborative_wiener",),
    "cost": ("RunEstimate", "estimate_run"),
    "devices": ("DIPMemoryError", "available_devices", "estimate_memory", "resolve_device"),
    "generators": ("LIGHT_DENOISE", "LIGHT_SKIP", "PAPER_SKIP", "GeneratorSpec", "build_generator", "hourglass"),
    "operators": ("Blur", "Downsample", "Identity", "Mask", "Operator", "Stabilised"),
    "psf": ("PSF", "gaussian_psf", "prepare_psf"),
    "presets": ("PRESETS", "TASKS", "FitConfig", "make_config"),
    "restoration": ("Progress", "Result", "restore", "restore_iter"),
    "stacks": ("restore_stack", "restore_stack_iter"),
    "volume": ("restore_volume_iter",),
    "vst": ("Anscombe", "choose_noise_model"),
    "wiener": ("empirical_wiener", "second_stage"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
