"""The restoration's settings as magicgui widgets, with only the rows that apply shown."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, Select, SpinBox

from ..choices import CHANNELS, PRESET, SR_FACTOR, TASK
from .plan import ALL, CURRENT, layer_array
from .results import SUFFIX


class Controls(Container):
    """Layer choices and engine settings; :meth:`engine_kwargs` reads them for a run."""

    def __init__(self, viewer):
        super().__init__(scrollable=False)
        self._viewer = viewer
        self.image = ComboBox(label="image", choices=self._image_layers, nullable=False)
        self.task = ComboBox(label="task", choices=TASK.menu(), value=TASK.default)
        self.factor = ComboBox(label="SR factor", choices=SR_FACTOR.menu(),
                               value=SR_FACTOR.default)
        self.mask = ComboBox(
            label="mask (labels > 0)", choices=self._labels_layers, nullable=True, value=None,
            tooltip="Labels layer; pixels with a label > 0 are filled. 2-D masks apply to every "
            "slice.",
        )
        self.channel_axis = ComboBox(
            label="channel axis", choices=self._channel_axis_choices, nullable=False,
            tooltip="an axis of the image holding channels (RGB layers are handled as colour)",
        )
        self.channel_layers = Select(
            label="channel layers", choices=self._channel_layer_choices,
            tooltip="other single-channel layers of the same shape (e.g. from channel_axis=) to "
            "restore together with the image, as channels",
        )
        self.channel_layers.native.setMaximumHeight(70)
        self.channels = ComboBox(label="channels", choices=CHANNELS.menu(),
                                 value=CHANNELS.default)
        self.slices = ComboBox(label="stack", choices=[CURRENT, ALL], value=CURRENT)
        self.preset = ComboBox(
            label="preset", choices=[(v, v) for v in PRESET.values], value=PRESET.default,
            tooltip="\n".join(f"{v}: {lab}" for v, lab in PRESET.items),
        )
        self.max_iters = SpinBox(
            label="max iterations", min=0, max=1_000_000, value=0,
            tooltip="0 = the preset's cap",
        )
        self.auto_stop = CheckBox(text="automatic stop", value=True)
        self.device = ComboBox(label="device", choices=self._device_choices(), value="auto")
        self.seed = SpinBox(label="seed", min=-1, max=2**31 - 2, value=-1,
                            tooltip="-1 = random (the seed used is recorded)")
        self.preview_every = SpinBox(label="preview every", min=1, max=100_000, value=25)
        self.keep_snapshots = CheckBox(text="keep snapshots as layers", value=False)
        self.extend([
            self.image, self.task, self.factor, self.mask, self.channel_axis,
            self.channel_layers, self.channels, self.slices, self.preset, self.max_iters,
            self.auto_stop, self.device, self.seed, self.preview_every, self.keep_snapshots,
        ])
        self.image.changed.connect(self._on_image_changed)
        self.task.changed.connect(self.update_visibility)
        self.update_visibility()

    # ---- choices ---------------------------------------------------------------------------

    def _image_layers(self, widget=None):
        from napari.layers import Image

        return [(lyr.name, lyr) for lyr in self._viewer.layers if isinstance(lyr, Image)]

    def _labels_layers(self, widget=None):
        from napari.layers import Labels

        return [(lyr.name, lyr) for lyr in self._viewer.layers if isinstance(lyr, Labels)]

    def selected_image(self):
        try:
            return self.image.value
        except AttributeError:  # during construction
            return None

    def _channel_axis_choices(self, widget=None):
        choices = [("none", None)]
        layer = self.selected_image()
        if layer is None or layer.rgb:
            return choices
        shape = layer_array(layer).shape
        labels = list(getattr(layer, "axis_labels", ()) or ())
        for i in range(len(shape) - 2):
            label = labels[i] if i < len(labels) else str(i)
            choices.append((f"{i}: {label} ({shape[i]})", i))
        return choices

    def _channel_layer_choices(self, widget=None):
        from napari.layers import Image

        layer = self.selected_image()
        if layer is None or layer.rgb:
            return []
        shape = layer.data.shape
        return [
            (lyr.name, lyr) for lyr in self._viewer.layers
            if isinstance(lyr, Image) and lyr is not layer and not lyr.rgb
            and lyr.data.shape == shape and not lyr.name.endswith(SUFFIX)
        ]

    @staticmethod
    def _device_choices():
        from ..engine import available_devices

        return ["auto", *available_devices()]

    def _on_image_changed(self, value=None):
        self.channel_axis.reset_choices()
        self.channel_layers.reset_choices()
        self.update_visibility()

    def update_visibility(self, value=None):
        """Show only the options that apply to the chosen layer and task."""
        layer = self.selected_image()
        ndim = 0 if layer is None else layer_array(layer).ndim
        rgb = bool(layer is not None and layer.rgb)
        self.factor.visible = self.task.value == "sr"
        self.mask.visible = self.task.value == "inpaint"
        self.channel_axis.visible = len(self.channel_axis.choices) > 1
        self.channel_layers.visible = bool(self.channel_layers.choices)
        self.channels.visible = rgb or self.channel_axis.visible or self.channel_layers.visible
        self.slices.visible = ndim > (3 if rgb else 2)

    # ---- reading the settings --------------------------------------------------------------

    def engine_kwargs(self) -> dict:
        return {
            "preset": self.preset.value,
            "device": self.device.value,
            "seed": None if self.seed.value < 0 else int(self.seed.value),
            "channels": self.channels.value,
            "max_iters": self.max_iters.value or None,
            "stopping": None if self.auto_stop.value else "none",
            "preview_every": int(self.preview_every.value),
        }
