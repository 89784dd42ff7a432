"""The widget's plan (layers -> engine arrays and back), without a viewer."""

import numpy as np
from napari.layers import Image, Labels

from napari_dip.gui.plan import ALL, CURRENT, make_plan


def test_current_slice_index_skips_the_channel_axis():
    data = np.random.default_rng(8).random((2, 3, 16, 16)).astype(np.float32)  # (C, Z, Y, X)
    layer = Image(data)
    plan = make_plan(layer, task="denoise", channel_axis=0, slices=CURRENT,
                     current_point=(1, 2, 5, 5))
    assert plan.layout.stack_shape == (3,) and plan.slice_index == 2
    assert plan.work.shape == (3, 2, 16, 16) and plan.layout.plane_channel_axis == 0
    np.testing.assert_array_equal(plan.work[2], data[:, 2])
    back = plan.to_layers(plan.upsampled(plan.work))
    assert len(back) == 1 and np.array_equal(back[0], data)
    plan = make_plan(layer, task="denoise", slices=ALL)  # no channel axis: a (2*3) stack
    assert plan.layout.stack_shape == (2, 3) and plan.work.shape == (6, 16, 16)
    assert plan.slice_index is None


def test_rgb_stack_current_slice_and_sr_round_trip():
    data = np.random.default_rng(9).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    layer = Image(data, rgb=True)
    plan = make_plan(layer, task="sr", factor=2, slices=CURRENT, current_point=(2, 3, 3))
    assert plan.slice_index == 2 and plan.layout.plane_channel_axis == -1
    up = plan.to_layers(plan.upsampled(plan.work))[0]
    assert up.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(up[:, ::2, ::2], data)


def test_channel_layers_and_per_slice_mask():
    rng = np.random.default_rng(10)
    a, b = rng.random((2, 4, 12, 12)).astype(np.float32)  # two (Z, Y, X) layers
    first, second = Image(a, name="a"), Image(b, name="b")
    mask = np.zeros((4, 12, 12), np.uint8)
    mask[3, 2:5, 2:5] = 1
    plan = make_plan(first, task="inpaint", channel_layers=[second], slices=CURRENT,
                     current_point=(3, 0, 0), mask_layer=Labels(mask, name="m"))
    assert plan.slice_index == 3 and plan.work.shape == (4, 2, 12, 12)
    assert plan.mask.shape == (4, 12, 12) and plan.mask[3].sum() == 9
    out_a, out_b = plan.to_layers(plan.work)
    np.testing.assert_array_equal(out_a, a)
    np.testing.assert_array_equal(out_b, b)


def test_channel_axis_proposal_reads_names_then_size():
    from napari_dip.gui.plan import axis_choice_text, default_channel_axis

    two = Image(np.zeros((2, 8, 8), np.float32))
    axis, note = default_channel_axis(two)
    assert axis == 0 and "2 channels" in note and "axis -3 (2)" in note
    assert axis_choice_text(two, 0) == "axis -3 (2)"
    assert default_channel_axis(Image(np.zeros((9, 8, 8))))[0] is None  # too long: a stack
    named = Image(np.zeros((4, 3, 8, 8)), axis_labels=("t", "c", "y", "x"))
    assert default_channel_axis(named) == (1, "") and axis_choice_text(named, 1) == "c (3)"
    assert default_channel_axis(Image(np.zeros((2, 8, 8)), axis_labels=("z", "y", "x")))[0] \
        is None


def test_work_size_counts_fits_without_copying():
    from napari_dip.gui.plan import work_size

    layer = Image(np.zeros((3, 5, 16, 20), np.float32))  # (C, Z, Y, X)
    assert work_size(layer, channel_axis=0, slices=ALL) == (16, 20, 3, 5)
    assert work_size(layer, channel_axis=0, slices=CURRENT, channels="separate") == (16, 20, 1, 3)
    rgb = Image(np.zeros((40, 40, 4), np.uint8), rgb=True)
    assert work_size(rgb) == (40, 40, 3, 1)


def test_outcome_says_what_a_result_layer_holds():
    from napari_dip.gui.results import SUFFIX, describe_outcome

    plane = make_plan(Image(np.zeros((8, 8)), name="a"), task="denoise")
    done = {"stop_reason": "noise-level", "iterations": 420, "seconds": 3.0, "seed": 1,
            "best_iteration": 380, "planes": [{"returned_iteration": 420}]}
    out = describe_outcome(plane, done, estimate_shown=True)
    assert out.state == "finished" and out.layer_name("a") == "a" + SUFFIX
    assert "kept iteration 380" in out.text and "noise level" in out.text
    stopped = {**done, "stop_reason": "user", "iterations": 12}
    assert describe_outcome(plane, stopped, estimate_shown=False).state == "empty"
    out = describe_outcome(plane, stopped, estimate_shown=True)
    assert out.state == "stopped" and out.layer_name("a").endswith("(stopped at iteration 12)")

    stack = make_plan(Image(np.zeros((4, 8, 8)), axis_labels=("z", "y", "x")), task="denoise")
    record = {"stop_reason": "user", "iterations": 40, "seed": 1, "slices_done": [0, 1],
              "slices": [{"slice": 0, "stop_reason": "cap"}, {"slice": 1, "stop_reason": "cap"},
                         {"slice": 2, "stop_reason": "user"}]}
    out = describe_outcome(stack, record, estimate_shown=True)
    assert out.state == "partial" and out.label == "2 of 4 slices restored"
    assert out.slices_not_restored == [2, 3] and out.slice_stopped == 2
    assert "z=2, z=3" in out.text


