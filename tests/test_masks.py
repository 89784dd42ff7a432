"""Inpainting masks are told apart: scattered pixels, strokes, large regions."""

import numpy as np
import pytest

from napari_dip.engine.masks import classify_mask, distance_to_known, line_fraction


@pytest.mark.parametrize("missing", [0.2, 0.5, 0.7])
def test_random_missing_pixels_are_scattered(missing):
    fill = np.random.default_rng(0).random((128, 128)) < missing
    assert classify_mask(fill) == "scattered"


def test_text_strokes_are_strokes(load):
    fill = load("kate_64_fill_mask.png") > 0  # the DIP paper's text mask
    if fill.ndim == 3:
        fill = fill.any(axis=-1)
    assert classify_mask(fill) == "strokes"


def test_scratches_are_strokes():
    fill = np.zeros((96, 96), bool)
    fill[40:43, 5:90] = True  # a 3-px scratch
    fill[10:80, 60:62] = True  # a 2-px one
    fill[5, 5:50] = True  # and a 1-px line
    assert classify_mask(fill) == "strokes"


def test_a_large_hole_is_a_region():
    fill = np.zeros((96, 96), bool)
    fill[30:60, 20:70] = True
    assert classify_mask(fill) == "regions"
    d = distance_to_known(fill)
    assert d[45, 45] == 8 and d[30, 20] == 1 and d[0, 0] == 0


def test_line_fraction_of_a_random_mask():
    fill = np.random.default_rng(1).random((200, 200)) < 0.5
    assert line_fraction(fill) == pytest.approx(1 - 0.75**2, abs=0.02)


def test_the_inpainting_setting_follows_the_mask(load):
    from napari_dip.engine import restore

    gt = load("kate_64.png")
    rng = np.random.default_rng(0)
    scattered = rng.random(gt.shape[:2]) < 0.5
    rec = restore(gt, "inpaint", mask=scattered, max_iters=2, preset="light", seed=0).record
    assert rec["operator"]["mask_kind"] == "scattered"
    assert rec["config"]["net"]["upsample"] == "nearest" and rec["config"]["lr"] == 0.01
    hole = np.zeros(gt.shape[:2], bool)
    hole[16:48, 16:48] = True
    rec = restore(gt, "inpaint", mask=hole, max_iters=2, preset="light", seed=0).record
    assert rec["operator"]["mask_kind"] == "regions"
    assert rec["config"]["input_kind"] == "meshgrid" and set(rec["config"]["net"]["skip"]) == {0}


def test_scattered_inpainting_stops_at_the_noise_level_of_the_known_pixels(load):
    """The light setting for scattered missing pixels stops like denoising does (the fit of the
    known pixels reaching their noise level, then the average centred on that iterate): past it
    the network fits the noise of the known pixels and the filled ones degrade with them. The
    level must be measurable from half the pixels."""
    import torch

    from napari_dip.engine.fit import observation_noise_variance
    from napari_dip.engine.operators import Mask
    from napari_dip.engine.presets import make_config

    light = make_config("inpaint", "light", mask_kind="scattered")
    assert light.stopping == "noise" and light.ema == 0.99
    assert make_config("inpaint", "paper", mask_kind="scattered").stopping == "none"  # the paper's

    clean = load("kate_64.png").astype(np.float32).mean(-1) / 255
    rng = np.random.default_rng(0)
    sigma = 10 / 255
    noisy = clean + rng.normal(0, sigma, clean.shape).astype(np.float32)
    known = rng.random(clean.shape) >= 0.5
    op = Mask(known)
    variance = observation_noise_variance(torch.from_numpy(noisy * known)[None, None], op)
    # Texture leaks into any noise estimate of a small image, upwards (1.4x on this crop with
    # every pixel, 2.0x from half of them): the rule then stops a little early, never late.
    assert 0.8 * sigma**2 < variance < 2.5 * sigma**2
