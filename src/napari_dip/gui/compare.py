"""Side-by-side comparison of input, mask, result and reference, and PSNR / SSIM."""

from __future__ import annotations

from dataclasses import dataclass, field

from magicgui.widgets import ComboBox, Container, Label, PushButton
from napari.utils.notifications import show_info

from ..metrics import data_range_of, psnr, ssim
from .plan import layer_array
from .results import SUFFIX


@dataclass
class _GridState:
    """What comparing changed, to undo it."""

    visible: dict  # layer -> visibility before
    grid: bool
    linked: list = field(default_factory=list)  # groups of layers whose contrast was linked


class Comparison(Container):
    """Reference choice, the Compare button and the metrics text."""

    def __init__(self, viewer, image_choices, selection):
        super().__init__(scrollable=False)
        self._viewer = viewer
        self._state: _GridState | None = None
        self._selection = selection  # () -> (image layer, mask layer or None)
        self.reference = ComboBox(
            label="reference", choices=image_choices, nullable=True, value=None,
            tooltip="ground truth for PSNR / SSIM",
        )
        self.compare_button = PushButton(text="Compare side by side")
        self.metrics = Label(value="")
        self.metrics.native.setWordWrap(True)
        self.extend([self.reference, self.compare_button, self.metrics])
        self.compare_button.changed.connect(self._on_compare_button)

    @property
    def active(self) -> bool:
        return self._state is not None

    def _result_layers(self):
        image = self._selection()[0]
        if image is None:
            return []
        name = image.name + SUFFIX
        return [lyr for lyr in self._viewer.layers if lyr.name == name]

    def update_metrics(self) -> dict | None:
        """PSNR and SSIM of the input and the result against the reference layer."""
        ref_layer, image = self.reference.value, self._selection()[0]
        results = self._result_layers()
        if ref_layer is None or image is None or not results:
            self.metrics.value = ""
            return None
        result = results[-1]
        ref = layer_array(ref_layer)
        rng = data_range_of(ref)
        rgb = bool(image.rgb)
        out = {}
        for key, arr in (("input", layer_array(image)), ("result", layer_array(result))):
            if arr.shape != ref.shape:
                out[key] = None
                continue
            out[key] = {"psnr": psnr(ref, arr, rng), "ssim": ssim(ref, arr, rng, rgb)}
        text = [
            f"{k}: " + ("shape differs" if v is None
                        else f"PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.3f}")
            for k, v in out.items()
        ]
        self.metrics.value = f"vs {ref_layer.name!r}:\n" + "\n".join(text)
        result.metadata = {**dict(result.metadata), "napari_dip_metrics": {
            "reference": ref_layer.name, **out}}
        return out

    def _on_compare_button(self, value=None):
        self.compare(self._state is None)

    def compare(self, enabled: bool = True):
        """Show input, mask, result (and reference) side by side with linked contrast."""
        from napari.experimental import link_layers, unlink_layers

        grid = self._viewer.canvas.grid
        if not enabled:
            state, self._state = self._state, None
            if state is None:
                return
            for group in state.linked:
                unlink_layers(group)
            for layer, visible in state.visible.items():
                if layer in self._viewer.layers:
                    layer.visible = visible
            grid.enabled = state.grid
            self.compare_button.text = "Compare side by side"
            return
        image, mask = self._selection()
        results = self._result_layers()
        if image is None or not results:
            show_info("napari-dip: run a restoration first, then compare")
            return
        shown = [image]
        if mask is not None:
            shown.append(mask)
        shown.append(results[-1])
        if self.reference.value is not None:
            shown.append(self.reference.value)
        state = _GridState({lyr: lyr.visible for lyr in self._viewer.layers}, grid.enabled)
        for layer in self._viewer.layers:
            layer.visible = any(layer is s for s in shown)
        group = [lyr for lyr in shown if lyr.__class__ is image.__class__]
        if len(group) > 1:
            for lyr in group[1:]:
                lyr.contrast_limits = image.contrast_limits
            link_layers(group, ("contrast_limits",))
            state.linked.append(group)
        grid.stride = 1
        grid.enabled = True
        self._state = state
        self.compare_button.text = "End comparison"
        self.update_metrics()
        self._viewer.reset_view()
