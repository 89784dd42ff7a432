"""The napari widget, driven in a real (hidden) viewer. Run under Xvfb:

    xvfb-run -a .venv/bin/python -m pytest tests/test_widget.py

Every DIP run here is tiny (<= 64 px, <= 60 iterations, 'light' net, CPU) so the file runs in
about a minute on two cores. No assertion depends on timing.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity

from napari_dip._widget import ALL, CURRENT, SUFFIX, DIPWidget
from napari_dip.metrics import psnr

pytestmark = pytest.mark.gui


def test_loads_through_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-dip", "Deep Image Prior")
    assert isinstance(widget, DIPWidget)
    assert widget.device.choices[0] == "auto" and "cpu" in widget.device.choices
    assert widget.run_button.text == "Run"


def test_sample_data_through_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-dip", "damaged-image")
    viewer.open_sample("napari-dip", "noisy-fluorescence")
    viewer.open_sample("napari-dip", "noisy-stack")
    names = [lyr.name for lyr in viewer.layers]
    assert {"damaged", "damage mask", "noisy cells", "noisy stack"} <= set(names)
    assert viewer.layers["damage mask"].data.shape == viewer.layers["damaged"].data.shape
    again = type(viewer.layers["noisy cells"].data)
    from napari_dip._sample_data import noisy_fluorescence

    assert again is np.ndarray
    assert np.array_equal(noisy_fluorescence()[0][0], viewer.layers["noisy cells"].data)


def test_run_updates_one_layer_keeps_metadata_and_input(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    rng = np.random.default_rng(0)
    noisy = np.clip(camera + rng.normal(0, 20, camera.shape), 0, 255).astype(np.uint8)
    layer = viewer.add_image(
        noisy, name="cam", scale=(0.5, 0.25), translate=(10.0, -3.0), units=("um", "um"),
        axis_labels=("y", "x"), metadata={"origin": "test"},
    )
    before = layer.data.copy()
    gui.configure(widget, layer, max_iters=30, preview_every=5, seed=7)

    seen = gui.watch_results(viewer)
    worker = widget.run()
    assert worker is not None
    assert gui.dip_layers(viewer) == []  # no result before the network's first estimate
    assert widget.run_button.text == "Stop"
    gui.wait_done(widget)

    outs = gui.dip_layers(viewer)
    assert [o.name for o in outs] == ["cam" + SUFFIX]  # one layer, updated in place
    out = outs[0]
    assert len(seen) >= 3  # previews during the run, then the final result
    assert any(not np.array_equal(s, seen[-1]) for s in seen[:-1])
    assert out.data.shape == noisy.shape and out.data.dtype == np.uint8
    assert not np.array_equal(out.data, noisy)
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
    assert tuple(out.units) == tuple(layer.units)
    assert tuple(out.axis_labels) == ("y", "x")
    record = out.metadata["napari_dip"]
    assert out.metadata["origin"] == "test"
    assert record["seed"] == 7 and record["task"] == "denoise"
    assert record["stop_iteration"] == record["iterations"] == 30
    assert record["stop_reason"] == "cap"
    assert record["config"]["max_iters"] == 30 and record["preset"] == "light"
    assert record["widget"]["input_layers"] == ["cam"]
    # the input is bit-for-bit unchanged
    assert layer.data.dtype == before.dtype and np.array_equal(layer.data, before)
    assert widget.run_button.text == "Run" and widget.run_button.enabled
    assert widget.last_result.record["seed"] == 7


def test_closing_the_dock_widget_stops_the_run(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    layer = viewer.add_image(camera, name="cam")
    gui.configure(widget, layer, max_iters=100_000, stopping="none", preview_every=5)
    seen = gui.watch_results(viewer)
    assert widget.run() is not None
    gui.wait_for_updates(seen)
    out = gui.dip_layers(viewer)[0]
    viewer.window.remove_dock_widget(widget.native)
    gui.wait_done(widget)
    record = out.metadata["napari_dip"]
    assert record["stop_reason"] == "user" and record["iterations"] < 100_000
    np.testing.assert_array_equal(layer.data, camera)


def test_stop_keeps_best_and_second_run_is_refused(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    layer = viewer.add_image(camera.astype(np.float32), name="cam")
    gui.configure(widget, layer, max_iters=100_000, stopping="none", preview_every=5)
    start = gui.n_records()

    seen = gui.watch_results(viewer)
    assert widget.run() is not None
    gui.wait_for_updates(seen)
    out = gui.dip_layers(viewer)[0]

    assert widget.run() is None  # a second run is refused, with a clear message
    warnings = gui.records_since(start, NotificationSeverity.WARNING)
    assert any("already running" in str(w.message) for w in warnings)
    assert len(gui.dip_layers(viewer)) == 1

    widget.run_button.native.click()  # the button is now Stop
    gui.wait_done(widget)
    record = out.metadata["napari_dip"]
    assert record["stop_reason"] == "user"
    assert 1 <= record["iterations"] < 100_000
    assert record["best_iteration"] is not None
    assert out.data.shape == camera.shape and out.data.dtype == np.float32
    assert np.isfinite(out.data).all()
    assert widget.run_button.text == "Run"
    # and the widget can run again afterwards
    widget.max_iters.value = 10
    assert widget.run() is not None
    gui.wait_done(widget)
    assert len(gui.dip_layers(viewer)) == 2


def test_inpainting_fills_the_labelled_pixels(viewer_widget, gui):
    viewer, widget = viewer_widget
    yy, xx = np.mgrid[0:48, 0:48]
    truth = (60 + 2 * xx + 1.5 * yy).astype(np.uint8)  # a smooth ramp
    mask = np.zeros(truth.shape, np.uint8)
    mask[20:28, 10:38] = 2  # label value other than 1: the rule is label > 0
    damaged = truth.copy()
    damaged[mask > 0] = 0
    image = viewer.add_image(damaged, name="damaged")
    labels = viewer.add_labels(mask, name="mask")
    gui.configure(widget, image, task="inpaint", max_iters=60, preview_every=20)
    widget.mask.value = labels
    assert widget.run() is not None
    gui.wait_done(widget)
    out = viewer.layers["damaged" + SUFFIX].data.astype(float)
    hole = mask > 0
    err_before = np.abs(damaged[hole].astype(float) - truth[hole]).mean()
    err_after = np.abs(out[hole] - truth[hole]).mean()
    assert err_after < 0.5 * err_before
    assert out[hole].mean() > 40  # moved well away from the masked value 0
    assert viewer.layers["damaged" + SUFFIX].metadata["napari_dip"]["widget"]["mask_layer"] \
        == "mask"
    assert np.array_equal(image.data, damaged)


def test_mismatched_mask_is_an_error_notification(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(camera, name="cam")
    labels = viewer.add_labels(np.ones((20, 20), np.uint8), name="small mask")
    gui.configure(widget, image, task="inpaint")
    widget.mask.value = labels
    start = gui.n_records()
    assert widget.run() is None
    errors = gui.records_since(start, NotificationSeverity.ERROR)
    assert errors and "mask" in str(errors[-1].message) and "(20, 20)" in str(errors[-1].message)
    assert gui.dip_layers(viewer) == [] and not widget.running
    # the viewer keeps working
    viewer.add_image(camera, name="another")
    assert "another" in viewer.layers


def test_engine_error_is_a_notification(viewer_widget, gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(np.full((32, 32), 5.0, np.float32), name="flat")
    gui.configure(widget, image)
    start = gui.n_records()
    assert widget.run() is not None  # the engine rejects it inside the worker
    gui.wait_done(widget)
    errors = gui.records_since(start, NotificationSeverity.ERROR)
    assert errors and "constant" in str(errors[-1].message)
    assert gui.dip_layers(viewer) == []  # the placeholder output was removed
    assert widget.run_button.text == "Run"


def test_rgb_is_restored_as_colour(viewer_widget, gui):
    viewer, widget = viewer_widget
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    image = viewer.add_image(rgb, name="rgb")
    assert image.rgb
    gui.configure(widget, image)
    assert widget.channel_axis.choices == (None,)
    assert widget.run() is not None
    gui.wait_done(widget)
    out = viewer.layers["rgb" + SUFFIX]
    assert out.rgb and out.data.shape == (40, 40, 3) and out.data.dtype == np.uint8
    assert len(out.metadata["napari_dip"]["planes"]) == 1  # one joint colour fit


def test_channel_axis_per_channel(viewer_widget, gui):
    viewer, widget = viewer_widget
    rng = np.random.default_rng(2)
    data = rng.normal(100, 10, (3, 32, 32)).astype(np.float32)
    image = viewer.add_image(data, name="cyx", scale=(1, 0.3, 0.3))
    gui.configure(widget, image, channels="separate", max_iters=10)
    widget.channel_axis.value = 0
    assert widget.run() is not None
    gui.wait_done(widget)
    out = viewer.layers["cyx" + SUFFIX]
    assert out.data.shape == (3, 32, 32) and out.data.dtype == np.float32
    np.testing.assert_allclose(out.scale, image.scale)
    record = out.metadata["napari_dip"]
    assert len(record["planes"]) == 3 and record["widget"]["channel_axis"] == 0
    assert np.array_equal(image.data, data)


def test_channel_layers_restored_jointly(viewer_widget, gui):
    viewer, widget = viewer_widget
    rng = np.random.default_rng(3)
    data = rng.normal(100, 10, (2, 32, 32)).astype(np.float32)
    first, second = viewer.add_image(data, channel_axis=0, name=["ch0", "ch1"])
    gui.configure(widget, first, channels="joint", max_iters=10)
    widget.channel_layers.value = [second]
    assert widget.run() is not None
    gui.wait_done(widget)
    for name in ("ch0", "ch1"):
        out = viewer.layers[name + SUFFIX]
        assert out.data.shape == (32, 32)
        assert out.metadata["napari_dip"]["widget"]["input_layers"] == ["ch0", "ch1"]
    assert viewer.layers["ch1" + SUFFIX].colormap.name == second.colormap.name


def test_stack_all_slices(viewer_widget, gui):
    viewer, widget = viewer_widget
    rng = np.random.default_rng(4)
    stack = rng.normal(0.5, 0.1, (3, 32, 32)).astype(np.float32)
    image = viewer.add_image(stack, name="zyx", scale=(2.0, 0.5, 0.5), axis_labels=("z", "y", "x"))
    gui.configure(widget, image, slices=ALL, max_iters=15, preview_every=5)
    seen = gui.watch_results(viewer)
    assert widget.run() is not None
    gui.wait_done(widget)
    out = viewer.layers["zyx" + SUFFIX]
    assert out.data.shape == (3, 32, 32)
    np.testing.assert_allclose(out.scale, image.scale)
    record = out.metadata["napari_dip"]
    assert record["slices_done"] == [0, 1, 2] and record["widget"]["stack"] == ALL
    assert all(not np.array_equal(out.data[i], stack[i]) for i in range(3))
    # the output filled in slice by slice: slice 0 restored while slice 2 was still the input
    assert any(not np.array_equal(s[0], stack[0]) and np.array_equal(s[2], stack[2])
               for s in seen)
    assert np.array_equal(image.data, stack)


def test_stack_current_slice_with_2d_mask(viewer_widget, gui):
    viewer, widget = viewer_widget
    rng = np.random.default_rng(5)
    stack = (rng.random((3, 32, 32)) * 200).astype(np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[10:14, 10:20] = 1  # a 2-D mask shared by every slice
    image = viewer.add_image(stack, name="zyx", axis_labels=("z", "y", "x"))
    labels = viewer.add_labels(mask, name="m")
    viewer.dims.set_current_step(0, 1)
    gui.configure(widget, image, task="inpaint", slices=CURRENT, max_iters=10)
    widget.mask.value = labels
    assert widget.run() is not None
    gui.wait_done(widget)
    out = viewer.layers["zyx" + SUFFIX].data
    assert out.shape == stack.shape
    assert np.array_equal(out[0], stack[0]) and np.array_equal(out[2], stack[2])
    assert not np.array_equal(out[1], stack[1])
    meta = viewer.layers["zyx" + SUFFIX].metadata["napari_dip"]
    assert meta["slices_done"] == [1] and meta["widget"]["slice_index"] == [1]


def test_super_resolution_scales_pixel_size(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    small = camera[::2, ::2].copy()  # 24 x 24
    image = viewer.add_image(small, name="lowres", scale=(1.0, 1.0), translate=(5.0, 5.0))
    gui.configure(widget, image, task="sr", max_iters=10, preview_every=5, keep_snapshots=True)
    widget.factor.value = 2
    assert widget.run() is not None
    gui.wait_done(widget)
    out = viewer.layers["lowres" + SUFFIX]
    assert out.data.shape == (48, 48)
    np.testing.assert_allclose(out.scale, (0.5, 0.5))
    np.testing.assert_allclose(out.translate, (4.75, 4.75))  # same field of view
    snapshots = [lyr for lyr in viewer.layers if lyr.name.startswith("lowres [dip] it ")]
    assert [s.name for s in snapshots] == ["lowres [dip] it 5", "lowres [dip] it 10"]
    assert all(s.data.shape == (48, 48) and not s.visible for s in snapshots)


def test_compare_side_by_side_with_metrics(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    rng = np.random.default_rng(6)
    truth = camera.astype(np.float32)
    noisy = truth + rng.normal(0, 25, truth.shape).astype(np.float32)
    viewer.add_image(np.zeros((8, 8), np.float32), name="unrelated")
    ref = viewer.add_image(truth, name="truth")
    image = viewer.add_image(noisy, name="noisy")
    gui.configure(widget, image, max_iters=20)
    widget.reference.value = ref
    assert widget.run() is not None
    gui.wait_done(widget)
    assert "PSNR" in widget.metrics.value
    widget.compare_button.native.click()
    assert viewer.canvas.grid.enabled
    assert not viewer.layers["unrelated"].visible
    out = viewer.layers["noisy" + SUFFIX]
    assert out.visible and image.visible and ref.visible
    image.contrast_limits = (10.0, 120.0)
    assert tuple(out.contrast_limits) == (10.0, 120.0)  # linked
    metrics = out.metadata["napari_dip_metrics"]
    assert metrics["input"]["psnr"] == pytest.approx(psnr(truth, noisy, float(np.ptp(truth))))
    assert 0 < metrics["result"]["ssim"] <= 1
    widget.compare_button.native.click()
    assert not viewer.canvas.grid.enabled and viewer.layers["unrelated"].visible
    image.contrast_limits = (0.0, 50.0)
    assert tuple(out.contrast_limits) == (10.0, 120.0)  # unlinked again


def test_menus_come_from_the_shared_choices(viewer_widget):
    from napari_dip.choices import CHANNELS, PRESET, SR_FACTOR, STOPPING, TASK

    _, widget = viewer_widget
    assert tuple(widget.task.choices) == TASK.values
    assert tuple(widget.factor.choices) == SR_FACTOR.values
    assert tuple(widget.preset.choices) == PRESET.values
    assert tuple(widget.channels.choices) == CHANNELS.values
    assert tuple(widget.stopping.choices) == (None, *STOPPING.values)  # None: the task's own


def test_stack_keeps_finished_slices_when_one_fails(viewer_widget, gui):
    viewer, widget = viewer_widget
    rng = np.random.default_rng(11)
    stack = (rng.random((3, 32, 32)) * 200 + 20).astype(np.uint8)
    stack[0] = 0  # a blank plane: passed through
    masks = np.zeros((3, 32, 32), np.uint8)
    masks[:, 4:8, 4:28] = 1
    masks[2] = 1  # nothing known in slice 2: that slice fails
    image = viewer.add_image(stack, name="zyx", axis_labels=("z", "y", "x"))
    labels = viewer.add_labels(masks, name="m")
    gui.configure(widget, image, task="inpaint", slices=ALL, max_iters=5)
    widget.mask.value = labels
    start = gui.n_records()
    assert widget.run() is not None
    gui.wait_done(widget)
    (out,) = widget.result_layers
    np.testing.assert_array_equal(out.data[0], stack[0])
    np.testing.assert_array_equal(out.data[2], stack[2])
    assert not np.array_equal(out.data[1], stack[1])  # the finished slice is kept
    warnings = gui.records_since(start, NotificationSeverity.WARNING)
    assert any("slice z=2" in str(w.message) and "every pixel" in str(w.message)
               for w in warnings)
    record = out.metadata["napari_dip"]
    assert record["slices_done"] == [1] and record["slices"][0]["skipped"] == "constant"
    assert record["outcome"]["state"] == "partial" and out.name.endswith("(1 of 2 slices "
                                                                         "restored)")
    assert "passed through (constant)" in widget.status.value


def test_the_second_stage_is_the_task_default_unless_chosen(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    layer = viewer.add_image(camera[:48, :48], name="cam")
    combo = widget.refine.native
    labels = lambda: [combo.itemText(i) for i in range(combo.count())]  # noqa: E731
    assert widget.refine.value is None and "task default (auto)" in labels()
    records = []
    for choice in (None, "none"):
        gui.configure(widget, layer, max_iters=10, stopping="none", refine=choice)
        widget.run()
        gui.wait_done(widget)
        records.append(gui.dip_layers(viewer)[-1].metadata["napari_dip"])
    assert records[0]["config"]["refine"] == "auto"
    stage = records[0]["planes"][0]["refinement"]
    assert stage["asked"] == "auto"
    assert stage["method"] == ("blend" if records[0]["noise_model"]["model"] == "poisson-gaussian"
                               else "collaborative")
    assert records[1]["config"]["refine"] == "none"
    assert "refinement" not in records[1]["planes"][0]
    widget.task.value = "inpaint"  # a task without the stage names its own default
    assert "task default (none)" in labels() and "task default (auto)" not in labels()


def test_the_mask_can_mark_the_pixels_to_keep(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(camera[:48, :48], name="cam")
    keep = np.ones((48, 48), np.uint8)
    keep[20:28, 20:28] = 0  # a hole to fill, as the DIP repository's masks mark it
    labels = viewer.add_labels(keep, name="keep")
    gui.configure(widget, image, task="inpaint", max_iters=5)
    assert gui.shown(widget, widget.invert_mask)
    widget.mask.value, widget.invert_mask.value = labels, True
    widget.run()
    gui.wait_done(widget)
    out = viewer.layers["cam" + SUFFIX]
    assert out.metadata["napari_dip"]["widget"]["mask_inverted"] is True
    # known pixels come back as they were; only the hole was filled
    np.testing.assert_array_equal(out.data[keep > 0], camera[:48, :48][keep > 0])
    assert not np.array_equal(out.data[keep == 0], camera[:48, :48][keep == 0])
    widget.task.value = "denoise"
    assert not gui.shown(widget, widget.invert_mask)
    widget.restore_defaults()
    assert widget.invert_mask.value is False
