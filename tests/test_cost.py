"""The estimate of a run's memory and time, made before it starts (engine/cost.py)."""

import math

import pytest
import torch

from napari_dip.engine import cost
from napari_dip.engine.devices import estimate_memory
from napari_dip.engine.generators import padded_size
from napari_dip.engine.presets import make_config


@pytest.fixture(autouse=True)
def fresh_cache():
    cost.clear_cache()
    yield
    cost.clear_cache()


def test_memory_is_the_networks_estimate_at_the_output_size():
    est = cost.estimate_run(20, 30, "sr", preset="light", device="cpu", factor=2, measure=False)
    spec = make_config("sr", "light", 2).net
    assert est.memory_bytes == estimate_memory(40, 60, spec)
    assert est.seconds_per_iteration is None and est.max_seconds is None
    assert est.preset == "light" and est.device == "cpu"


def test_time_per_iteration_is_measured_once_per_size(monkeypatch):
    calls = []
    measure = cost._measure
    monkeypatch.setattr(cost, "_measure", lambda *a: calls.append(a) or measure(*a))
    first = cost.estimate_run(40, 40, preset="light", device="cpu", fits=3)
    again = cost.estimate_run(40, 40, preset="light", device="cpu", fits=3, max_iters=50)
    assert len(calls) == 1  # the second estimate is served from the cache
    assert math.isfinite(first.seconds_per_iteration) and first.seconds_per_iteration > 0
    assert again.seconds_per_iteration == first.seconds_per_iteration
    assert first.measured_on == (40, 40)
    assert again.max_seconds == pytest.approx(again.seconds_per_iteration * 50 * 3)
    cost.estimate_run(40, 44, preset="light", device="cpu")  # the network pads both to 64
    assert len(calls) == 1
    cost.estimate_run(40, 100, preset="light", device="cpu")  # another size: measured
    assert len(calls) == 2


def test_step_time_is_measured_where_the_loss_is_read_back_every_10_steps(monkeypatch):
    """On CUDA the fit reads its data term back (and yields) only every 10 steps: the timing
    must still see one step per event, and a 4-step fit must not run out of events."""
    import napari_dip.engine.fit as fit_module

    resolve = fit_module.resolve_sync_every
    monkeypatch.setattr(fit_module, "resolve_sync_every",
                        lambda config, device, every: resolve(config, device, every)
                        if config.sync_every else 10)
    seconds = cost._measure(32, 32, "denoise", "light", torch.device("cpu"), 4, 1)
    assert math.isfinite(seconds) and seconds > 0
    vol = cost._measure_volume(4, 16, 16, "denoise", "light", torch.device("cpu"), 1, (1, 1, 1))
    assert math.isfinite(vol) and vol > 0


def test_a_deconvolution_is_timed_with_a_stand_in_psf():
    est = cost.estimate_run(16, 16, "deconvolve", preset="light", device="cpu", max_iters=5)
    assert math.isfinite(est.seconds_per_iteration) and est.seconds_per_iteration > 0


def test_large_images_are_measured_on_a_crop_and_scaled(monkeypatch):
    sizes = []
    monkeypatch.setattr(cost, "_measure", lambda h, w, *a: sizes.append((h, w)) or 0.01)
    est = cost.estimate_run(1024, 2048, preset="light", device="cpu")
    (h, w), = sizes
    assert h * w <= cost.MEASURE_PIXELS and w == pytest.approx(2 * h, abs=1)
    assert est.measured_on == (h, w)
    # scaled by the pixels the network computes (it pads each side to a multiple of 2**depth)
    pad = [padded_size(n, make_config("denoise", "light").net.depth) for n in (h, w)]
    assert est.seconds_per_iteration == pytest.approx(0.01 * 1024 * 2048 / (pad[0] * pad[1]))


def test_description_is_honest_about_the_number_of_iterations(monkeypatch):
    monkeypatch.setattr(cost, "_measure", lambda *a: 0.05)
    cap = make_config("denoise", "light").max_iters
    auto = cost.estimate_run(64, 64, preset="light", device="cpu").describe()
    assert "automatic stop" in auto and f"at most {cap}" in auto and "s/iteration" in auto
    fixed = cost.estimate_run(64, 64, preset="light", device="cpu", stopping="none",
                              max_iters=200, fits=2).describe()
    assert "runs 200 iterations per fit, 2 fits" in fixed and "≈ 20 s" in fixed


def test_formatting_for_people():
    from napari_dip.formatting import format_bytes, format_duration

    assert format_duration(4.25) == "4.2 s" and format_duration(185) == "3 min 05 s"
    assert format_duration(3725) == "1 h 02 min" and format_bytes(2.5e6) == "2.5 MB"


