"""Side-by-side comparison of input, mask, result and reference, and PSNR / SSIM.

The comparison follows the last run's layers as objects (a second run's layer may be called
``X [dip] [1]``; names are not looked up). Comparing shows those layers in napari's grid, each
panel labelled with its layer's name, links the contrast of each input with its result, and
undoes all of it (visibility, grid, labels, links, zoom) when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from magicgui.widgets import ComboBox, Container, PushButton
from napari.utils.notifications import show_info

from ..metrics import data_range_of, psnr, ssim
from .controls import text_label
from .plan import layer_array, layer_shape, unwrap

METRICS_KEY = "napari_dip_metrics"


def _camera(viewer):
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


@dataclass
class _GridState:
    """What comparing changed, to undo it."""

    visible: dict  # layer -> visibility before
    grid: tuple  # (enabled, stride) of the grid before
    camera: tuple  # (zoom, center, angles) before
    name_overlays: dict = field(default_factory=dict)  # layer -> its name overlay's visibility
    linked: list = field(default_factory=list)  # groups of layers whose contrast was linked


@dataclass
class Compared:
    """The layers of one run, as the comparison shows them."""

    inputs: list  # the source layers
    results: list  # their result layers, in the same order
    mask: object = None  # the inpainting mask layer, if any


class Comparison:
    """The reference choice, the Compare button and the metrics text (full width)."""

    def __init__(self, viewer, reference_choices):
        self._viewer = viewer
        self._state: _GridState | None = None
        self.layers: Compared | None = None
        self.reference = ComboBox(
            label="reference", choices=reference_choices, nullable=True, value=None,
            tooltip="ground truth, for PSNR / SSIM of the input and the result",
        )
        self.reference_row = Container(widgets=[self.reference], scrollable=False)
        self.compare_button = PushButton(text="Compare side by side")
        self.compare_button.tooltip = ("input, mask, result and reference in a grid, with "
                                       "linked contrast; press again to go back")
        self.metrics = text_label()
        self.compare_button.changed.connect(self._on_compare_button)
        self.reference.changed.connect(lambda *_: self.update_metrics())

    @property
    def active(self) -> bool:
        return self._state is not None

    def set_layers(self, compared: Compared | None):
        """The layers of the latest run (None: nothing to compare yet)."""
        if self.active:
            self.compare(False)
        if compared is not None:
            compared = Compared([unwrap(x) for x in compared.inputs],
                                [unwrap(x) for x in compared.results], unwrap(compared.mask))
        self.layers = compared
        self.update_metrics()

    def clear_metrics(self):
        self.metrics.value = ""

    def _present(self, layers) -> list:
        return [lyr for lyr in layers if lyr is not None and lyr in self._viewer.layers]

    def update_metrics(self) -> dict | None:
        """PSNR and SSIM of the input and the result against the reference layer."""
        ref_layer = self.reference.value
        compared = self.layers
        if ref_layer is None or compared is None or not self._present(compared.results[:1]):
            self.metrics.value = ""
            return None
        image, result = compared.inputs[0], compared.results[0]
        ref = layer_array(ref_layer)
        rng = data_range_of(ref)
        rgb = bool(result.rgb)
        out = {}
        compared_layers = {"input": image if image in self._viewer.layers else None,
                           "result": result}
        for key, layer in compared_layers.items():
            # the shape first: a layer that is not comparable is not read (a lazy one whole)
            if layer is None or layer_shape(layer) != ref.shape:
                out[key] = None
                continue
            arr = layer_array(layer)
            out[key] = {"psnr": psnr(ref, arr, rng), "ssim": ssim(ref, arr, rng, rgb)}
        text = [
            f"{k}: " + ("not comparable (shape differs or layer removed)" if v is None
                        else f"PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.3f}")
            for k, v in out.items()
        ]
        self.metrics.value = f"{result.name} vs {ref_layer.name!r}:\n" + "\n".join(text)
        result.metadata = {**dict(result.metadata), METRICS_KEY: {
            "reference": ref_layer.name, **out}}
        return out

    def _on_compare_button(self, value=None):
        self.compare(self._state is None)

    def compare(self, enabled: bool = True):
        """Show input, mask, result (and reference) side by side with linked contrast."""
        if not enabled:
            self._end()
            return
        if self.active:
            return
        compared = self.layers
        results = [] if compared is None else self._present(compared.results)
        if not results:
            show_info("napari-dip: run a restoration first, then compare")
            return
        self._begin(compared)

    def _begin(self, compared: Compared):
        from napari.experimental import link_layers

        viewer = self._viewer
        grid, camera = viewer.canvas.grid, _camera(viewer)
        pairs = [(i, r) for i, r in zip(compared.inputs, compared.results)
                 if r in viewer.layers]
        shown = self._present([p[0] for p in pairs] + [compared.mask]
                              + [p[1] for p in pairs] + [self.reference.value])
        state = _GridState(
            visible={unwrap(lyr): lyr.visible for lyr in viewer.layers},
            grid=(grid.enabled, grid.stride),
            camera=(camera.zoom, tuple(camera.center), tuple(camera.angles)),
        )
        for layer in viewer.layers:
            layer.visible = any(unwrap(layer) is s for s in shown)
        for layer in shown:
            state.name_overlays[layer] = layer.name_overlay.visible
            layer.name_overlay.visible = True
        for n, (source, result) in enumerate(pairs):
            group = self._present([source, result] + ([self.reference.value] if n == 0 else []))
            group = [g for g in group if g.__class__ is result.__class__ and g.rgb == result.rgb]
            if len(group) > 1 and not result.rgb:
                for lyr in group:
                    if lyr is not group[0]:
                        lyr.contrast_limits = group[0].contrast_limits
                link_layers(group, ("contrast_limits",))
                state.linked.append(group)
        grid.stride = 1
        grid.enabled = True
        self._state = state
        self.compare_button.text = "End comparison"
        self.update_metrics()
        viewer.reset_view()

    def _end(self):
        from napari.experimental import unlink_layers

        state, self._state = self._state, None
        if state is None:
            return
        viewer = self._viewer
        for group in state.linked:
            present = self._present(group)
            if len(present) > 1:
                unlink_layers(present)
        for layer, visible in state.visible.items():
            if layer in viewer.layers:
                layer.visible = visible
        for layer, visible in state.name_overlays.items():
            layer.name_overlay.visible = visible
        viewer.canvas.grid.enabled, viewer.canvas.grid.stride = state.grid
        zoom, center, angles = state.camera
        camera = _camera(viewer)
        camera.angles = angles
        camera.center = center
        camera.zoom = zoom
        self.compare_button.text = "Compare side by side"
