"""Run settings: one :class:`FitConfig` per run, built from a task preset plus user overrides.

The paper's per-task settings (the reference notebooks) are the defaults; the ``preset``
('paper' or 'light', see :data:`napari_dip.choices.PRESET`) picks the network without touching
the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from ..choices import PRESET, REFINE, STOPPING, TASK
from .generators import LIGHT_DENOISE, LIGHT_SKIP, PAPER_SKIP, GeneratorSpec

TASKS = TASK.values


@dataclass(frozen=True)
class FitConfig:
    """Everything the fit loop needs besides the data, the operator and the device."""

    net: GeneratorSpec = PAPER_SKIP
    input_channels: int = 32
    input_kind: str = "noise"  # "noise": uniform * input_scale; "meshgrid": 2 coordinate maps
    input_scale: float = 0.1
    jitter: float = 1 / 30  # sigma_p: fresh Gaussian perturbation of z at every step
    lr: float = 0.01
    max_iters: int = 3000
    ema: float = 0.99  # 0 disables output averaging
    backtrack: bool = True
    backtrack_db: float = 5.0  # a loss jump worth this many dB of PSNR undoes the step
    stopping: str = "noise"  # one of choices.STOPPING
    window: int = 100
    patience: int = 1000
    min_iters: int = 0  # the noise rule picks no iterate before this
    preview_every: int = 0  # 0: no previews
    refine: str = "none"  # one of choices.REFINE: a second stage on the fit's estimate (.wiener)
    # Speed settings (results are the same up to floating-point rounding):
    sync_every: int = 0  # read the data term back every k iterations; 0: 1 on CPU, 10 on GPU
    precision: str = "auto"  # "float32", "bfloat16" (autocast), "auto": bfloat16 on CUDA
    channels_last: bool | None = None  # None: on CUDA
    compile: bool = False  # torch.compile the network (long first step; fixed shapes only)
    cuda_graphs: bool | None = None  # replay each step as CUDA graphs; None: on CUDA (fit.py)

    def __post_init__(self):
        if self.max_iters < 1:
            raise ValueError(f"max_iters must be at least 1, not {self.max_iters}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1), not {self.ema}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, not {self.lr}")
        if self.input_kind not in ("noise", "meshgrid"):
            raise ValueError(f"input_kind must be 'noise' or 'meshgrid', not {self.input_kind!r}")
        STOPPING.check(self.stopping)
        REFINE.check(self.refine)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TaskPreset:
    config: FitConfig
    light_net: GeneratorSpec
    notes: str = field(default="", compare=False)


_JPEG_NET = GeneratorSpec(
    down=(8, 16, 32, 64, 128), up=(8, 16, 32, 64, 128), skip=(0, 0, 0, 4, 4)
)

PRESETS: dict[str, TaskPreset] = {
    # The Wiener second stage (.wiener) added 0.6 dB on the mean of the tuning fluorescence pairs
    # and 0.4 dB on natural colour images; grouping alike blocks (.collaborative) adds more under
    # Gaussian noise (benchmarks/RESULTS.md, 2026-11-30), so 'auto' chooses by the noise model.
    "denoise": TaskPreset(
        FitConfig(max_iters=3000, refine="auto"), LIGHT_DENOISE,
        notes="paper: skip 128x5, 3000 iterations, EMA; then a Wiener second stage",
    ),
    "jpeg": TaskPreset(
        FitConfig(net=_JPEG_NET, input_channels=3, max_iters=2400, stopping="none"),
        _JPEG_NET,
        notes="paper: blind JPEG restoration of snail.jpg",
    ),
    "inpaint": TaskPreset(
        FitConfig(
            net=replace(PAPER_SKIP, skip=(128,) * 5, upsample="nearest"),
            jitter=0.03,
            max_iters=6000,
            ema=0.0,
            stopping="none",
        ),
        replace(LIGHT_SKIP, skip=(16, 32, 64, 64, 128), upsample="nearest"),
        notes="paper: text inpainting of kate.png",
    ),
    "deconvolve": TaskPreset(
        # Under a blur the data term reaches the noise level at 230-710 iterations on 128x128
        # fluorescence crops, but the best iterate came at 1200-1470 (up to 2.8 dB better), so
        # no iterate before 1200 is picked; a later crossing (a larger image) still decides.
        FitConfig(max_iters=3000, min_iters=1200), LIGHT_SKIP,
        notes="denoising's settings with a PSF forward model (DECO-DIP's PSF-MSE, without wrap)",
    ),
    "sr": TaskPreset(
        FitConfig(jitter=0.03, max_iters=2000, ema=0.0, stopping="none"),
        LIGHT_SKIP,
        notes="paper: 4x SR, 2000 iterations (8x: jitter 0.05, 4000)",
    ),
}


#: Inpainting settings by the kind of damage (:func:`napari_dip.engine.masks.classify_mask`).
INPAINT_BY_MASK: dict[str, TaskPreset] = {
    # The reference notebook's 50 %-missing-pixels setting (barbara); the light net (nearest
    # upsampling, wide skips) peaks near 2000 iterations on 128x128 crops with half the pixels
    # missing, 1.7-7 dB above biharmonic inpainting, and slowly declines after.
    "scattered": TaskPreset(
        FitConfig(lr=0.001, jitter=0.03, max_iters=11000, ema=0.0, stopping="none"),
        replace(LIGHT_SKIP, skip=(16, 32, 64, 64, 128), upsample="nearest"),
        notes="paper: 50 % missing pixels (barbara), 11000 iterations at lr 0.001",
    ),
    "strokes": PRESETS["inpaint"],
    # The reference notebook's large-hole setting (vase): no skips, coordinates as input.
    "regions": TaskPreset(
        FitConfig(net=replace(PAPER_SKIP, skip=(0,) * 5, upsample="nearest"),
                  input_kind="meshgrid", jitter=0.03, max_iters=5000, ema=0.0,
                  stopping="none"),
        replace(LIGHT_SKIP, skip=(0,) * 5, upsample="nearest"),
        notes="paper: large-hole inpainting of vase.png, meshgrid input",
    ),
}
#: Settings that differ for the light preset beyond its network (CPU-sized runs).
LIGHT_OVERRIDES: dict[tuple[str, str | None], dict] = {
    # Stopped as denoising is, at the known pixels' noise level, with the output average: on
    # 128x128 crops with half the pixels missing this beat the fixed 2000 iterations on every
    # image tried (barbara 35.5 -> 35.8 dB, Cameraman 25.5 -> 25.8, Set5 head 33.0 -> 34.2,
    # scikit-image cell 56.9 -> 59.2) and stops early where the known pixels are noisy.
    ("inpaint", "scattered"): {"lr": 0.01, "max_iters": 2500, "ema": 0.99, "stopping": "noise"},
    # 8 input maps instead of 32: a quarter of the input's memory and of the finest skip's work.
    ("denoise", None): {"input_channels": 8},
}

#: The network each concrete preset of :data:`napari_dip.choices.PRESET` uses for a task.
NETWORKS = {
    "paper": lambda task: task.config.net,
    "light": lambda task: task.light_net,
}


def make_config(
    task: str, preset: str = "paper", factor: int | None = None,
    mask_kind: str | None = None, **overrides
) -> FitConfig:
    """The settings for ``task`` with the ``preset``'s network ('paper' or 'light'), then
    ``overrides``. For inpainting, ``mask_kind`` (scattered, strokes, regions) picks the
    setting that suits the damage; without it, the text-inpainting (strokes) setting."""
    task_preset = PRESETS[TASK.check(task)]
    if task == "inpaint" and mask_kind is not None:
        if mask_kind not in INPAINT_BY_MASK:
            raise ValueError(f"unknown mask kind {mask_kind!r}: use one of "
                             f"{', '.join(INPAINT_BY_MASK)}")
        task_preset = INPAINT_BY_MASK[mask_kind]
    if PRESET.check(preset) not in NETWORKS:
        raise ValueError(f"preset {preset!r} depends on the device; resolve it first "
                         "(napari_dip.choices.resolve_preset)")
    config = task_preset.config
    if task == "sr" and factor == 8:
        config = replace(config, jitter=0.05, max_iters=4000)
    config = replace(config, net=NETWORKS[preset](task_preset))
    if preset == "light":
        config = replace(config, **LIGHT_OVERRIDES.get((task, mask_kind), {}))
    known = {f.name for f in fields(FitConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}"
        )
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
