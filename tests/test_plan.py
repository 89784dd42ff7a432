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
