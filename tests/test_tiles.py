"""Tiles: planes too large for one fit are restored in overlapping tiles without seams."""

import numpy as np
import pytest

import napari_dip.engine.tiles as tiles
from napari_dip.engine import restore
from napari_dip.engine.generators import LIGHT_SKIP, PAPER_SKIP
from napari_dip.engine.intensity import IntensityMap

FAST = dict(preset="light", device="cpu", seed=0)


@pytest.fixture(scope="module")
def noisy_nuclei(load):
    """A 96x96 real 16-bit crop with noise: 64 px tiles overlap by 16 and meet in its middle."""
    clean = load("nuclei_64_uint16.tif").astype(float)
    clean = np.pad(clean, 16, mode="reflect")
    rng = np.random.default_rng(0)
    return np.clip(clean + rng.normal(0, 25, clean.shape), 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("shape,tile,overlap", [((96, 96), 64, 16), ((300, 130), 128, 32),
                                                ((64, 200), 64, 8)])
def test_tiles_cover_the_plane_and_their_windows_add_up_to_one(shape, tile, overlap):
    plan = tiles.plan_tiles(shape, tile, overlap)
    cover = np.zeros(shape, int)
    total = np.zeros(shape)
    for t in plan:
        cover[t.yx()] += 1
        total[t.yx()] += tiles.tile_window(t, plan)
        assert t.shape[0] <= tile and t.shape[1] <= tile
    assert cover.min() >= 1
    # Where exactly two neighbours share an overlap their weights add to one; the blend
    # normalises by the sum anyway, so check it stays a proper, never-zero weighting.
    assert total.min() > 0.5 and total.max() < 2.0
    if shape == (96, 96):
        np.testing.assert_allclose(total, 1.0, atol=1e-5)


def test_overlap_follows_the_receptive_field_and_stays_within_a_quarter_tile():
    assert tiles.receptive_field(PAPER_SKIP) == tiles.receptive_field(LIGHT_SKIP) > 100
    assert tiles.default_overlap(LIGHT_SKIP, 512) == 72  # a quarter of the 311 px field
    assert tiles.default_overlap(LIGHT_SKIP, 128) == 32  # at most a quarter of the tile


def test_a_tiled_result_has_no_visible_seam(noisy_nuclei, monkeypatch):
    outputs = {}
    add = tiles.Blender.add

    def keep(self, tile, cyx):  # the tiles' own outputs, to stitch them without blending
        outputs[tile.index] = cyx[0].astype(float)
        add(self, tile, cyx)

    monkeypatch.setattr(tiles.Blender, "add", keep)
    # The bilinear light net on 32 input maps: after 30 steps its tiles still differ enough at
    # their edges for the control below (a hard cut) to show a seam.
    # The fit's own estimates (no second stage, which pulls every tile towards the same data).
    result = restore(noisy_nuclei, "denoise", max_iters=30, tile=64, net=LIGHT_SKIP,
                     input_channels=32, refine="none", **FAST)
    assert result.record["tiling"]["count"] == 4 and result.record["tiling"]["overlap"] == 16
    out = result.image.astype(float)
    hard = np.empty_like(out)  # the same tiles cut at the middle of their overlap, unblended
    hard[:48, :48], hard[:48, 48:] = outputs[0][:48, :48], outputs[1][:48, 16:]
    hard[48:, :48], hard[48:, 48:] = outputs[2][16:, :48], outputs[3][16:, 16:]

    def seam(a, axis, at):
        """Mean |step| across line ``at`` over the median step across the 12 lines near it."""
        steps = np.abs(np.diff(a, axis=axis)).mean(axis=1 - axis)
        return steps[at] / np.median(np.r_[steps[at - 6:at], steps[at + 1:at + 7]])

    # Tiles span 0..64 and 32..96 on both axes: their edges lie between lines 31|32 and
    # 63|64, the middle of their overlap between 47|48.
    for axis in (0, 1):
        for at in (31, 47, 63):
            assert seam(out, axis, at) < 1.3, (axis, at, seam(out, axis, at))
        assert seam(hard, axis, 47) > 2  # the test does see a seam when there is one
    # The Wiener stage, filtering each tile on its own, adds none either.
    refined = restore(noisy_nuclei, "denoise", max_iters=30, tile=64, net=LIGHT_SKIP,
                      input_channels=32, **FAST).image.astype(float)
    for axis in (0, 1):
        for at in (31, 47, 63):
            assert seam(refined, axis, at) < 1.3, (axis, at, seam(refined, axis, at))


def test_tiles_share_one_intensity_map_for_the_whole_plane(noisy_nuclei, monkeypatch):
    import napari_dip.engine.restoration as restoration

    image = noisy_nuclei.copy()
    image[:, 48:] += 20000  # the right tiles are far brighter: each must keep its level
    maps, real = [], restoration.restore_iter

    def spy(*args, **kwargs):
        maps.append(kwargs.get("normalisation"))
        return real(*args, **kwargs)

    monkeypatch.setattr(restoration, "restore_iter", spy)
    result = restore(image, "denoise", max_iters=2, tile=64, **FAST)
    whole = IntensityMap.fit(image[None])
    assert len(maps) == 5  # the call that tiles, then one per tile
    assert all(m is maps[1] for m in maps[1:])
    assert maps[1].data_low == pytest.approx(whole.data_low)
    assert maps[1].data_high == pytest.approx(whole.data_high)
    assert result.record["normalisation"]["data_high"] == pytest.approx(whole.data_high)
    np.testing.assert_array_equal(image[:, 48:] - 20000, noisy_nuclei[:, 48:])  # untouched


def test_a_plane_too_big_for_the_device_is_tiled_instead_of_refused(noisy_nuclei, monkeypatch):
    from napari_dip.engine import devices
    from napari_dip.engine.devices import DIPMemoryError, estimate_memory

    # A device whose memory holds a 64-px tile's fit, but not the whole 96-px plane's.
    monkeypatch.setattr(tiles, "MEMORY_SHARE", 0.85)
    fake_total = int(estimate_memory(64, 64, LIGHT_SKIP) / tiles.MEMORY_SHARE) + 1
    assert estimate_memory(96, 96, LIGHT_SKIP) > 0.9 * fake_total
    monkeypatch.setattr(devices, "device_memory", lambda device: fake_total)
    result = restore(noisy_nuclei, "denoise", max_iters=2, **FAST)
    assert result.record["tiling"]["tile"] == 64
    assert result.image.shape == noisy_nuclei.shape and result.image.dtype == np.uint16
    with pytest.raises(DIPMemoryError):
        restore(noisy_nuclei, "denoise", max_iters=2, tile=False, **FAST)


def test_super_resolution_and_inpainting_in_tiles(load):
    small = load("f16_64.png")[:40, :40]
    result = restore(small, "sr", factor=2, max_iters=2, tile=24, **FAST)
    assert result.image.shape == (80, 80, 3) and result.image.dtype == np.uint8
    image = load("kate_64.png")
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[5:9, 5:9] = 1  # only the first tile has pixels to fill
    filled = restore(image, "inpaint", mask=mask, max_iters=2, tile=40, **FAST)
    skipped = [e.get("skipped") for e in filled.record["tiles"]]
    assert skipped[0] is None and skipped[1:] == ["nothing to fill"] * 3
    np.testing.assert_array_equal(filled.image[mask == 0], image[mask == 0])


def test_a_stack_of_tiled_slices_keeps_one_map_and_records_each_tile(load):
    from napari_dip.engine import restore_stack

    stack = load("nuclei3d_3x40x40_uint16.tif")[:2]
    result = restore_stack(stack, "denoise", max_iters=2, tile=24, **FAST)
    assert result.image.shape == stack.shape
    assert [len(s["planes"]) for s in result.record["slices"]] == [4, 4]
    assert {p["tile"] for p in result.record["slices"][0]["planes"]} == {0, 1, 2, 3}
