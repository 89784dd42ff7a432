"""The restoration's settings as magicgui widgets, with only the rows that apply shown.

Two groups: the everyday choices (:class:`Controls`: layer, task, mask, PSF, guide, channels,
stack and stack mode, noise model, preset) and the expert ones (:class:`AdvancedControls`:
stopping rule, iteration cap, patience, seed, previews, snapshots, device), which the dock
keeps in a collapsed section. The PSF rows show for 'denoise' and 'deconvolve' only, and the
PSF-layer and guide menus only when a layer fits (or one is chosen), so the dock stays short.
Every menu is filled from :mod:`napari_dip.choices`; the task's own defaults (its stopping
rule, its cap) are read from the engine's presets, never written here.
"""

from __future__ import annotations

from magicgui.widgets import (
    CheckBox, ComboBox, Container, FloatSpinBox, Label, PushButton, Select, SpinBox,
)

from ..choices import (CHANNELS, NOISE_MODEL, OUTPUT_DTYPE, PRESET, REFINE, SR_FACTOR, STACK_MODE,
                       STOPPING, TASK)
from .plan import (
    ALL, CURRENT, PSF_TASKS, axis_choice_text, default_channel_axis, guide_fits, is_dip_output,
    layer_shape, mask_fits, psf_fits, unwrap,
)

#: The stack-mode menu's entry for the engine's own choice (passed to it as None).
AUTO_STACK_MODE = "auto"

#: The variance rules, the only ones that use a patience.
_PATIENT_RULES = ("wmv", "emv")
PREVIEW_EVERY = 25


def text_label(tooltip: str = "") -> Label:
    """A label for running text: as wide as its row allows, wrapped to as many lines as it
    needs (magicgui's labels are fixed to their first text's size)."""
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value="", tooltip=tooltip or None)
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    return label


def on_change(combo: ComboBox, callback):
    """Call ``callback(value)`` whenever the menu's selection changes, None included (magicgui's
    ``changed`` stays silent when a non-nullable menu switches to a None choice)."""
    combo.native.currentIndexChanged.connect(lambda *_: callback(combo.value))


def _offers(combo: ComboBox) -> bool:
    """Whether an optional layer menu has a layer to offer, or one chosen."""
    return combo.value is not None or any(c is not None for c in combo.choices)


def _task_config(task: str):
    """The engine's settings for ``task`` (its stopping rule, its cap); imports torch."""
    from ..engine.presets import make_config

    return make_config(task, "light")