def test_progress_text_shows_work_done_not_the_cap():
    from napari_dip.engine.restoration import Progress
    from napari_dip.gui.results import progress_text

    stack = make_plan(Image(np.zeros((4, 8, 8)), axis_labels=("z", "y", "x")), task="denoise")
    event = Progress(120, 3000, 0.01, 0.01, None, 4.0, status="fit error 0.01, stops at 0.009",
                     slice_index=1, n_slices=4)
    text = progress_text(stack, event, 75.0, slices_done=1)
    assert text == ("slice z=1 (2 of 4) · iteration 120 · 1 min 15 s · fit error 0.01, "
                    "stops at 0.009")
    assert "3000" not in text


# ---- lazy (dask, zarr) layers: planned without reading, read one slice at a time ------------

class _Reads:
    """An array-like behind a dask array (one slice per chunk) that records what is read."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.keys = []

    def __getitem__(self, key):
        self.keys.append(key)
        return self.data[key]


def _lazy(data):
    import dask.array as da

    reads = _Reads(data)
    return da.from_array(reads, chunks=(1,) * (data.ndim - 2) + data.shape[-2:]), reads


def test_a_lazy_stack_is_planned_without_reading_it_and_read_one_slice_at_a_time(tmp_path):
    import pytest

    pytest.importorskip("dask")
    pytest.importorskip("zarr")
    from napari_dip.gui.lazy import create_store
    from napari_dip.gui.plan import is_lazy, work_size

    data = np.random.default_rng(11).random((2, 3, 16, 12)).astype(np.float32)  # (T, Z, Y, X)
    lazy, reads = _lazy(data)
    layer = Image(lazy, name="t z", contrast_limits=(0, 1))
    reads.keys.clear()  # napari read what it shows
    plan = make_plan(layer, task="denoise", slices=ALL)
    assert work_size(layer, slices=ALL) == (16, 12, 1, 6)
    assert reads.keys == []  # planning reads no pixel
    assert plan.lazy and is_lazy(plan.data) and plan.data is lazy
    assert plan.slices_asked == list(range(6)) and plan.output_chunks == (1, 1, 16, 12)
    np.testing.assert_array_equal(plan.read_slice(5), data[1, 2])
    assert len(reads.keys) == 1  # that slice's chunk only

    store, path = create_store(plan, str(tmp_path))
    assert path.startswith(str(tmp_path)) and path.endswith(".zarr")
    assert store.shape == data.shape and store.dtype == data.dtype
    assert store.chunks == (1, 1, 16, 12) and not np.asarray(store).any()  # fill value
    store[plan.slice_key(4)] = plan.store_plane(plan.read_slice(4))
    np.testing.assert_array_equal(np.asarray(store[1, 1]), data[1, 1])
    assert is_lazy(store) and not is_lazy(data)
    from_zarr = make_plan(Image(store, contrast_limits=(0, 1)), task="denoise", slices=ALL)
    assert from_zarr.lazy and from_zarr.data is store  # a zarr-backed layer is lazy too
    np.testing.assert_array_equal(from_zarr.read_slice(4), data[1, 1])

    # SR: the store is the output's size; a multiscale layer is read at full resolution
    pyramid = Image([lazy, lazy[:, :, ::2, ::2]], multiscale=True, contrast_limits=(0, 1))
    sr = make_plan(pyramid, task="sr", factor=2, slices=CURRENT, current_point=(1, 0, 0, 0))
    assert sr.lazy and sr.slice_index == 3 and sr.output_shape == (2, 3, 32, 24)
    np.testing.assert_array_equal(sr.read_slice(3), data[1, 0])


def test_lazy_layers_refuse_what_needs_the_whole_stack_and_small_ones_stay_eager():
    import pytest

    pytest.importorskip("dask")
    data = np.random.default_rng(12).random((3, 16, 16)).astype(np.float32)
    lazy, _ = _lazy(data)
    layer = Image(lazy, name="z", contrast_limits=(0, 1))
    with pytest.raises(ValueError, match="stack mode '3d'.*'slices' or 'warm'"):
        make_plan(layer, task="denoise", slices=ALL, stack_mode="3d")
    other = Image(data, name="other")
    with pytest.raises(ValueError, match="lazy.*channel layers"):
        make_plan(layer, task="denoise", channel_layers=[other])
    plane, _ = _lazy(data[0])  # one lazy plane is one slice: read as it is
    plan = make_plan(Image(plane, contrast_limits=(0, 1)), task="denoise")
    assert not plan.lazy and isinstance(plan.data, np.ndarray)
    np.testing.assert_array_equal(plan.work, data[0])
    eager = make_plan(other, task="denoise", slices=ALL)  # numpy layers: as before
    assert not eager.lazy and eager.work.shape == (3, 16, 16)


def test_a_mask_of_pixels_to_keep_is_read_the_other_way_round_when_asked():
    import pytest

    img = Image(np.random.default_rng(0).random((16, 16)).astype(np.float32), name="img")
    keep = np.zeros((16, 16), np.uint8)
    keep[:, :10] = 1  # the DIP repository's masks: 1 = known
    plan = make_plan(img, task="inpaint", mask_layer=Labels(keep, name="kept"), invert_mask=True)
    np.testing.assert_array_equal(plan.mask, keep == 0)
    assert plan.mask_inverted
    plain = make_plan(img, task="inpaint", mask_layer=Labels(keep, name="kept"))
    np.testing.assert_array_equal(plain.mask, keep > 0)
    assert not plain.mask_inverted
    with pytest.raises(ValueError, match="read as the pixels to keep, leaves nothing to fill"):
        make_plan(img, task="inpaint", mask_layer=Labels(np.ones((16, 16), np.uint8), name="all"),
                  invert_mask=True)
    # only inpainting reads a mask
    assert not make_plan(img, task="denoise", invert_mask=True).mask_inverted
