"""engine/axes.py: axis roles, folding to planes and back, masks and the current slice."""

import numpy as np
import pytest

from napari_dip.engine import axes


def _data(shape):
    return np.arange(np.prod(shape)).reshape(shape)


@pytest.mark.parametrize("letters,shape,folded,plane_ca", [
    ("YX", (5, 6), (5, 6), None),
    ("CYX", (2, 5, 6), (2, 5, 6), 0),
    ("YXS", (5, 6, 3), (5, 6, 3), -1),
    ("ZYX", (4, 5, 6), (4, 5, 6), None),
    ("TZCYX", (2, 3, 2, 5, 6), (6, 2, 5, 6), 0),
    ("YCXZ", (5, 2, 6, 3), (3, 2, 5, 6), 0),  # any order, channels before Y, X
    ("ZYXS", (3, 5, 6, 4), (3, 5, 6, 4), -1),  # colour samples stay last
])
def test_fold_and_unfold_round_trip(letters, shape, folded, plane_ca):
    layout = axes.from_letters(letters, shape)
    data = _data(shape)
    planes = layout.fold(data)
    assert planes.shape == folded and layout.plane_channel_axis == plane_ca
    np.testing.assert_array_equal(layout.unfold(planes), data)


def test_fold_puts_each_slice_in_place():
    layout = axes.from_letters("ZCYX", (3, 2, 5, 6))
    data = _data((3, 2, 5, 6))
    planes = layout.fold(data)
    np.testing.assert_array_equal(planes[1], data[1])
    layout = axes.from_letters("CZYX", (2, 3, 5, 6))  # channel before the stack axis
    data = _data((2, 3, 5, 6))
    np.testing.assert_array_equal(layout.fold(data)[2], data[:, 2])


def test_unfold_accepts_larger_yx_after_super_resolution():
    layout = axes.from_letters("ZCYX", (3, 2, 5, 6))
    planes = np.zeros((3, 2, 10, 12))
    planes[1, 0] = 7
    out = layout.unfold(planes)
    assert out.shape == (3, 2, 10, 12) and (out[1, 0] == 7).all() and out[0].sum() == 0
    with pytest.raises(ValueError, match="do not fold back"):
        layout.unfold(np.zeros((4, 2, 10, 12)))


@pytest.mark.parametrize("letters,shape,message", [
    ("QQQYX", (2, 2, 2, 5, 6), "'Q' more than once"),
    ("ZYX", (5, 6), "do not match"),
    ("ZCX", (2, 5, 6), "must include Y and X"),
    ("CSYX", (2, 3, 5, 6), "more than one channel axis"),
])
def test_bad_letters_are_explained(letters, shape, message):
    with pytest.raises(ValueError, match=message):
        axes.from_letters(letters, shape)


def test_from_indices_for_layers():
    layout = axes.from_indices((2, 3, 5, 6), channel_axis=0)  # (C, Z, Y, X)
    assert layout.stack == (1,) and layout.channel == 0 and layout.plane_channel_axis == 0
    rgb = axes.from_indices((3, 5, 6, 3), colour=True)  # (Z, Y, X, RGB)
    assert rgb.stack == (0,) and rgb.plane_channel_axis == -1 and rgb.yx_shape == (5, 6)
    assert axes.from_indices((2, 3, 5, 6)).stack_shape == (2, 3)
    with pytest.raises(ValueError, match="last two"):
        axes.from_indices((2, 5, 6), channel_axis=-1)
    with pytest.raises(ValueError, match="2-D"):
        axes.from_indices((5,), name="'line'")


def test_flat_index_of_the_current_slice_ignores_channel_and_yx():
    layout = axes.from_indices((2, 3, 4, 5, 6), channel_axis=1)  # (T, C, Z, Y, X)
    assert layout.stack_shape == (2, 4)
    assert layout.flat_index((1, 2, 3, 0.4, 5.9)) == 1 * 4 + 3
    assert layout.flat_index((7, 0, -1, 0, 0)) == 1 * 4 + 0  # clipped into the stack
    assert layout.slice_position(7) == (1, 3)
    rgb = axes.from_indices((3, 5, 6, 3), colour=True)
    assert rgb.flat_index((2, 1, 1)) == 2  # napari's RGB points lack the colour axis
    assert axes.from_letters("YX", (5, 6)).flat_index((1, 1)) == 0


def test_masks_shared_or_one_per_slice():
    layout = axes.from_letters("TZYX", (2, 3, 5, 6))
    shared = np.zeros((5, 6), bool)
    assert layout.fold_mask(shared) is shared
    per_slice = np.zeros((2, 3, 5, 6), bool)
    per_slice[1, 2, 0, 0] = True
    folded = layout.fold_mask(per_slice)
    assert folded.shape == (6, 5, 6) and folded[5, 0, 0] and folded.sum() == 1
    with pytest.raises(ValueError, match=r"\(5, 6\) or \(2, 3, 5, 6\)"):
        layout.fold_mask(np.zeros((4, 4)), "mask 'm.tif'")
    masks = axes.slice_masks(folded, 6, (5, 6))
    assert len(masks) == 6 and masks[5].sum() == 1
    assert all(m is shared for m in axes.slice_masks(shared, 6, (5, 6)))
    assert axes.slice_masks(None, 2, (5, 6)) == [None, None]
    with pytest.raises(ValueError, match="needs a mask"):
        axes.slice_masks(np.zeros((3, 5, 6)), 6, (5, 6))


def test_fold_never_writes_into_the_input():
    data = _data((3, 5, 6))
    data.setflags(write=False)
    layout = axes.from_letters("ZYX", data.shape)
    planes = layout.fold(data)
    assert not planes.flags.writeable or not np.shares_memory(planes, data)
