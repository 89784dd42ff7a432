"""The widget's microscopy settings: noise model, PSF (layer or sigma), guide layer, stack mode.

Run under Xvfb, like the other widget tests. Every fit is a few iterations of the light net on
<= 40 px planes, so the file takes seconds per test; no assertion depends on the result's
quality, only on what reached the engine and what the dock and the metadata say.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity

from napari_dip._widget import ALL, CURRENT, SUFFIX
from napari_dip.gui.plan import make_plan

pytestmark = pytest.mark.gui

FAST = dict(max_iters=3, preview_every=1)


def photon_image(shape=(40, 40), seed=0) -> np.ndarray:
    """A smooth fluorescence-like scene with Poisson (shot) noise, as float32 counts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[-2], 0:shape[-1]]
    scene = 5 + 200 * np.exp(-((yy - shape[-2] / 2) ** 2 + (xx - shape[-1] / 3) ** 2) / 120.0)
    scene = np.broadcast_to(scene, shape)
    return rng.poisson(scene).astype(np.float32)


def gaussian_kernel(size=9, sigma=1.5) -> np.ndarray:
    t = np.arange(size) - size // 2
    g = np.exp(-0.5 * (t / sigma) ** 2)
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def gaussian_kernel_3d(shape=(5, 9, 9), sigma=(1.0, 1.5, 1.5)) -> np.ndarray:
    """A normalised 3-D Gaussian PSF (Z, Y, X), odd-sized and blurring along Z too."""
    axes = [np.exp(-0.5 * ((np.arange(n) - n // 2) / s) ** 2) for n, s in zip(shape, sigma)]
    k = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (k / k.sum()).astype(np.float32)


def run_to_end(widget, gui):
    assert widget.run() is not None
    gui.wait_done(widget)


def test_noise_model_reaches_the_engine_and_auto_shows_its_choice(viewer_widget, gui):
    viewer, widget = viewer_widget
    data = photon_image()
    image = viewer.add_image(data, name="cells")
    assert widget.noise_model.value == "auto" and gui.shown(widget, widget.noise_model)
    assert not widget.advanced.isAncestorOf(widget.noise_model.native)  # in the main section
    assert "auto" in widget.noise_model.tooltip

    gui.configure(widget, image, noise_model="poisson-gaussian", **FAST)
    run_to_end(widget, gui)
    out = viewer.layers["cells" + SUFFIX]
    record = out.metadata["napari_dip"]
    assert record["noise_model"]["model"] == "poisson-gaussian"
    assert record["noise_model"]["requested"] == "poisson-gaussian"
    assert record["widget"]["noise_model"] == "poisson-gaussian"
    assert "noise model: poisson-gaussian" in widget.status.value

    viewer.layers.remove(out)
    widget.noise_model.value = "auto"
    run_to_end(widget, gui)
    record = viewer.layers["cells" + SUFFIX].metadata["napari_dip"]
    chosen = record["noise_model"]
    assert chosen["requested"] == "auto" and chosen["model"] in ("gaussian", "poisson-gaussian")
    assert record["widget"]["noise_model"] == "auto"
    assert f"noise model: {chosen['model']} (auto: {chosen['reason']})" in widget.status.value
    assert np.array_equal(image.data, data)


def test_a_psf_layer_makes_the_run_a_deconvolution(viewer_widget, gui):
    viewer, widget = viewer_widget
    data = photon_image(seed=1)
    image = viewer.add_image(data, name="blurred", scale=(0.2, 0.2), units=("um", "um"))
    psf = viewer.add_image(gaussian_kernel(), name="psf")
    viewer.add_image(np.zeros((2, 2, 8, 8), np.float32), name="4-D")  # not a PSF
    gui.configure(widget, image, **FAST)
    assert widget.task.value == "denoise"
    names = [c.name for c in widget.psf.choices if c is not None]
    assert names == ["psf"]  # 2-D or 3-D layers other than the input
    assert gui.shown(widget, widget.psf) and gui.shown(widget, widget.psf_sigma)
    assert "0 = none" in widget.psf_sigma.tooltip
    widget.psf.value = psf
    run_to_end(widget, gui)
    out = viewer.layers["blurred" + SUFFIX]
    record = out.metadata["napari_dip"]
    assert record["task"] == "deconvolve" and record["widget"]["task"] == "deconvolve"
    assert record["widget"]["psf_layer"] == "psf" and record["widget"]["psf_sigma"] is None
    assert "psf" in record["operator"]  # the forward model convolves with the PSF
    np.testing.assert_allclose(out.scale, image.scale)
    assert tuple(out.units) == tuple(image.units)
    assert np.array_equal(image.data, data)
    assert np.array_equal(psf.data, gaussian_kernel())


def test_psf_sigma_alone_deconvolves(viewer_widget, gui):
    viewer, widget = viewer_widget
    data = photon_image(seed=2).astype(np.uint16)
    image = viewer.add_image(data, name="blurred")
    gui.configure(widget, image, task="deconvolve", psf_sigma=1.5, **FAST)
    run_to_end(widget, gui)
    record = viewer.layers["blurred" + SUFFIX].metadata["napari_dip"]
    assert record["task"] == "deconvolve" and record["widget"]["psf_sigma"] == 1.5
    assert record["widget"]["psf_layer"] is None
    assert "deconvolution: " in widget.status.value  # whether it had room above the input
    # 'auto' result type: a deconvolution's peaks may rise above the input's range
    assert viewer.layers["blurred" + SUFFIX].data.dtype == np.float32 != data.dtype
    assert record["output_dtype"] == "float32"
    assert record["widget"]["output_dtype"] == "auto (float32)"


def test_result_type_input_keeps_the_input_s_type(viewer_widget, gui):
    viewer, widget = viewer_widget
    data = photon_image(seed=2).astype(np.uint16)
    image = viewer.add_image(data, name="blurred")
    gui.configure(widget, image, task="deconvolve", psf_sigma=1.5, output_dtype="input", **FAST)
    run_to_end(widget, gui)
    out = viewer.layers["blurred" + SUFFIX]
    assert out.data.dtype == data.dtype and out.metadata["napari_dip"]["output_dtype"] == \
        str(data.dtype)


def test_the_status_says_whether_a_deconvolution_had_room_above_the_input():
    from napari_dip.gui.results import choice_notes

    def record(**op):
        return {"operator": {"name": "blur", **op}, "input_dtype": "uint8"}

    points = choice_notes(record(gain=64.0, peak_ratio=3.6))
    assert "room for peaks up to 64x the input's range" in points and "3.6x" in points
    assert "8-bit" in points and "float32" in points  # its peaks stop at 255
    flat = choice_notes(record(peak_ratio=1.1))
    assert "within the input's range" in flat and "1.1x" in flat and "8-bit" not in flat
    # records hold one value per channel; a separate fit of beads beside nuclei:
    two = choice_notes(record(gain=[25.0, 1.0], peak_ratio=[2.4, 1.1]))
    assert "channel 0: room for peaks up to 25x" in two and "2.4x" in two
    assert "channel 1: within the input's range" in two and "1.1x" in two
    assert choice_notes(record(gain=[64.0], peak_ratio=[3.6])) == points
    # channels fitted jointly share one room: said once, with the range of the peak test
    rgb = choice_notes(record(gain=[14.0] * 3, peak_ratio=[1.7, 1.9, 2.8]))
    assert "room for peaks up to 14x the input's range in every channel" in rgb
    assert "1.7-2.8x" in rgb and "channel 0" not in rgb
    assert "deconvolution" not in choice_notes({"operator": {"name": "identity"}})


def test_psf_layer_and_sigma_together_is_a_readable_error(viewer_widget, gui):
    viewer, widget = viewer_widget
    data = photon_image(seed=3)
    image = viewer.add_image(data, name="blurred")
    psf = viewer.add_image(gaussian_kernel(), name="psf")
    gui.configure(widget, image, psf_sigma=2.0, **FAST)
    widget.psf.value = psf
    start = gui.n_records()
    assert widget.run() is None
    errors = gui.records_since(start, NotificationSeverity.ERROR)
    assert errors and "not both" in str(errors[-1].message)
    assert "PSF sigma to 0" in widget.status.value  # the fix is named in the dock
    assert gui.dip_layers(viewer) == [] and not widget.running

    widget.psf.value, widget.psf_sigma.value = None, 0.0
    widget.task.value = "deconvolve"  # a deconvolution without a PSF
    assert widget.run() is None
    assert "needs a PSF" in widget.status.value and gui.dip_layers(viewer) == []
    viewer.add_image(data, name="another")  # the viewer keeps working
    assert "another" in viewer.layers
    assert np.array_equal(image.data, data)


def test_a_guide_layer_is_the_network_input(viewer_widget, gui):
    viewer, widget = viewer_widget
    data = photon_image(seed=4)
    image = viewer.add_image(data, name="noisy")
    clean = np.add.outer(np.linspace(0, 1, 40), np.linspace(0, 1, 40)).astype(np.float32)
    guide = viewer.add_image(clean, name="guide")
    viewer.add_image(np.zeros((20, 20), np.float32), name="too small")
    gui.configure(widget, image, **FAST)
    assert [c.name for c in widget.guide.choices if c is not None] == ["guide"]
    assert widget.guide.value is None  # none unless chosen
    widget.guide.value = guide
    run_to_end(widget, gui)
    record = viewer.layers["noisy" + SUFFIX].metadata["napari_dip"]
    assert record["guide"] is not None and record["guide"]["shape"] == [40, 40]
    assert record["widget"]["guide_layer"] == "guide"
    assert np.array_equal(image.data, data)


def test_stack_mode_is_shown_only_for_stacks(viewer_widget, gui):
    viewer, widget = viewer_widget
    flat = viewer.add_image(np.zeros((16, 16), np.float32), name="plane")
    stack = viewer.add_image(np.zeros((4, 16, 16), np.float32), name="zyx",
                             axis_labels=("z", "y", "x"))
    widget.reset_choices()
    widget.image.value = flat
    assert not gui.shown(widget, widget.stack_mode)
    widget.image.value = stack
    assert gui.shown(widget, widget.stack_mode)
    assert tuple(widget.stack_mode.choices) == ("auto", "slices", "warm", "3d")
    assert not widget.advanced.isAncestorOf(widget.stack_mode.native)
    assert "auto" in widget.stack_mode.tooltip and "scale" in widget.stack_mode.tooltip


def test_psf_and_guide_rows_show_where_they_apply_and_defaults_restore(viewer_widget, gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(np.zeros((16, 16), np.float32), name="plane")
    widget.reset_choices()
    widget.image.value = image
    # nothing to offer: no PSF-layer or guide menu, but the sigma is there for a deconvolution
    assert not gui.shown(widget, widget.psf) and not gui.shown(widget, widget.guide)
    assert gui.shown(widget, widget.psf_sigma)
    widget.task.value = "deconvolve"
    assert gui.shown(widget, widget.psf)  # where to put the PSF, even before there is one
    widget.task.value = "inpaint"
    assert not gui.shown(widget, widget.psf) and not gui.shown(widget, widget.psf_sigma)
    viewer.add_image(np.ones((16, 16), np.float32), name="other")
    assert gui.shown(widget, widget.guide)  # a layer of the image's size can guide it
    widget.task.value = "sr"  # a super-resolution guide has the output's size
    assert [c for c in widget.guide.choices if c is not None] == []
    widget.noise_model.value, widget.stack_mode.value = "gaussian", "warm"
    widget.psf_sigma.value = 2.0
    widget.restore_defaults_button.native.click()
    assert widget.noise_model.value == "auto" and widget.stack_mode.value == "auto"
    assert widget.psf_sigma.value == 0.0 and widget.task.value == "denoise"


def test_warm_stack_mode_reaches_the_engine(viewer_widget, gui):
    viewer, widget = viewer_widget
    data = photon_image((3, 32, 32), seed=6)
    image = viewer.add_image(data, name="zyx", scale=(2.0, 0.5, 0.5),
                             axis_labels=("z", "y", "x"))
    gui.configure(widget, image, slices=ALL, stack_mode="warm", **FAST)
    run_to_end(widget, gui)
    out = viewer.layers["zyx" + SUFFIX]
    record = out.metadata["napari_dip"]
    assert record["stack_mode"]["mode"] == "warm"
    assert record["widget"]["stack_mode"] == "warm"
    assert "stack mode: warm" in widget.status.value
    np.testing.assert_allclose(out.scale, image.scale)
    assert tuple(out.axis_labels) == ("z", "y", "x")

    viewer.layers.remove(out)
    widget.stack_mode.value = "auto"  # the engine chooses, and the dock says why
    run_to_end(widget, gui)
    record = viewer.layers["zyx" + SUFFIX].metadata["napari_dip"]
    mode = record["stack_mode"]
    assert mode["requested"] is None and record["widget"]["stack_mode"] == "auto"
    assert f"stack mode: {mode['mode']} (auto: {mode['reason']})" in widget.status.value
    assert np.array_equal(image.data, data)


def test_3d_stack_mode_uses_the_layer_scale(viewer_widget, gui):
    viewer, widget = viewer_widget
    data = photon_image((3, 32, 32), seed=7)
    image = viewer.add_image(data, name="zyx", scale=(2.0, 0.5, 0.5),
                             axis_labels=("z", "y", "x"))
    gui.configure(widget, image, stack_mode="3d", **FAST)  # stack: current slice
    assert widget.run() is None
    assert "all slices" in widget.status.value  # 3-D restores the whole stack
    widget.slices.value = ALL
    run_to_end(widget, gui)
    out = viewer.layers["zyx" + SUFFIX]
    record = out.metadata["napari_dip"]
    assert record["stack_mode"]["mode"] == "3d"
    assert record["stack_mode"]["voxel_size"] == [2.0, 0.5, 0.5]
    assert record["widget"]["voxel_size"] == [2.0, 0.5, 0.5]
    assert out.data.shape == data.shape and not np.array_equal(out.data, data)
    assert "partial" not in out.name and "stack mode: 3d" in widget.status.value
    assert np.array_equal(image.data, data)


def test_a_3d_psf_layer_deconvolves_a_stack_in_3d(viewer_widget, gui):
    viewer, widget = viewer_widget
    data = photon_image((5, 24, 24), seed=8)
    image = viewer.add_image(data, name="zyx", scale=(2.0, 0.5, 0.5),
                             axis_labels=("z", "y", "x"))
    kernel = gaussian_kernel_3d()
    psf = viewer.add_image(kernel, name="psf3d")
    gui.configure(widget, image, task="deconvolve", slices=ALL, stack_mode="3d", **FAST)
    assert psf in [c for c in widget.psf.choices if c is not None]
    widget.psf.value = psf
    run_to_end(widget, gui)
    out = viewer.layers["zyx" + SUFFIX]
    record = out.metadata["napari_dip"]
    assert record["task"] == "deconvolve" and record["stack_mode"]["mode"] == "3d"
    assert record["widget"]["psf_layer"] == "psf3d" and record["widget"]["stack_mode"] == "3d"
    used = record["operator"]["psf"]
    assert len(used["shape"]) == 3 and used["shape"][0] > 1  # blurs along Z: not one plane
    assert used["source"] == "image" and "note" not in used
    assert out.data.shape == data.shape
    np.testing.assert_allclose(out.scale, image.scale)
    assert "stack mode: 3d" in widget.status.value
    assert np.array_equal(image.data, data) and np.array_equal(psf.data, kernel)


def test_a_3d_psf_layer_restored_slice_by_slice_says_it_uses_the_in_focus_plane(
        viewer_widget, gui):
    viewer, widget = viewer_widget
    data = photon_image((3, 24, 24), seed=9)
    image = viewer.add_image(data, name="zyx", scale=(2.0, 0.5, 0.5),
                             axis_labels=("z", "y", "x"))
    psf = viewer.add_image(gaussian_kernel_3d(), name="psf3d")
    gui.configure(widget, image, task="deconvolve", stack_mode="slices", **FAST)
    widget.psf.value = psf
    run_to_end(widget, gui)
    record = viewer.layers["zyx" + SUFFIX].metadata["napari_dip"]
    assert record["stack_mode"]["mode"] == "slices"
    assert len(record["operator"]["psf"]["shape"]) == 2  # a plane's PSF for a plane's fit
    status = widget.status.value
    assert "in-focus plane of the 3-D PSF layer 'psf3d'" in status
    assert "stack mode '3d'" in status  # the fix: deconvolve with the whole PSF
    assert np.array_equal(image.data, data)


def test_the_estimate_before_run_follows_the_stack_mode(viewer_widget, gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(photon_image((5, 24, 24), seed=10), name="zyx",
                             scale=(2.0, 0.5, 0.5), axis_labels=("z", "y", "x"))
    gui.configure(widget, image, slices=ALL, stack_mode="slices")

    def shows(text):
        gui.qtbot.waitUntil(lambda: text in widget.estimate.value
                            and "s/iteration" in widget.estimate.value, timeout=60_000)
        return widget.estimate.value

    assert "5 fits" in shows("stack mode slices: one fit per slice")
    widget.stack_mode.value = "3d"  # one 3-D fit of the whole stack, its step measured
    text = shows("stack mode 3d: one fit of the whole 5×24×24 stack")
    assert "fits" not in text
    settings = widget._estimate_settings()
    assert settings["fits"] == 1 and settings["planes"] == 5
    assert settings["voxel_size"] == (2.0, 0.5, 0.5)
    # What Run would refuse is said before Run, not estimated as something else.
    widget.slices.value = CURRENT
    gui.qtbot.waitUntil(lambda: widget.estimate.value.startswith("no estimate:"), timeout=5_000)
    assert "stack mode '3d' restores the whole stack at once" in widget.estimate.value
    with pytest.raises(ValueError, match="whole stack at once"):  # as Run says it
        make_plan(image, task="denoise", slices=CURRENT, stack_mode="3d")


def test_the_estimate_says_why_a_lazy_or_many_axis_stack_has_no_3d_fit(viewer_widget, gui):
    import dask.array as da

    viewer, widget = viewer_widget
    lazy = viewer.add_image(da.from_array(photon_image((5, 24, 24), seed=11), chunks=(1, 24, 24)),
                            name="lazy", axis_labels=("z", "y", "x"))
    gui.configure(widget, lazy, slices=ALL, stack_mode="3d")
    gui.qtbot.waitUntil(lambda: widget.estimate.value.startswith("no estimate:"), timeout=5_000)
    assert "lazy (dask or zarr)" in widget.estimate.value
    tzyx = viewer.add_image(photon_image((2, 3, 16, 16), seed=12), name="tzyx",
                            axis_labels=("t", "z", "y", "x"))
    widget.image.value = tzyx
    widget.stack_mode.value = "3d"
    gui.qtbot.waitUntil(lambda: "2 stack axes" in widget.estimate.value, timeout=5_000)
    assert widget.estimate.value.startswith("no estimate:")


def test_plan_folds_a_per_slice_guide_and_rejects_misfits():
    from napari.layers import Image

    data = photon_image((3, 16, 16))
    layer = Image(data, name="zyx", axis_labels=("z", "y", "x"))
    guide = Image(data[::-1].copy(), name="g")
    plan = make_plan(layer, task="denoise", guide_layer=guide, stack_mode="warm")
    assert plan.guide.shape == (3, 16, 16) and plan.engine_kwargs()["stack_mode"] == "warm"
    assert plan.engine_kwargs()["guide_name"] == "the guide layer 'g'"
    with pytest.raises(ValueError, match="guide"):
        make_plan(layer, task="denoise", guide_layer=Image(np.zeros((8, 8)), name="small"))
    with pytest.raises(ValueError, match="cannot be combined with task 'inpaint'"):
        make_plan(layer, task="inpaint", psf_sigma=1.0)
    plane = make_plan(Image(data[0]), task="denoise", stack_mode="warm")
    assert "stack_mode" not in plane.engine_kwargs()  # a single plane has no stack mode


def test_a_dim_integer_layer_is_restored_into_float32_and_the_status_says_why(viewer_widget,
                                                                               gui):
    viewer, widget = viewer_widget
    data = (photon_image(seed=3) / 8).round().astype(np.uint16)  # about 25 levels
    image = viewer.add_image(data, name="dim")
    gui.configure(widget, image, **FAST)
    run_to_end(widget, gui)
    out = viewer.layers["dim" + SUFFIX]
    assert out.data.dtype == np.float32 and np.array_equal(image.data, data)
    record = out.metadata["napari_dip"]
    assert record["output_dtype"] == "float32" and record["result_type"]["input_levels"] < 64
    assert record["widget"]["output_dtype"] == "auto (float32)"
    assert "result type: float32 (auto: the input spans only" in widget.status.value
    gui.configure(widget, image, output_dtype="input", **FAST)  # the integers, when asked
    run_to_end(widget, gui)
    assert viewer.layers[-1].name != out.name and viewer.layers[-1].data.dtype == np.uint16