class Controls(Container):
    """The everyday settings: which layers, which task, channels and stack."""

    def __init__(self, viewer, exclude=lambda layer: False):
        super().__init__(scrollable=False)
        self._viewer = viewer
        self._exclude = exclude  # layers not to offer as sources (e.g. the reference)
        self._channel_axis_for = None  # the layer the channel axis was proposed for
        self.image = ComboBox(label="image", choices=self.image_layers, nullable=False,
                              tooltip="the Image layer to restore (never modified)")
        self.task = ComboBox(label="task", choices=TASK.menu(), value=TASK.default)
        self.factor = ComboBox(label="SR factor", choices=SR_FACTOR.menu(),
                               value=SR_FACTOR.default)
        self.mask = ComboBox(
            label="mask (labels > 0)", choices=self._labels_layers, nullable=True, value=None,
            tooltip="Labels layer; pixels with a label > 0 are filled. 2-D masks apply to every "
            "slice. Chosen for you when exactly one Labels layer has the image's shape.",
        )
        self.invert_mask = CheckBox(
            text="mask marks the pixels to keep", value=False,
            tooltip="on: labels > 0 are the pixels to keep and every other pixel is filled (as in "
            "the DIP repository's masks); off: labels > 0 are the pixels to fill",
        )
        self.composite = CheckBox(
            text="keep known pixels", value=True,
            tooltip="on: pixels outside the mask come back exactly as they were; off: the "
            "network's output everywhere",
        )
        self.psf = ComboBox(
            label="PSF", choices=self._psf_layers, nullable=True, value=None,
            tooltip="a 2-D (Y, X) or 3-D (Z, Y, X) Image layer holding the point-spread function "
            "(measured beads or computed; normalised and re-centred for you). Choosing one makes "
            "the task a deconvolution (joint denoising and deblurring). None: no PSF layer",
        )
        self.psf_sigma = FloatSpinBox(
            label="PSF sigma", min=0.0, max=50.0, step=0.1, value=0.0,
            tooltip="a Gaussian PSF instead of a PSF layer: its sigma in pixels (the same on "
            "every axis). 0 = none; above 0 makes the task a deconvolution. Give either a PSF "
            "layer or a sigma, not both",
        )
        self.guide = ComboBox(
            label="guide", choices=self._guide_layers, nullable=True, value=None,
            tooltip="optional: an Image layer fed to the network instead of noise (a cleaner "
            "channel, a brightfield or high-SNR acquisition, a flash photo). Offered: layers of "
            "the output's height and width, or, for a stack, of the image's whole shape (one "
            "guide plane per slice). None: the network starts from noise",
        )
        self.channel_axis = ComboBox(
            label="channel axis", choices=self._channel_axis_choices, nullable=False,
            tooltip="an axis of the image that holds channels (RGB layers are handled as "
            "colour); 'none' makes every axis before Y, X a stack axis",
        )
        self.channel_note = text_label()
        self.channel_layers = Select(
            label="channel layers", choices=self._channel_layer_choices,
            tooltip="other visible single-channel layers of the same shape (e.g. from "
            "channel_axis=) to restore together with the image, as channels",
        )
        self.channel_layers.native.setMaximumHeight(70)
        self.channels = ComboBox(label="channels", choices=CHANNELS.menu(),
                                 value=CHANNELS.default)
        self.slices = ComboBox(label="stack", choices=[CURRENT, ALL], value=CURRENT)
        self.stack_mode = ComboBox(
            label="stack mode",
            choices=[("auto", AUTO_STACK_MODE), *[(v, v) for v in STACK_MODE.values]],
            value=AUTO_STACK_MODE,
            tooltip="\n".join([
                "how the slices of a stack are restored",
                ("auto: warm when neighbouring slices are alike, else slices (the choice and "
                 "why are shown after the run)"),
                *(f"{v}: {label}" for v, label in STACK_MODE.items),
                "3d uses the layer's scale (Z, Y, X) as voxel size and needs 'all slices'"]),
        )
        self.noise_model = ComboBox(
            label="noise model", choices=[(v, v) for v in NOISE_MODEL.values],
            value=NOISE_MODEL.default,
            tooltip="\n".join([
                "the data term: " + ", ".join(f"{v}: {label}" for v, label in NOISE_MODEL.items),
                ("auto picks Poisson-Gaussian when the noise fitted to the image grows with "
                 "intensity (fluorescence: shot + read noise); the choice is shown after the "
                 "run")]),
        )
        self.output_dtype = ComboBox(
            label="result type", choices=[(v, v) for v in OUTPUT_DTYPE.values],
            value=OUTPUT_DTYPE.default,
            tooltip="\n".join([f"{v}: {label}" for v, label in OUTPUT_DTYPE.items] + [
                "a deconvolution's peaks can rise above the input's range; in the input's "
                "type they stop at its top (255 for 8-bit)"]),
        )
        self.preset = ComboBox(
            label="preset", choices=[(v, v) for v in PRESET.values], value=PRESET.default,
            tooltip="\n".join(f"{v}: {lab}" for v, lab in PRESET.items),
        )
        self.extend([
            self.image, self.task, self.factor, self.mask, self.invert_mask, self.composite,
            self.psf,
            self.psf_sigma, self.guide, self.channel_axis, self.channel_note,
            self.channel_layers, self.channels, self.slices, self.stack_mode, self.noise_model,
            self.output_dtype, self.preset,
        ])
        self.image.changed.connect(self._on_image_changed)
        self.task.changed.connect(self._on_task_changed)
        self.factor.changed.connect(self._on_factor_changed)
        self.guide.changed.connect(self.update_visibility)
        on_change(self.channel_axis, self._on_channel_axis_changed)
        self._propose_channel_axis()
        self.update_visibility()

    # ---- choices ---------------------------------------------------------------------------

    def image_layers(self, widget=None):
        """Image layers that can be restored: not napari-dip's own results or snapshots."""
        from napari.layers import Image

        return [(lyr.name, unwrap(lyr)) for lyr in self._viewer.layers
                if isinstance(lyr, Image) and not is_dip_output(lyr)]

    def _labels_layers(self, widget=None):
        from napari.layers import Labels

        return [(lyr.name, unwrap(lyr)) for lyr in self._viewer.layers
                if isinstance(lyr, Labels)]

    def selected_image(self):
        try:
            return self.image.value
        except (AttributeError, ValueError):  # during construction
            return None

    def _psf_layers(self, widget=None):
        """2-D or 3-D grey Image layers other than the image (not napari-dip's results)."""
        from napari.layers import Image

        layer = self.selected_image()
        return [(lyr.name, lyr) for lyr in map(unwrap, self._viewer.layers)
                if isinstance(lyr, Image) and not is_dip_output(lyr) and psf_fits(layer, lyr)]

    def _guide_layers(self, widget=None):
        """Image layers of the output's height and width, or of a stack's whole shape."""
        from napari.layers import Image

        layer = self.selected_image()
        if layer is None:
            return []
        task = getattr(self, "task", None)
        task = "denoise" if task is None else task.value
        factor = int(self.factor.value) if hasattr(self, "factor") else 1
        return [(lyr.name, lyr) for lyr in map(unwrap, self._viewer.layers)
                if isinstance(lyr, Image) and not is_dip_output(lyr)
                and guide_fits(layer, lyr, task, factor)]

    def _channel_axis_choices(self, widget=None):
        choices = [("none", None)]
        layer = self.selected_image()
        if layer is None or layer.rgb:
            return choices
        ndim = len(layer_shape(layer))
        return choices + [(axis_choice_text(layer, i), i) for i in range(ndim - 2)]

    def _channel_layer_choices(self, widget=None):
        from napari.layers import Image

        layer = self.selected_image()
        if layer is None or layer.rgb:
            return []
        shape = layer.data.shape

        def compatible(lyr) -> bool:
            return (isinstance(lyr, Image) and lyr is not layer and not lyr.rgb and lyr.visible
                    and lyr.data.shape == shape and not is_dip_output(lyr)
                    and not self._exclude(lyr))

        return [(lyr.name, lyr) for lyr in map(unwrap, self._viewer.layers) if compatible(lyr)]

    def compatible_masks(self) -> list:
        layer = self.selected_image()
        if layer is None:
            return []
        axis = self.channel_axis.value
        return [m for _, m in self._labels_layers() if mask_fits(layer, axis, m)]

    def preselect_mask(self):
        """Choose the mask when exactly one Labels layer fits the image, and none is chosen."""
        if self.task.value != "inpaint" or self.mask.value is not None:
            return
        candidates = self.compatible_masks()
        if len(candidates) == 1:
            self.mask.value = candidates[0]

    # ---- reactions -------------------------------------------------------------------------

    def refresh(self):
        """The layer list changed: new choices, the same selections where they still exist."""
        self.reset_choices()
        if self.selected_image() is not self._channel_axis_for:
            self._propose_channel_axis()
        self.preselect_mask()
        self.update_visibility()

    def _on_image_changed(self, value=None):
        self.channel_axis.reset_choices()
        self.channel_layers.reset_choices()
        self.psf.reset_choices()
        self.guide.reset_choices()
        self._propose_channel_axis()
        self.preselect_mask()
        self.update_visibility()

    def _on_task_changed(self, value=None):
        self.guide.reset_choices()  # super-resolution guides have the output's size
        self.preselect_mask()
        self.update_visibility()

    def _on_factor_changed(self, value=None):
        self.guide.reset_choices()
        self.update_visibility()

    def _propose_channel_axis(self):
        layer = self.selected_image()
        self._channel_axis_for = layer
        axis, note = default_channel_axis(layer)
        self.channel_axis.reset_choices()
        self.channel_axis.value = axis
        self.channel_note.value = note

    def _on_channel_axis_changed(self, value=None):
        proposed, note = default_channel_axis(self.selected_image())
        self.channel_note.value = note if value == proposed else ""
        self.update_visibility()

    def update_visibility(self, value=None):
        """Show only the options that apply to the chosen layer, axes and task. (Decided
        from the settings alone: a widget's ``visible`` is False while the viewer is hidden.)"""
        layer = self.selected_image()
        rgb = bool(layer is not None and layer.rgb)
        shape = () if layer is None else layer_shape(layer)
        axis = None if rgb else self.channel_axis.value
        task = self.task.value
        axis_row = not rgb and len(shape) >= 3
        layers_row = bool(self.channel_layers.choices) and axis is None
        has_channels = rgb or axis is not None or bool(self.channel_layers.value)
        self.factor.visible = task == "sr"
        self.mask.visible = task == "inpaint"
        self.invert_mask.visible = task == "inpaint"
        self.composite.visible = task == "inpaint"
        self.channel_axis.visible = axis_row
        self.channel_note.visible = axis_row and bool(self.channel_note.value)
        self.channel_layers.visible = layers_row
        self.channels.visible = has_channels or layers_row
        stack = len(shape) > (3 if rgb or axis is not None else 2)
        self.slices.visible = stack
        self.stack_mode.visible = stack
        psf_task = task in PSF_TASKS
        self.psf.visible = psf_task and (task == "deconvolve" or _offers(self.psf))
        self.psf_sigma.visible = psf_task
        self.guide.visible = _offers(self.guide)

    def restore_defaults(self):
        self.task.value = TASK.default
        self.factor.value = SR_FACTOR.default
        self.preset.value = PRESET.default
        self.channels.value = CHANNELS.default
        self.composite.value = True
        self.invert_mask.value = False
        self.slices.value = CURRENT
        self.stack_mode.value = AUTO_STACK_MODE
        self.noise_model.value = NOISE_MODEL.default
        self.output_dtype.value = OUTPUT_DTYPE.default
        self.psf_sigma.value = 0.0
        self.channel_layers.value = []
        self._propose_channel_axis()
        self.preselect_mask()
        self.update_visibility()

    def engine_kwargs(self) -> dict:
        return {
            "preset": self.preset.value,
            "channels": self.channels.value,
            "composite": bool(self.composite.value),
            "noise_model": self.noise_model.value,
        }

    def plan_kwargs(self) -> dict:
        """The layers and choices :func:`~.plan.make_plan` takes beyond the image: the PSF
        (layer or sigma; only for the tasks it applies to), the guide and the stack mode."""
        psf_task = self.task.value in PSF_TASKS
        mode = self.stack_mode.value
        return {
            "psf_layer": self.psf.value if psf_task else None,
            "psf_sigma": float(self.psf_sigma.value) if psf_task else 0.0,
            "guide_layer": self.guide.value,
            "invert_mask": bool(self.invert_mask.value),
            "stack_mode": None if mode == AUTO_STACK_MODE else mode,
            "output_dtype": self.output_dtype.value,
        }


