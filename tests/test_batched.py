"""Batched fits (engine/batched.py): each unit is the fit fit.fit runs for its seed.

In float64 the batched and the one-at-a-time paths agree to the float32 rounding of the output,
decision for decision (stop, pick, backtracks); in float32 they differ only by rounding, which
Adam's sign-like first steps amplify, so there the comparison is statistical.
"""

import numpy as np
import pytest
import torch

from napari_dip.engine.batched import UnitDone, UnitStep, fit_batch, run_batch
from napari_dip.engine.fit import run_fit
from napari_dip.engine.generators import GeneratorSpec, UnitConv2d, build_generator, stack_states
from napari_dip.engine.operators import Downsample, Identity, Mask, psnr
from napari_dip.engine.presets import make_config

CPU = torch.device("cpu")
#: A small network (40 px fits without padding at depth 3) that keeps these tests fast.
SMALL = GeneratorSpec(down=(8, 16, 16), up=(8, 16, 16), skip=(4, 4, 4))


def small_config(**overrides):
    return make_config("denoise", "light", **{"net": SMALL, "input_channels": 8, **overrides})


@pytest.fixture(scope="module")
def nuclei():
    """Three 40x40 slices of a real 3-D nuclei stack, [0, 1], with Gaussian noise (sigma 0.08)."""
    from conftest import load_crop

    stack = load_crop("nuclei3d_3x40x40_uint16.tif").astype(np.float32)
    clean = (stack - stack.min()) / (stack.max() - stack.min())
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.08, clean.shape), 0, 1)
    obs = [torch.from_numpy(noisy[i].astype(np.float32))[None, None] for i in range(3)]
    refs = [torch.from_numpy(clean[i])[None] for i in range(3)]
    return obs, refs


