"""The intensity map: covers the data, keeps thin and small structures, ignores hot pixels."""

import numpy as np
import pytest

from napari_dip.engine.intensity import IntensityMap, outlier_mask


def _filaments_and_puncta(seed=0):
    """Poisson(100) background with a 1-px line and 2x2 spots at 3000 counts (uint16)."""
    rng = np.random.default_rng(seed)
    truth = np.full((48, 48), 100.0)
    truth[10, 4:44] = 3000  # 1-px filament
    for y, x in ((25, 10), (30, 30), (40, 20)):
        truth[y : y + 2, x : x + 2] = 3000  # 2x2 puncta
    noisy = rng.poisson(truth).astype(np.uint16)
    return truth, noisy


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
def test_round_trip_is_exact_on_every_value(dtype):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        img = rng.integers(max(info.min, -300), min(info.max, 4000), (2, 20, 20)).astype(dtype)
    else:
        img = rng.normal(5, 3, (2, 20, 20)).astype(dtype)
    m = IntensityMap.fit(img)
    x = m.forward(img)
    assert x.dtype == np.float32
    back = m.inverse(x)
    assert back.dtype == img.dtype
    tol = 1 if np.issubdtype(dtype, np.integer) else 1e-3
    assert np.abs(back.astype(float) - img.astype(float)).max() <= tol  # nothing clipped
    assert m.outliers == 0 and m.clipped_fraction(img) == 0


def test_thin_line_and_puncta_keep_their_contrast_and_nothing_is_clipped():
    truth, noisy = _filaments_and_puncta()
    m = IntensityMap.fit(noisy[None])
    x = m.forward(noisy[None])[0]
    # the whole data sits inside the sigmoid's interior, not on its edges
    assert 0.02 < x.min() and x.max() < 0.98
    assert m.clipped_fraction(noisy[None]) == 0
    line, background = x[10, 4:44].mean(), np.median(x)
    assert line - background > 0.8 * (x.max() - x.min())
    assert not outlier_mask(noisy).any()
    # the background level comes back unbiased
    back = m.inverse(x[None], as_float=True)[0]
    assert abs(np.median(back) - np.median(noisy)) < 0.5


def test_hot_and_dead_pixels_are_left_out_and_counted():
    truth, noisy = _filaments_and_puncta()
    noisy = noisy.copy()
    noisy[30, 5] = 60000  # hot pixel
    noisy[5, 40] = 0  # a dead pixel on the background
    m = IntensityMap.fit(noisy[None])
    assert m.data_high[0] < 4000 and m.data_high[0] >= 3000
    assert m.data_low[0] > 40
    # the hot pixel is clipped (and counted); the dead one still falls inside the margin
    assert m.outliers == 1
    assert m.clipped_fraction(noisy[None]) == pytest.approx(1 / noisy.size)


def test_pixels_to_fill_take_no_part_in_the_range():
    img = np.full((1, 32, 32), 1000.0, np.float32) + np.random.default_rng(0).normal(0, 10, (1, 32, 32))
    img = img.astype(np.float32)
    img[0, 8:16, 8:16] = 0.0  # a damaged region, to be filled
    known = np.ones((32, 32), np.uint8)
    known[8:16, 8:16] = 0
    assert IntensityMap.fit(img).data_low[0] == 0.0
    assert IntensityMap.fit(img, known=known).data_low[0] > 900


def test_slices_combine_into_one_scale_and_a_constant_slice_is_harmless():
    a = np.linspace(0, 1, 400, dtype=np.float32).reshape(1, 20, 20)
    flat = np.full((1, 20, 20), 0.5, np.float32)
    m = IntensityMap.combine([IntensityMap.fit(a), IntensityMap.fit(flat)])
    assert m.data_low == (0.0,) and m.data_high == (1.0,)
    f = IntensityMap.fit(flat)
    assert np.allclose(f.inverse(f.forward(flat), as_float=True), 0.5)


def test_integer_range_counts_the_levels_an_integer_image_spans(load):
    from napari_dip.engine.intensity import FEW_LEVELS, IntegerRange

    rng = np.random.default_rng(0)
    nuclei = load("nuclei_64_uint16.tif").astype(float)
    clean = (nuclei - nuclei.min()) / (nuclei.max() - nuclei.min())
    dim = rng.poisson(clean * 12 + 0.5)[None]  # a few photons: about 20 levels
    span = IntegerRange.of(dim.astype(np.uint16))
    assert span.few and span.levels == int(dim.max() - dim.min()) < FEW_LEVELS
    hot = dim.copy()
    hot[0, 30, 30] = 60000  # an isolated hot pixel does not widen it
    assert IntegerRange.of(hot.astype(np.uint16)).levels == span.levels
    assert not IntegerRange.of(load("f16_64.png").transpose(2, 0, 1)[:3]).few  # 8-bit photo
    assert IntegerRange.of(dim.astype(np.float32)) is None  # float: nothing is rounded
    both = IntegerRange.combine([IntegerRange.of(dim.astype(np.uint16)),
                                 IntegerRange.of((dim + 200).astype(np.uint16))])
    assert both.levels == span.levels + 200 and not both.few
    # A constant channel (the empty red and blue of a green image stored as RGB) has nothing to
    # lose: the levels are those of the channels that vary.
    green = np.zeros((3, 40, 40), np.uint8)
    green[1] = np.arange(40 * 40).reshape(40, 40) % 200
    assert IntegerRange.of(green).levels == 199
