"""napari-dip's restoration engine: pure torch/numpy, no napari or Qt.

>>> from napari_dip.engine import restore
>>> result = restore(noisy, "denoise")          # doctest: +SKIP
>>> result.image, result.record["best_iteration"]  # doctest: +SKIP
"""

from .devices import DIPMemoryError, available_devices, estimate_memory, resolve_device
from .generators import LIGHT_SKIP, PAPER_SKIP, GeneratorSpec, build_generator, hourglass
from .operators import Downsample, Identity, Mask, Operator
from .presets import PRESETS, SIZES, TASKS, FitConfig, make_config
from .restoration import Progress, Result, restore, restore_iter
from .stacks import restore_stack, restore_stack_iter

__all__ = [
    "DIPMemoryError", "Downsample", "FitConfig", "GeneratorSpec", "Identity", "LIGHT_SKIP",
    "Mask", "Operator", "PAPER_SKIP", "PRESETS", "Progress", "Result", "SIZES", "TASKS",
    "available_devices", "build_generator", "estimate_memory", "hourglass", "make_config",
    "resolve_device", "restore", "restore_iter", "restore_stack", "restore_stack_iter",
]
