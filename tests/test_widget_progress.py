"""Progress that matches what will happen, the estimate before Run and the live plot of the fit
(issue 9, items 5 and 6). Run under Xvfb; tiny runs only; no assertion on timings."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dip._widget import CURRENT

pytestmark = pytest.mark.gui


def collect_status(widget):
    texts = []
    widget.controller.status.connect(texts.append)
    return texts


# ---- 5. progress -----------------------------------------------------------------------------


def test_status_shows_iterations_elapsed_time_and_the_rule_not_the_cap(viewer_widget, camera,
                                                                        gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(camera, name="cam")
    gui.configure(widget, image, max_iters=40, stopping="noise", preview_every=10)
    texts = collect_status(widget)
    bars = []
    widget.controller.status.connect(lambda _: bars.append(widget.progress_bar))
    assert widget.run() is not None
    gui.wait_done(widget)

    assert "preparing" in texts[0]  # the slow start is explained
    running = [t for t in texts if "iteration" in t and "done" not in t]
    assert running
    assert not any("/40" in t or "of 40" in t for t in texts)  # the cap is not the plan
    assert any("noise level" in t for t in running)  # the stopping rule's state, in words
    assert all(" s" in t for t in running)  # elapsed time
    # a single plane: the activity bar does not count toward the cap (indeterminate)
    assert all(b is None or b.total == 0 for b in bars)


def test_current_slice_progress_is_not_stuck_at_zero_of_one(viewer_widget, gui):
    viewer, widget = viewer_widget
    rng = np.random.default_rng(2)
    stack = rng.normal(0.5, 0.1, (3, 32, 32)).astype(np.float32)
    image = viewer.add_image(stack, name="zyx", axis_labels=("z", "y", "x"))
    gui.configure(widget, image, slices=CURRENT, max_iters=15, stopping="none")
    texts = collect_status(widget)
    bars = []
    widget.controller.status.connect(lambda _: bars.append(widget.progress_bar))
    assert widget.run() is not None
    gui.wait_done(widget)
    assert not any("0/1" in t or "1/1" in t for t in texts)
    assert any("slice z=" in t for t in texts if "iteration" in t)
    assert all(b is None or b.total == 0 for b in bars)


def test_estimate_of_memory_and_time_before_run(viewer_widget, camera, gui):
    from napari_dip.engine.presets import make_config

    viewer, widget = viewer_widget
    image = viewer.add_image(camera, name="cam")
    gui.configure(widget, image, max_iters=0, stopping=None)
    gui.qtbot.waitUntil(lambda: "s/iteration" in widget.estimate.value, timeout=60_000)
    text = widget.estimate.value
    assert "MB" in text or "GB" in text
    cap = make_config("denoise", "light").max_iters
    assert f"{cap}" in text and "stop" in text  # the cap is an upper bound, not a forecast
    widget.task.value = "sr"
    widget.factor.value = 2
    gui.qtbot.waitUntil(lambda: "s/iteration" in widget.estimate.value
                        and widget.estimate.value != text, timeout=60_000)


# ---- 6. live plot ----------------------------------------------------------------------------


def test_live_plot_of_loss_and_signal_marks_the_picked_iterate(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(camera, name="cam")
    gui.configure(widget, image, max_iters=40, stopping="noise", preview_every=10)
    assert widget.plot.figure is None  # matplotlib is loaded only when a run starts
    assert widget.run() is not None
    gui.wait_done(widget)
    record = widget.result_layers[0].metadata["napari_dip"]
    lines = {line.get_label(): line for ax in widget.plot.figure.axes for line in ax.get_lines()}
    loss_x, loss_y = lines["loss"].get_data()
    assert list(loss_x) == list(range(1, record["iterations"] + 1))  # every iteration
    history = widget.last_result.history[0]
    np.testing.assert_allclose(loss_y, [h[1] for h in history])
    assert "stopping signal" in lines
    marked_x, _ = lines["picked iterate"].get_data()
    assert set(marked_x) == {record["best_iteration"]}
    assert widget.plot.native.isVisibleTo(widget.native)


def test_a_plane_too_big_for_the_device_runs_in_tiles(viewer_widget, camera, gui, monkeypatch):
    from napari_dip.engine import devices

    viewer, widget = viewer_widget
    # a small device: one fit of 240 x 240 needs more than it has, a tile of 96 fits
    monkeypatch.setattr(devices, "device_memory", lambda device: 170 * 2**20)
    big = np.tile(camera, (5, 5))  # 240 x 240
    image = viewer.add_image(big, name="big")
    gui.configure(widget, image, max_iters=4, stopping="none", preview_every=2)
    texts = collect_status(widget)
    assert widget.run() is not None
    gui.wait_done(widget)
    (out,) = widget.result_layers
    record = out.metadata["napari_dip"]
    n = record["tiling"]["count"]
    assert n > 1 and out.data.shape == big.shape and record["outcome"]["state"] == "finished"
    assert any(f"tile 2 of {n}" in t for t in texts)