def test_a_plane_too_big_for_the_device_is_estimated_in_tiles(monkeypatch):
    from napari_dip.engine import devices, tiles

    monkeypatch.setattr(cost, "_measure", lambda *a: 0.01)
    monkeypatch.setattr(devices, "device_memory", lambda device: 2 * 10**9)  # a small device
    est = cost.estimate_run(4096, 4096, preset="light", device="cpu", fits=2, measure=False)
    spec = make_config("denoise", "light").net
    assert est.tile == tiles.tile_size_for(4096, 4096, spec, "cpu") and est.tile < 4096
    n = len(tiles.plan_tiles((4096, 4096), est.tile, tiles.default_overlap(spec, est.tile)))
    assert est.tiles == n > 1 and est.fits == 2 * n
    assert est.memory_bytes == estimate_memory(est.tile, est.tile, spec)
    assert f"{n} tiles of {est.tile} px" in est.describe()


def test_stack_mode_3d_is_one_fit_of_the_whole_stack(monkeypatch):
    calls = []
    monkeypatch.setattr(cost, "_measure", lambda *a: 0.01)
    monkeypatch.setattr(cost, "_measure_volume", lambda *a: calls.append(a[:3]) or 0.05)
    kw = dict(preset="light", device="cpu", max_iters=100, stopping="none")
    slices = cost.estimate_run(24, 24, fits=5, stack_mode="slices", **kw)
    volume = cost.estimate_run(24, 24, stack_mode="3d", planes=5, voxel_size=(2, 0.5, 0.5), **kw)
    deeper = cost.estimate_run(24, 24, stack_mode="3d", planes=10, voxel_size=(2, 0.5, 0.5),
                               measure=False, **kw)
    spec = make_config("denoise", "light").net
    assert slices.fits == 5 and volume.fits == 1  # one fit, not one per slice
    # the run's own check: a volume's estimate, above the 2-D one of as many pixels
    assert volume.memory_bytes == estimate_memory(24, 24, spec, planes=5) \
        > estimate_memory(5 * 24, 24, spec) > slices.memory_bytes
    assert deeper.memory_bytes > volume.memory_bytes  # memory grows with Z
    # the 3-D step is measured (on the whole small stack), not the 2-D one
    assert calls == [(5, 24, 24)] and volume.measured_on == (5, 24, 24)
    assert volume.seconds_per_iteration == pytest.approx(0.05)
    assert volume.max_seconds == pytest.approx(0.05 * 100)
    text = volume.describe()
    assert "stack mode 3d: one fit of the whole 5×24×24 stack" in text and "fits" not in text
    assert "stack mode slices: one fit per slice" in slices.describe()
    cost.estimate_run(24, 24, stack_mode="3d", planes=5, voxel_size=(2, 0.5, 0.5), **kw)
    assert len(calls) == 1  # cached


def test_a_large_stack_in_3d_is_measured_on_a_crop_and_scaled(monkeypatch):
    from napari_dip.engine import devices

    monkeypatch.setattr(devices, "device_memory", lambda device: 2**40)  # holds the stack
    sizes = []
    monkeypatch.setattr(cost, "_measure_volume", lambda z, h, w, *a: sizes.append((z, h, w))
                        or 0.01)
    est = cost.estimate_run(512, 512, stack_mode="3d", planes=40, preset="light", device="cpu")
    (z, h, w), = sizes
    assert z == cost.MEASURE_PLANES and z * h * w <= cost.MEASURE_PIXELS and h == w
    depth = make_config("denoise", "light").net.depth
    full = 40 * padded_size(512, depth) ** 2  # 40 and 16 planes need no Z padding
    crop = 16 * padded_size(h, depth) * padded_size(w, depth)
    assert est.seconds_per_iteration == pytest.approx(0.01 * full / crop)


def test_stack_mode_3d_estimates_only_what_it_can_run(monkeypatch):
    from napari_dip.engine import devices

    with pytest.raises(ValueError, match="stack mode '3d' restores tasks denoise and deconv"):
        cost.estimate_run(24, 24, "sr", stack_mode="3d", planes=5, device="cpu", measure=False)
    monkeypatch.setattr(devices, "device_memory", lambda device: 2 * 10**9)  # a small device
    est = cost.estimate_run(1024, 1024, stack_mode="3d", planes=64, preset="light",
                            device="cpu")
    assert est.too_big and est.tile is None and est.seconds_per_iteration is None
    assert "a 3-D fit cannot be tiled" in est.describe()


def test_a_3d_step_is_measured_for_real():
    est = cost.estimate_run(16, 16, "deconvolve", stack_mode="3d", planes=3,
                            voxel_size=(2, 0.5, 0.5), preset="light", device="cpu", threads=1)
    assert math.isfinite(est.seconds_per_iteration) and est.seconds_per_iteration > 0
