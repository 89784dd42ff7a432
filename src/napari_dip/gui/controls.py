"""The restoration's settings as magicgui widgets, with only the rows that apply shown.

Two groups: the everyday choices (:class:`Controls`: layer, task, mask, channels, stack,
preset) and the expert ones (:class:`AdvancedControls`: stopping rule, iteration cap,
patience, seed, previews, snapshots, device), which the dock keeps in a collapsed section.
Every menu is filled from :mod:`napari_dip.choices`; the task's own defaults (its stopping
rule, its cap) are read from the engine's presets, never written here.
"""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton, Select, SpinBox

from ..choices import CHANNELS, PRESET, SR_FACTOR, STOPPING, TASK
from .plan import (
    ALL, CURRENT, axis_choice_text, default_channel_axis, is_dip_output, layer_array, mask_fits,
    unwrap,
)

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
        self.composite = CheckBox(
            text="keep known pixels", value=True,
            tooltip="on: pixels outside the mask come back exactly as they were; off: the "
            "network's output everywhere",
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
        self.preset = ComboBox(
            label="preset", choices=[(v, v) for v in PRESET.values], value=PRESET.default,
            tooltip="\n".join(f"{v}: {lab}" for v, lab in PRESET.items),
        )
        self.extend([
            self.image, self.task, self.factor, self.mask, self.composite, self.channel_axis,
            self.channel_note, self.channel_layers, self.channels, self.slices, self.preset,
        ])
        self.image.changed.connect(self._on_image_changed)
        self.task.changed.connect(self._on_task_changed)
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

    def _channel_axis_choices(self, widget=None):
        choices = [("none", None)]
        layer = self.selected_image()
        if layer is None or layer.rgb:
            return choices
        ndim = layer_array(layer).ndim
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
        self._propose_channel_axis()
        self.preselect_mask()
        self.update_visibility()

    def _on_task_changed(self, value=None):
        self.preselect_mask()
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
        shape = () if layer is None else layer_array(layer).shape
        axis = None if rgb else self.channel_axis.value
        task = self.task.value
        axis_row = not rgb and len(shape) >= 3
        layers_row = bool(self.channel_layers.choices) and axis is None
        has_channels = rgb or axis is not None or bool(self.channel_layers.value)
        self.factor.visible = task == "sr"
        self.mask.visible = task == "inpaint"
        self.composite.visible = task == "inpaint"
        self.channel_axis.visible = axis_row
        self.channel_note.visible = axis_row and bool(self.channel_note.value)
        self.channel_layers.visible = layers_row
        self.channels.visible = has_channels or layers_row
        self.slices.visible = len(shape) > (3 if rgb or axis is not None else 2)

    def restore_defaults(self):
        self.task.value = TASK.default
        self.factor.value = SR_FACTOR.default
        self.preset.value = PRESET.default
        self.channels.value = CHANNELS.default
        self.composite.value = True
        self.slices.value = CURRENT
        self.channel_layers.value = []
        self._propose_channel_axis()
        self.preselect_mask()
        self.update_visibility()

    def engine_kwargs(self) -> dict:
        return {
            "preset": self.preset.value,
            "channels": self.channels.value,
            "composite": bool(self.composite.value),
        }


class AdvancedControls(Container):
    """Expert settings; each special value is explained in its tooltip."""

    def __init__(self, task: ComboBox):
        super().__init__(scrollable=False)
        self._task = task
        self.stopping = ComboBox(label="stopping rule", choices=self._stopping_choices,
                                 value=None)
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
            self.stopping, self.max_iters, self.patience, self.seed, self.preview_every,
            self.keep_snapshots, self.device, self.restore_defaults_button,
        ])
        on_change(self.stopping, self.update_visibility)
        task.changed.connect(self._on_task_changed)
        self._on_task_changed()

    def _stopping_choices(self, widget=None):
        rule = _task_config(self._task.value).stopping
        return [(f"task default ({rule})", None), *[(v, v) for v in STOPPING.values]]

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
            "patience": self.patience.value or None,
            "preview_every": int(self.preview_every.value),
        }
