"""The controls: channel choices, which rows show, the Advanced section, defaults, messages and
the comparison's grid (issue 9, items 8 and 10). Run under Xvfb; tiny runs only."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity

pytestmark = pytest.mark.gui


def choice_texts(combo):
    return [
        combo.native.itemText(i) for i in range(combo.native.count())]


# ---- 8. channel controls ---------------------------------------------------------------------


def test_a_small_leading_axis_is_taken_as_channels(viewer_widget, gui):
    viewer, widget = viewer_widget
    data = np.random.default_rng(1).normal(100, 10, (2, 24, 24)).astype(np.float32)
    image = viewer.add_image(data, name="two channels")
    widget.reset_choices()
    widget.image.value = image
    assert widget.channel_axis.value == 0
    assert gui.shown(widget, widget.channel_axis) and gui.shown(widget, widget.channels)
    assert not gui.shown(widget, widget.slices)  # no stack left once axis 0 holds channels
    assert "channel" in widget.channel_note.value and gui.shown(widget, widget.channel_note)
    texts = choice_texts(widget.channel_axis)
    assert not any(": -3" in t for t in texts)  # no index-colon-label puzzles
    assert any("axis -3" in t and "2" in t for t in texts)  # napari's own label for the axis
    # the user can change it: then it is a stack of two slices
    widget.channel_axis.value = None
    assert gui.shown(widget, widget.slices) and not gui.shown(widget, widget.channels)


def test_named_axes_decide_and_are_shown_by_name(viewer_widget, gui):
    viewer, widget = viewer_widget
    zyx = viewer.add_image(np.zeros((3, 16, 16), np.float32), name="zyx",
                           axis_labels=("z", "y", "x"))
    cyx = viewer.add_image(np.zeros((5, 3, 16, 16), np.float32), name="tcyx",
                           axis_labels=("t", "c", "y", "x"))
    widget.reset_choices()
    widget.image.value = zyx
    assert widget.channel_axis.value is None  # z is not a channel
    assert gui.shown(widget, widget.slices)
    widget.image.value = cyx
    assert widget.channel_axis.value == 1
    assert any(t.startswith("c ") for t in choice_texts(widget.channel_axis))


def test_channel_layers_offer_only_compatible_sources(viewer_widget, gui):
    viewer, widget = viewer_widget
    data = np.random.default_rng(3).normal(100, 10, (2, 24, 24)).astype(np.float32)
    first, second = viewer.add_image(data, channel_axis=0, name=["ch0", "ch1"])
    viewer.add_image(data[0], name="ground truth", visible=False)
    result = viewer.add_image(data[0], name="ch0 [dip]", metadata={"napari_dip": {}})
    gui.configure(widget, first, max_iters=3)
    names = [lyr.name for lyr in widget.channel_layers.choices]
    assert names == ["ch1"]
    assert result not in widget.image.choices  # results are not offered as inputs either


def test_rows_show_only_where_they_apply(viewer_widget, gui):
    viewer, widget = viewer_widget
    grey = viewer.add_image(np.zeros((16, 16), np.float32), name="grey")
    rgb = viewer.add_image(np.zeros((16, 16, 3), np.uint8), name="rgb", rgb=True)
    widget.reset_choices()
    widget.image.value = grey
    for name in ("channel_axis", "channels", "slices", "channel_note"):
        assert not gui.shown(widget, getattr(widget, name)), name
    widget.image.value = rgb
    assert not gui.shown(widget, widget.channel_axis) and gui.shown(widget, widget.channels)
    for name in ("factor", "mask", "composite"):
        assert not gui.shown(widget, getattr(widget, name)), name
    widget.task.value = "sr"
    assert gui.shown(widget, widget.factor)
    widget.stopping.value = "none"
    assert not gui.shown(widget, widget.patience)  # only the variance rules use it
    widget.stopping.value = "wmv"
    assert gui.shown(widget, widget.patience)


# ---- 10. layout ------------------------------------------------------------------------------


def test_expert_settings_are_under_a_collapsed_advanced_section(viewer_widget):
    _, widget = viewer_widget
    assert not widget.advanced.isExpanded()
    for name in ("seed", "preview_every", "keep_snapshots", "device", "max_iters", "patience",
                 "stopping"):
        assert widget.advanced.isAncestorOf(getattr(widget, name).native), name
    for name in ("image", "task", "preset"):
        assert not widget.advanced.isAncestorOf(getattr(widget, name).native), name
    assert "0 =" in widget.max_iters.tooltip and "stop" in widget.max_iters.tooltip
    assert "-1 =" in widget.seed.tooltip and "random" in widget.seed.tooltip
    assert "0 =" in widget.patience.tooltip


def test_restore_defaults(viewer_widget):
    from napari_dip.choices import CHANNELS, PRESET, TASK

    _, widget = viewer_widget
    before = {n: getattr(widget, n).value for n in ("seed", "max_iters", "preview_every",
                                                   "device", "stopping", "patience")}
    widget.task.value, widget.preset.value = "sr", "paper"
    widget.channels.value = "separate"
    widget.seed.value, widget.max_iters.value, widget.preview_every.value = 5, 77, 3
    widget.keep_snapshots.value = True
    widget.stopping.value = "none"
    widget.restore_defaults_button.native.click()
    assert widget.task.value == TASK.default and widget.preset.value == PRESET.default
    assert widget.channels.value == CHANNELS.default and not widget.keep_snapshots.value
    assert {n: getattr(widget, n).value for n in before} == before


def test_status_and_metrics_span_the_dock(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-dip", "Deep Image Prior")
    widget.status.value = "a long status line " * 10
    widget.metrics.value = "a long metrics line " * 10
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    full = widget.run_button.native.width()  # a button spans the dock
    assert full > 100
    for label in (widget.status, widget.metrics, widget.estimate):
        assert label.native.width() >= full - 2  # no label column beside it
        assert label.native.wordWrap()


def test_errors_keep_the_whole_message_in_the_dock(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(camera, name="cam")
    labels = viewer.add_labels(np.ones((20, 20), np.uint8), name="small mask")
    gui.configure(widget, image, task="inpaint")
    widget.mask.value = labels
    start = gui.n_records()
    assert widget.run() is None
    (error,) = gui.records_since(start, NotificationSeverity.ERROR)
    message = str(error.message).removeprefix("napari-dip: ")
    assert "'small mask'" in message and "'cam'" in message
    assert message in widget.status.value  # all of it, where it stays


def test_a_new_run_clears_stale_metrics(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    truth = camera.astype(np.float32)
    ref = viewer.add_image(truth, name="truth", visible=False)
    image = viewer.add_image(truth + 20 * np.random.default_rng(0).normal(size=truth.shape)
                             .astype(np.float32), name="noisy")
    gui.configure(widget, image, max_iters=5)
    widget.reference.value = ref
    assert widget.run() is not None
    gui.wait_done(widget)
    assert "PSNR" in widget.metrics.value
    assert widget.run() is not None
    assert widget.metrics.value == ""
    gui.wait_done(widget)
    assert "PSNR" in widget.metrics.value


def test_comparison_labels_panels_and_restores_the_view(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(camera, name="cam")
    gui.configure(widget, image, max_iters=5)
    assert widget.run() is not None
    gui.wait_done(widget)
    (out,) = widget.result_layers
    camera = viewer.scene.camera
    camera.zoom = 3.5
    camera.center = (0, 12.0, 20.0)
    before = (camera.zoom, tuple(camera.center))
    widget.compare(True)
    assert image.name_overlay.visible and out.name_overlay.visible  # panels named
    widget.compare(False)
    assert not image.name_overlay.visible and not out.name_overlay.visible
    assert camera.zoom == pytest.approx(before[0])
    np.testing.assert_allclose(camera.center, before[1])