@pytest.fixture
def float64():
    """Networks in float64: the two paths then differ only below float32's resolution."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _same_fit(a, b):
    assert (a.iterations, a.best_iteration, a.returned_iteration, a.stop_reason) == \
        (b.iterations, b.best_iteration, b.returned_iteration, b.stop_reason)
    assert (a.backtracks, a.lr_drops) == (b.backtracks, b.lr_drops)
    assert float((a.image - b.image).abs().max()) < 1e-5


def test_a_grouped_network_is_independent_networks_side_by_side():
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(build_generator(SMALL, 8, 2))
    grouped = build_generator(SMALL, 8, 2, units=3)
    grouped.load_state_dict(stack_states([n.state_dict() for n in nets]))
    z = torch.rand(3, 8, 40, 40, requires_grad=True)
    out = grouped(z.reshape(1, 24, 40, 40)).reshape(3, 2, 40, 40)
    for k, net in enumerate(nets):
        torch.testing.assert_close(out[k], net(z[k:k + 1])[0], atol=1e-5, rtol=1e-5)
    # a unit's output depends on its own input (and weights) only
    out[1].sum().backward()
    assert z.grad[1].abs().sum() > 0 and z.grad[0].abs().sum() == 0 == z.grad[2].abs().sum()


def test_batched_units_make_the_one_at_a_time_decisions(nuclei, float64):
    # Different seeds and the default stopping rule: the units stop at different iterations,
    # so the later ones run on in a batch re-sliced under them.
    obs, refs = nuclei
    config = small_config(max_iters=1000)
    singles = [run_fit(o, Identity(), config, device=CPU, seed=s, reference=r)
               for s, o, r in zip((0, 1, 2), obs, refs)]
    batch = run_batch(obs, Identity(), config, device=CPU, seeds=[0, 1, 2], references=refs)
    assert all(s.stop_reason == "noise-level" for s in singles)
    assert len({s.iterations for s in singles}) > 1  # the units left at different times
    for a, b in zip(singles, batch):
        _same_fit(a, b)
        assert b.oracle["best_iteration"] == a.oracle["best_iteration"]
        assert [h[0] for h in b.history] == [h[0] for h in a.history]
        np.testing.assert_allclose([h[1] for h in b.history], [h[1] for h in a.history],
                                   rtol=1e-5)


@pytest.mark.parametrize("gpu_settings", [dict(sync_every=5),
                                          dict(sync_every=10, channels_last=True)])
def test_backtracking_and_learning_rate_drops_are_per_unit(nuclei, float64, gpu_settings):
    # A hair-trigger (0.05 dB) makes every unit backtrack and drop its learning rate often, each
    # at its own iterations; the loss is read every few steps and the layout is a GPU's.
    obs, _ = nuclei
    config = small_config(max_iters=60, stopping="none", backtrack_db=0.05, **gpu_settings)
    singles = [run_fit(o, Identity(), config, device=CPU, seed=s) for s, o in enumerate(obs)]
    batch = run_batch(obs, Identity(), config, device=CPU, seeds=[0, 1, 2])
    assert min(s.backtracks for s in singles) > 0 and max(s.lr_drops for s in singles) > 0
    assert len({(s.backtracks, s.lr_drops) for s in singles}) > 1
    for a, b in zip(singles, batch):
        _same_fit(a, b)


@pytest.mark.parametrize("task", ["inpaint", "sr"])
def test_per_unit_and_shared_operators(nuclei, float64, task):
    obs, _ = nuclei
    rng = np.random.default_rng(1)
    if task == "inpaint":  # one mask per slice, as a stack with per-slice masks has
        ops = [Mask(rng.random((40, 40)) > 0.3) for _ in obs]
        config = make_config("inpaint", "light", net=SMALL, input_channels=8, max_iters=30)
    else:  # one operator for all; 20x20 observations restored at 40x40
        ops = [Downsample(2)] * 3
        obs = [torch.nn.functional.avg_pool2d(o, 2) for o in obs]
        config = make_config("sr", "light", net=SMALL, input_channels=8, max_iters=30)
    singles = [run_fit(o, op, config, device=CPU, seed=7) for o, op in zip(obs, ops)]
    batch = run_batch(obs, ops if task == "inpaint" else ops[0], config, device=CPU, seeds=7)
    for a, b in zip(singles, batch):
        assert b.image.shape == (1, 40, 40)
        _same_fit(a, b)


def test_bfloat16_autocast_runs_and_is_recorded(nuclei):
    obs, _ = nuclei
    outcomes = run_batch(obs, Identity(), small_config(max_iters=3, precision="bfloat16"),
                         device=CPU, seeds=0)
    assert [o.precision for o in outcomes] == ["bfloat16"] * 3
    assert all(torch.isfinite(o.image).all() for o in outcomes)


def test_float32_batches_match_within_noise(nuclei):
    obs, refs = nuclei
    config = small_config(max_iters=1000)
    singles = [run_fit(o, Identity(), config, device=CPU, seed=0) for o in obs]
    batch = run_batch(obs, Identity(), config, device=CPU, seeds=0)
    for a, b, r in zip(singles, batch, refs):
        assert a.stop_reason == b.stop_reason == "noise-level"
        assert abs(a.best_iteration - b.best_iteration) <= 0.2 * a.best_iteration
        assert abs(psnr(a.image, r) - psnr(b.image, r)) < 0.5


def test_a_unit_that_stops_leaves_the_batch_and_the_others_go_on(nuclei):
    obs, _ = nuclei
    # The clean slice reaches its noise level (its own estimate, near zero) much later than the
    # noisy ones, or stalls: either way it runs on alone after the others have left.
    obs = [obs[0], obs[1], obs[2] * 0 + obs[2].mean()]
    obs[2] = obs[2] + 0.3 * torch.linspace(0, 1, 40)[None, None, None]  # a smooth ramp
    steps = fit_batch(obs, Identity(), small_config(max_iters=600), device=CPU, seeds=0)
    seen, left = [], {}
    while True:
        try:
            event = next(steps)
        except StopIteration as end:
            outcomes = end.value
            break
        if isinstance(event, UnitDone):
            left[event.unit] = len(seen)
        else:
            assert isinstance(event, UnitStep)
            assert event.unit not in left  # no step of a unit after it left
            seen.append((event.unit, event.iteration))
    assert set(left) == {0, 1, 2}
    first = min(left, key=left.get)
    gone_at = outcomes[first].iterations
    assert max(i for u, i in seen if u != first) > gone_at + 10  # the others went on
    assert [i for u, i in seen if u == first][-1] == gone_at
    assert outcomes[first].stop_reason == "noise-level"
    # each unit is charged a share of the time, so the shares add up to at most the wall time
    assert all(o.seconds > 0 and o.cpu_seconds > 0 for o in outcomes)


def test_a_failing_unit_is_reported_and_the_others_finish(nuclei):
    obs, _ = nuclei
    bad = obs[1].clone()
    bad[..., 0, 0] = float("nan")  # its data term becomes NaN at the first read-back
    outcomes = run_batch([obs[0], bad, obs[2]], Identity(), small_config(max_iters=20),
                         device=CPU, seeds=0)
    assert isinstance(outcomes[1], FloatingPointError)
    assert outcomes[0].iterations == outcomes[2].iterations == 20
    assert outcomes[0].stop_reason == "cap"


def test_cancel_ends_every_unit_with_its_best_so_far(nuclei):
    obs, _ = nuclei
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 12

    outcomes = run_batch(obs, Identity(), small_config(max_iters=500), device=CPU, seeds=0,
                         cancel=cancel)
    assert [o.stop_reason for o in outcomes] == ["user"] * 3
    assert [o.iterations for o in outcomes] == [12] * 3
    assert all(o.image.shape == (1, 40, 40) and torch.isfinite(o.image).all() for o in outcomes)


# -- stacks, channels and the CLI on the batched path --------------------------------------------
STACK = dict(net=SMALL, input_channels=8, device="cpu", preset="light", seed=0)


@pytest.fixture(scope="module")
def noisy_stack():
    """The nuclei stack (uint16) with noise, and the original as the reference."""
    from conftest import load_crop

    stack = load_crop("nuclei3d_3x40x40_uint16.tif")
    sigma = 0.08 * float(stack.max() - stack.min())
    noisy = stack + np.random.default_rng(0).normal(0, sigma, stack.shape)
    return np.clip(noisy, 0, 65535).astype(np.uint16), stack


def _psnr(a, b, peak):
    return 10 * np.log10(peak**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


def test_stack_batched_matches_one_at_a_time_and_records_the_path(noisy_stack):
    from napari_dip.engine import restore_stack_iter

    noisy, clean = noisy_stack
    original = noisy.copy()
    runs = {}
    for batch in (1, 3):
        events = list(restore_stack_iter(noisy, "denoise", batch=batch, **STACK))
        runs[batch] = events[-1], events[:-1]
    (single, _), (batched, events) = runs[1], runs[3]
    np.testing.assert_array_equal(noisy, original)  # the caller's array is never modified
    assert single.record["batch"] == {"size": 1, "path": "one-at-a-time"}
    assert batched.record["batch"] == {"size": 3, "path": "grouped-convolutions"}
    assert batched.image.dtype == noisy.dtype and batched.image.shape == noisy.shape
    peak = float(clean.max())
    for k, (a, b) in enumerate(zip(single.record["slices"], batched.record["slices"])):
        assert a["stop_reason"] == b["stop_reason"] == "noise-level"
        assert abs(_psnr(single.image[k], clean[k], peak) - _psnr(batched.image[k], clean[k], peak)) < 0.5
        assert _psnr(batched.image[k], clean[k], peak) > _psnr(noisy[k], clean[k], peak) + 1
    # the slices' events interleave, say how many run together, and each slice ends with its
    # final image
    assert max(e.batch for e in events) == 3
    assert len({e.slice_index for e in events[:30]}) == 3
    finals = [e for e in events if e.final]
    assert sorted(e.slice_index for e in finals) == [0, 1, 2]
    for e in finals:
        np.testing.assert_array_equal(e.preview, batched.image[e.slice_index].astype(np.float32))


def test_separate_channels_run_as_one_batch(noisy_stack):
    from napari_dip.engine import restore

    noisy, _ = noisy_stack
    image = np.moveaxis(noisy, 0, -1)  # three channels of one plane, (Y, X, C)
    result = restore(image, "denoise", channel_axis=-1, channels="separate", batch=3,
                     max_iters=6, **STACK)
    assert result.record["batch"]["size"] == 3
    assert [p["channels"] for p in result.record["planes"]] == [[0], [1], [2]]
    assert result.record["iterations"] == 18 and result.image.shape == image.shape


def test_stack_batches_of_two_cover_every_slice_and_keep_a_failing_one_apart(noisy_stack):
    from napari_dip.engine import restore_stack

    noisy, _ = noisy_stack
    masks = np.zeros((3, 40, 40), bool)
    masks[:, 5:9, 5:30] = True
    masks[1] = True  # nothing known in slice 1: it cannot be filled
    result = restore_stack(noisy, "inpaint", mask=masks, batch=2, max_iters=4, **STACK)
    rec = result.record
    assert rec["batch"]["size"] == 2 and rec["slices_done"] == [0, 2]
    assert "every pixel" in rec["slices"][1]["error"]
    np.testing.assert_array_equal(result.image[1], noisy[1])


def test_stack_batch_cancel_keeps_every_slice_s_best_so_far(noisy_stack):
    import threading

    from napari_dip.engine import restore_stack

    noisy, _ = noisy_stack
    cancel, seen = threading.Event(), []

    def on_progress(p):
        seen.append(p)
        if len(seen) == 12:  # four iterations of three slices
            cancel.set()

    result = restore_stack(noisy, "denoise", batch=3, max_iters=500, cancel=cancel,
                           callback=on_progress, **STACK)
    rec = result.record
    assert rec["stop_reason"] == "user" and rec["slices_done"] == []
    assert [s["stop_reason"] for s in rec["slices"]] == ["user"] * 3
    assert all(s["iterations"] == 4 for s in rec["slices"])  # none starts another step
    assert not any(e.final for e in seen)


@pytest.mark.parametrize("unit_by_unit", [True, False], ids=["units", "in-memory"])
def test_cli_batch_option_reaches_the_record(tmp_path, data_dir, monkeypatch, unit_by_unit):
    # A TIFF stack goes unit by unit (resumable) where dask and zarr are installed, else through
    # restore_stack in memory: --batch reaches both.
    import tifffile

    from napari_dip import _batch_cli
    from napari_dip._cli import main
    from napari_dip._io import read_record

    if unit_by_unit:
        pytest.importorskip("dask")
        pytest.importorskip("zarr")
    else:
        monkeypatch.setattr(_batch_cli, "_lazy_tiff_possible", lambda: False)
    src, out = tmp_path / "stack.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, tifffile.imread(data_dir / "nuclei3d_3x40x40_uint16.tif"),
                     photometric="minisblack", metadata={"axes": "ZYX"})
    assert main(["restore", str(src), str(out), "--batch", "3", "--max-iters", "3", "--quiet",
                 "--device", "cpu", "--preset", "light", "--seed", "0"]) == 0
    record = read_record(out)
    assert [s["iterations"] for s in record["slices"]] == [3, 3, 3]
    batched = {"size": 3, "path": "grouped-convolutions"}
    if unit_by_unit:
        assert [s["batch"] for s in record["slices"]] == [batched] * 3
    else:
        assert record["batch"] == batched


def test_slices_in_tiles_go_one_at_a_time(noisy_stack):
    from napari_dip.engine import restore_stack

    noisy, _ = noisy_stack
    result = restore_stack(noisy[:2], "denoise", batch=2, tile=24, max_iters=2, **STACK)
    assert result.record["batch"]["size"] == 1
    assert [len(s["planes"]) for s in result.record["slices"]] == [4, 4]  # 4 tiles each


def test_units_of_a_failed_batch_are_run_one_at_a_time(monkeypatch):
    from napari_dip import _cluster
    from napari_dip.engine import units

    def broken(*args, **kwargs):
        raise RuntimeError("lost the device")
        yield  # pragma: no cover

    done = []
    monkeypatch.setattr(units, "run_unit_batch", broken)
    monkeypatch.setattr(units, "run_unit", lambda **kw: {"status": "done", "name": kw["name"]})
    payload = dict(data=np.zeros((8, 8)), mask=None, normalisation=None, seed=0,
                   channel_axis=None, options={"batch": 2})
    jobs = [(k, {**payload, "name": str(k)}) for k in range(3)]
    _cluster.SerialUnits(1).run(iter(jobs), lambda u, out: done.append((u, out["name"])),
                                __import__("threading").Event(), None)
    assert done == [(0, "0"), (1, "1"), (2, "2")]


def test_a_unit_out_of_memory_is_reported_not_given_the_previous_result(monkeypatch):
    from napari_dip import _cluster
    from napari_dip.engine import units

    def run_unit(**kw):
        if kw["name"] != "0":
            raise MemoryError("no room")
        return {"status": "done", "name": kw["name"]}

    done = []
    monkeypatch.setattr(units, "run_unit", run_unit)
    payload = dict(data=np.zeros((8, 8)), mask=None, normalisation=None, seed=0,
                   channel_axis=None, options={"batch": 1})
    jobs = [(k, {**payload, "name": str(k)}) for k in range(2)]
    _cluster.SerialUnits(1).run(iter(jobs), lambda u, out: done.append((u, out)),
                                __import__("threading").Event(), None)
    assert done[0] == (0, {"status": "done", "name": "0"})
    assert done[1][0] == 1 and done[1][1]["status"] == "error"
    assert "MemoryError" in done[1][1]["error"]


def test_planes_with_other_settings_go_in_other_batches(noisy_stack):
    # e.g. slices whose inpainting masks are of different kinds get different settings
    from napari_dip.engine.batch_planes import PlaneDone, fit_planes
    from napari_dip.engine.restoration import prepare

    noisy, _ = noisy_stack
    jobs = [prepare(noisy[k], "denoise", max_iters=3 + k, **STACK) for k in range(3)]
    jobs[2] = prepare(noisy[2], "denoise", max_iters=3, **STACK)  # as slice 0's
    done = {e.job: e.fits for e in fit_planes(jobs, None, 3) if isinstance(e, PlaneDone)}
    assert [done[k].planes[0]["iterations"] for k in range(3)] == [3, 4, 3]
    assert all(done[k].batch["size"] == 3 for k in range(3))


def test_a_unit_convolution_run_unit_by_unit_on_the_cpu_equals_the_grouped_one():
    # UnitConv2d splits by unit on the CPU where the widths differ; the numbers must not change.
    conv = UnitConv2d(3 * 5, 3 * 4, 3, padding=1, groups=3)
    x = torch.rand(1, 15, 12, 12, requires_grad=True)
    out = conv(x)
    ref = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1, groups=3)
    torch.testing.assert_close(out, ref)
    g_out = torch.autograd.grad(out.square().sum(), (x, conv.weight, conv.bias))
    g_ref = torch.autograd.grad(ref.square().sum(), (x, conv.weight, conv.bias))
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b)
