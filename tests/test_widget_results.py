"""What the result layer is and says (issue 9, items 1-4). Run under Xvfb; tiny runs only."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dip._widget import ALL
from napari_dip.metrics import data_range_of, psnr

pytestmark = pytest.mark.gui


def noisy_camera(camera, sigma=25.0, seed=6):
    rng = np.random.default_rng(seed)
    truth = camera.astype(np.float32)
    return truth, truth + rng.normal(0, sigma, truth.shape).astype(np.float32)


# ---- 1. the result is tracked by object, not by name ---------------------------------------


def test_compare_and_metrics_use_the_latest_result_layer(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    truth, noisy = noisy_camera(camera)
    ref = viewer.add_image(truth, name="truth", visible=False)
    image = viewer.add_image(noisy, name="noisy")
    gui.configure(widget, image, max_iters=3, stopping="none")
    widget.reference.value = ref
    assert widget.run() is not None
    gui.wait_done(widget)
    first = widget.result_layers[0]
    gui.configure(widget, image, max_iters=25, stopping="none", seed=1)
    widget.reference.value = ref
    assert widget.run() is not None
    gui.wait_done(widget)
    second = widget.result_layers[0]
    assert second is not first and second.name != first.name  # napari renamed the duplicate
    assert not np.array_equal(first.data, second.data)

    metrics = second.metadata["napari_dip_metrics"]
    rng = data_range_of(truth)
    assert metrics["result"]["psnr"] == pytest.approx(psnr(truth, second.data, rng))
    assert widget.metrics.value.startswith(second.name)
    widget.compare(True)
    assert second.visible and not first.visible
    widget.compare(False)


# ---- 2. a stopped or partial result says what it is ------------------------------------------


def test_stop_before_the_first_estimate_keeps_no_result(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(camera, name="cam")
    gui.configure(widget, image, max_iters=100_000, stopping="none", preview_every=1000)
    assert widget.run() is not None
    widget.stop()  # at once: the network has not fitted anything yet
    gui.wait_done(widget)
    assert gui.dip_layers(viewer) == []  # no random texture posing as a result
    assert image.visible
    assert "stopped" in widget.status.value and "no result" in widget.status.value
    assert "done" not in widget.status.value


def test_stopped_result_is_named_and_marked_as_stopped(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(camera, name="cam")
    gui.configure(widget, image, max_iters=100_000, stopping="none", preview_every=5)
    seen = gui.watch_results(viewer)
    assert widget.run() is not None
    gui.wait_for_updates(seen)
    widget.stop()
    gui.wait_done(widget)
    (out,) = gui.dip_layers(viewer)
    record = out.metadata["napari_dip"]
    k = record["iterations"]
    assert record["outcome"]["state"] == "stopped"
    assert f"stopped at iteration {k}" in out.name
    assert f"stopped at iteration {k}" in widget.status.value
    assert "done" not in widget.status.value


def test_stopped_stack_says_which_slices_were_restored(viewer_widget, gui):
    viewer, widget = viewer_widget
    rng = np.random.default_rng(4)
    stack = rng.normal(0.5, 0.1, (4, 32, 32)).astype(np.float32)
    image = viewer.add_image(stack, name="zyx", axis_labels=("z", "y", "x"))
    # each slice takes a while (no automatic stop), so Stop lands in slice 1
    gui.configure(widget, image, slices=ALL, max_iters=150, stopping="none", preview_every=25)
    widget.slice_finished.connect(lambda i: widget.stop())
    assert widget.run() is not None
    gui.wait_done(widget)
    (out,) = gui.dip_layers(viewer)
    record = out.metadata["napari_dip"]
    outcome = record["outcome"]
    done = outcome["slices_restored"]
    assert outcome["state"] == "partial" and done == record["slices_done"]
    assert 1 <= len(done) < 4 and done == list(range(len(done)))
    assert 3 in outcome["slices_not_restored"]
    text = f"{len(done)} of 4 slices restored"
    assert text in out.name and text in widget.status.value
    np.testing.assert_array_equal(out.data[3], stack[3])  # left as the input, and says so


# ---- 3. the result covers the input instead of blending with it ------------------------------


def test_result_is_opaque_on_top_and_the_input_hidden_while_running(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(camera, name="cam", blending="additive", colormap="green")
    gui.configure(widget, image, max_iters=100_000, stopping="none", preview_every=5)
    seen = gui.watch_results(viewer)
    assert widget.run() is not None
    gui.wait_for_updates(seen)
    (out,) = gui.dip_layers(viewer)
    hidden_while_running = not image.visible
    widget.stop()
    gui.wait_done(widget)
    assert hidden_while_running
    assert image.visible  # visibility restored after the run
    assert out.blending not in ("additive", "minimum") and out.opacity == 1
    assert viewer.layers.index(out) > viewer.layers.index(image)  # drawn on top
    assert out.colormap.name == "green"


# ---- 4. inpainting keeps the known pixels; the mask is pre-selected ---------------------------


def inpainting_case():
    yy, xx = np.mgrid[0:40, 0:40]
    rng = np.random.default_rng(3)
    truth = (60 + 2 * xx + 1.5 * yy + rng.normal(0, 6, xx.shape)).clip(0, 255).astype(np.uint8)
    mask = np.zeros(truth.shape, np.uint8)
    mask[16:22, 8:30] = 1
    damaged = truth.copy()
    damaged[mask > 0] = 0
    return damaged, mask


def test_inpainting_keeps_known_pixels_unless_asked_not_to(viewer_widget, gui):
    viewer, widget = viewer_widget
    damaged, mask = inpainting_case()
    image = viewer.add_image(damaged, name="damaged")
    viewer.add_labels(mask, name="mask")
    gui.configure(widget, image, task="inpaint", max_iters=20)
    assert gui.shown(widget, widget.composite) and widget.composite.value  # the default
    assert widget.run() is not None
    gui.wait_done(widget)
    out = widget.result_layers[0]
    known = mask == 0
    np.testing.assert_array_equal(out.data[known], damaged[known])
    assert out.metadata["napari_dip"]["composite"] is True

    widget.composite.value = False  # the network's output everywhere
    assert widget.run() is not None
    gui.wait_done(widget)
    raw = widget.result_layers[0]
    assert raw is not out and not np.array_equal(raw.data[known], damaged[known])
    assert raw.metadata["napari_dip"]["composite"] is False


def test_the_only_matching_labels_layer_is_preselected_as_mask(viewer_widget, gui):
    viewer, widget = viewer_widget
    damaged, mask = inpainting_case()
    viewer.add_labels(np.zeros((7, 7), np.uint8), name="other size")
    image = viewer.add_image(damaged, name="damaged")
    labels = viewer.add_labels(mask, name="scratches")
    widget.reset_choices()
    widget.image.value = image
    widget.task.value = "inpaint"
    assert widget.mask.value is labels
    # two candidates: the user chooses
    widget.mask.value = None
    viewer.add_labels(mask.copy(), name="scratches 2")
    widget.task.value = "denoise"
    widget.task.value = "inpaint"
    assert widget.mask.value is None