class AdvancedControls(Container):
    """Expert settings; each special value is explained in its tooltip."""

    def __init__(self, task: ComboBox):
        super().__init__(scrollable=False)
        self._task = task
        self.stopping = ComboBox(label="stopping rule", choices=self._stopping_choices,
                                 value=None)
        self.refine = ComboBox(label="second stage", choices=self._refine_choices, value=None)
        self.max_iters = SpinBox(label="iteration cap", min=0, max=1_000_000, value=0)
        self.patience = SpinBox(label="patience", min=0, max=1_000_000, value=0)
        self.seed = SpinBox(
            label="seed", min=-1, max=2**31 - 2, value=-1,
            tooltip="-1 = a random seed, drawn for each run (the seed used is stored in the "
            "result's metadata, so a run can be repeated)",
        )
        self.preview_every = SpinBox(
            label="preview every", min=1, max=100_000, value=PREVIEW_EVERY,
            tooltip="show the network's current estimate every this many iterations; a run "
            "stopped before its first preview keeps no result",
        )
        self.keep_snapshots = CheckBox(
            text="keep snapshots as layers", value=False,
            tooltip="add each preview as a hidden layer (to compare iterations)",
        )
        self.device = ComboBox(label="device", choices=self._device_choices(), value="auto",
                               tooltip="auto: CUDA, then Apple MPS, then the CPU")
        self.restore_defaults_button = PushButton(text="Restore defaults")
        self.extend([
            self.stopping, self.refine, self.max_iters, self.patience, self.seed,
            self.preview_every,
            self.keep_snapshots, self.device, self.restore_defaults_button,
        ])
        on_change(self.stopping, self.update_visibility)
        task.changed.connect(self._on_task_changed)
        self._on_task_changed()

    def _stopping_choices(self, widget=None):
        rule = _task_config(self._task.value).stopping
        return [(f"task default ({rule})", None), *[(v, v) for v in STOPPING.values]]

    def _refine_choices(self, widget=None):
        stage = _task_config(self._task.value).refine
        return [(f"task default ({stage})", None), *[(v, v) for v in REFINE.values]]

    @staticmethod
    def _device_choices():
        from ..engine import available_devices

        return ["auto", *available_devices()]

    def _on_task_changed(self, value=None):
        """Menus and tooltips that name the task's own defaults."""
        config = _task_config(self._task.value)
        self.stopping.reset_choices()
        self.stopping.tooltip = "\n".join([
            f"when to stop; 'task default' uses the task's rule ({config.stopping})",
            *(f"{v}: {label}" for v, label in STOPPING.items)])
        self.refine.reset_choices()
        self.refine.tooltip = "\n".join([
            "what is done with the fit's estimate; 'task default' uses the task's "
            f"({config.refine}; none when a guide is chosen: the guide's detail would be lost)",
            *(f"{v}: {label}" for v, label in REFINE.items)])
        self.max_iters.tooltip = (
            f"0 = the task's cap ({config.max_iters} iterations). The automatic stop usually "
            "ends a run well before the cap; the cap only bounds it")
        self.patience.tooltip = (
            f"0 = the preset's patience ({config.patience}): iterations the variance rules "
            "(wmv, emv) wait after their best before they stop")
        self.update_visibility()

    def rule(self) -> str:
        """The stopping rule a run will use."""
        return self.stopping.value or _task_config(self._task.value).stopping

    def update_visibility(self, value=None):
        self.patience.visible = self.rule() in _PATIENT_RULES

    def restore_defaults(self):
        self.stopping.value = None
        self.refine.value = None
        self.max_iters.value = 0
        self.patience.value = 0
        self.seed.value = -1
        self.preview_every.value = PREVIEW_EVERY
        self.keep_snapshots.value = False
        self.device.value = "auto"
        self.update_visibility()

    def engine_kwargs(self) -> dict:
        return {
            "device": self.device.value,
            "seed": None if self.seed.value < 0 else int(self.seed.value),
            "max_iters": self.max_iters.value or None,
            "stopping": self.stopping.value,
            "refine": self.refine.value,
            "patience": self.patience.value or None,
            "preview_every": int(self.preview_every.value),
        }
