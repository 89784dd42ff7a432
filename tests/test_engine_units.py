"""Fast checks of the engine's parts: networks, operators, stopping, checkpoints, arrays."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_dip.engine.devices import estimate_memory, resolve_device
from napari_dip.engine.fit import _Checkpoint
from napari_dip.engine.generators import (
    LIGHT_DENOISE, LIGHT_SKIP, PAPER_SKIP, build_generator, count_parameters, hourglass,
    padded_size,
)
from napari_dip.engine.operators import Downsample, Mask, lanczos_kernel
from napari_dip.engine.presets import make_config


def test_paper_network_matches_reference_parameter_count():
    # The reference code's denoising/SR net on a 32-channel input has 2,217,831 parameters.
    assert count_parameters(build_generator(PAPER_SKIP, 32, 3)) == 2_217_831


def test_hourglass_has_no_skips_and_fewer_parameters():
    spec = hourglass(PAPER_SKIP)
    assert spec.skip == (0,) * 5
    assert count_parameters(build_generator(spec, 32, 1)) < count_parameters(
        build_generator(PAPER_SKIP, 32, 1))


@pytest.mark.parametrize("c_in,c_out", [(32, 1), (2, 3), (8, 5)])
def test_generator_any_channels_output_in_unit_range(c_in, c_out):
    net = build_generator(LIGHT_SKIP, c_in, c_out)
    out = net(torch.rand(1, c_in, 64, 96))
    assert out.shape == (1, c_out, 64, 96)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_upsampling_can_differ_per_scale_and_survives_a_json_record():
    from dataclasses import asdict

    from napari_dip.engine.generators import GeneratorSpec, VolumeSpec

    net = build_generator(LIGHT_DENOISE, 8, 1)
    modes, level = [], net.body
    while level is not None:
        modes.append(level.upsample.mode)
        level = level.deeper
    assert modes == ["bilinear", "nearest", "nearest", "nearest", "nearest"]
    again = GeneratorSpec(**json.loads(json.dumps(asdict(LIGHT_DENOISE))))
    assert again == LIGHT_DENOISE  # the record's list reads back as the same spec
    with pytest.raises(ValueError, match="one mode per scale"):
        GeneratorSpec(upsample=("bilinear", "nearest"))
    with pytest.raises(ValueError, match="'bilinear' or 'nearest'"):
        GeneratorSpec(upsample=("bilinear",) * 4 + ("bicubic",))
    vol = build_generator(VolumeSpec(LIGHT_DENOISE, (1,) * 5, (3,) * 5), 8, 1)
    assert vol(torch.rand(1, 8, 4, 64, 64)).shape == (1, 1, 4, 64, 64)


@pytest.mark.parametrize("size", [1, 17, 33, 64, 65, 100])
def test_padded_size_keeps_deepest_level_above_one_pixel(size):
    p = padded_size(size, 5)
    assert p >= size and p % 32 == 0 and p // 32 >= 2


def _lanczos2(t: np.ndarray) -> np.ndarray:
    """The Lanczos-2 window, written out: 2 sin(pi t) sin(pi t / 2) / (pi t)^2, 1 at t = 0."""
    t = np.asarray(t, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = 2 * np.sin(np.pi * t) * np.sin(np.pi * t / 2) / (np.pi * t) ** 2
    return np.where(t == 0, 1.0, v)


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_lanczos_kernel_has_the_analytic_values(factor):
    # Output pixel 0 covers input pixels 0 .. factor-1, so its centre is at (factor - 1) / 2;
    # every input pixel p within 2 output pixels of it gets the weight L2((p - centre) / factor).
    centre = (factor - 1) / 2
    p = np.arange(-2 * factor, 2 * factor + factor)
    d = (p - centre) / factor
    inside = np.abs(d) < 2
    w = _lanczos2(d[inside])
    expected = np.outer(w, w) / w.sum() ** 2
    k = lanczos_kernel(factor)
    assert k.shape == expected.shape
    np.testing.assert_allclose(k, expected, rtol=1e-5, atol=1e-8)
    # The operator puts exactly these weights on the input pixels around output pixel (2, 2)
    # (far enough from the border that no tap falls into the padding).
    op = Downsample(factor)
    n = 8 * factor
    first = p[inside][0] + 2 * factor  # the first tap of output pixel 2, in input pixels
    weights = np.zeros((len(w), len(w)))
    for i, yy in enumerate(range(first, first + len(w))):
        for j, xx in enumerate(range(first, first + len(w))):
            x = torch.zeros(1, 1, n, n)
            x[..., yy, xx] = 1.0
            weights[i, j] = float(op.forward(x)[0, 0, 2, 2])
    np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_downsample_shape_and_preserves_constants(factor):
    op = Downsample(factor)
    x = torch.full((1, 3, 16 * factor, 12 * factor), 0.3)
    y = op.forward(x)
    assert y.shape == (1, 3, 16, 12)
    torch.testing.assert_close(y, torch.full_like(y, 0.3))


def test_downsample_rejects_other_factors_with_the_valid_ones():
    with pytest.raises(ValueError, match="factor 5: choose one of 2, 3, 4, 8"):
        Downsample(5)


def test_mask_loss_is_mean_over_known_pixels_only():
    known = np.zeros((4, 4), np.float32)
    known[:2] = 1
    op = Mask(known)
    x = torch.zeros(1, 1, 4, 4)
    y = torch.zeros(1, 1, 4, 4)
    x[..., 2:, :] = 10.0  # errors on unknown pixels do not count
    x[..., :2, :] = 1.0
    assert float(op.data_term(x, y)) == pytest.approx(1.0)


def test_checkpoint_restores_weights_and_adam_state():
    torch.manual_seed(0)
    net = build_generator(LIGHT_SKIP, 4, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    z = torch.rand(1, 4, 64, 64)

    def step():
        opt.zero_grad()
        net(z).mean().backward()
        opt.step()

    step()
    ckpt = _Checkpoint(net, opt)
    ckpt.save()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    moments = [opt.state[p]["exp_avg_sq"].clone() for p in net.parameters()]
    for _ in range(3):
        step()
    ckpt.restore()
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])
    for p, m in zip(net.parameters(), moments):
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], m)


def test_checkpoint_before_first_step_clears_optimiser_state():
    net = build_generator(LIGHT_SKIP, 4, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    ckpt = _Checkpoint(net, opt)
    ckpt.save()
    net(torch.rand(1, 4, 64, 64)).mean().backward()
    opt.step()
    ckpt.restore()
    assert len(opt.state) == 0


def test_presets_have_paper_defaults_and_validate_overrides():
    c = make_config("denoise", "paper")
    assert (c.lr, c.max_iters, c.ema, c.input_channels) == (0.01, 3000, 0.99, 32)
    assert make_config("sr", preset="paper", factor=8).jitter == 0.05
    assert make_config("denoise", "paper", lr=0.001).lr == 0.001
    light = make_config("denoise", preset="light")
    assert (light.net, light.input_channels) == (LIGHT_DENOISE, 8)
    assert [light.net.upsample_at(i) for i in range(5)] == ["bilinear"] + ["nearest"] * 4
    assert light.net.padding == "zeros"
    assert make_config("deconvolve", preset="light").net == LIGHT_SKIP
    with pytest.raises(ValueError, match="unknown setting"):
        make_config("denoise", "paper", learning_rate=1)
    with pytest.raises(ValueError, match="unknown task"):
        make_config("deblur", "paper")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        make_config("denoise", "huge")
    with pytest.raises(ValueError, match="resolve it first"):
        make_config("denoise", "auto")
    with pytest.raises(ValueError, match="unknown stopping rule"):
        make_config("denoise", "light", stopping="early")


def test_every_concrete_preset_has_a_network_for_every_task():
    from napari_dip.choices import PRESET, TASK
    from napari_dip.engine.presets import NETWORKS

    assert set(NETWORKS) == set(PRESET.values) - {"auto"}
    for preset in NETWORKS:
        for task in TASK.values:
            assert make_config(task, preset).net is not None


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="not available|unknown device"):
        resolve_device("cuda:7" if torch.cuda.device_count() < 8 else "nonsense")


_MEASURE_STEP_PEAK = """
import sys, torch
from napari_dip.engine.generators import LIGHT_SKIP, PAPER_SKIP, build_generator
torch.set_num_threads(1)

def status(key):  # kB -> bytes
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

side = int(sys.argv[1])
for name, spec in (("light", LIGHT_SKIP), ("paper", PAPER_SKIP)):
    net = build_generator(spec, 32, 1)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    def step(n):
        opt.zero_grad()
        ((net(torch.rand(1, 32, n, n)) - torch.rand(1, 1, n, n)) ** 2).mean().backward()
        opt.step()
    step(64)  # warm-up: optimiser state, allocator pools
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident size
    before = status("VmRSS")
    step(side)
    print(name, status("VmHWM") - before)
    del net, opt
"""


def _can_reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_reset_peak_rss(), reason="needs Linux's /proc/self/clear_refs")
def test_memory_estimate_matches_a_measured_training_step():
    """The estimate that refuses too-large jobs against the peak memory one fit step really
    takes (the process's peak resident size above its level before the step, in a fresh
    process, with the kernel's peak counter reset just before the step)."""
    side = 256
    out = subprocess.run([sys.executable, "-c", _MEASURE_STEP_PEAK, str(side)],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    measured = {name: int(v) for name, v in (line.split() for line in out.stdout.splitlines())}
    fixed = estimate_memory(0, 0, LIGHT_SKIP)  # the process's own overhead, not in the increment
    for name, spec in (("light", LIGHT_SKIP), ("paper", PAPER_SKIP)):
        ratio = (estimate_memory(side, side, spec) - fixed) / measured[name]
        # Never well below the real peak (that would let a job run out of memory), and not so
        # far above it that jobs which fit are refused (CPUs differ: oneDNN picks different
        # convolution kernels, and their workspaces, on different machines).
        assert 0.8 < ratio < 1.8, (name, measured[name], ratio)


@pytest.mark.skipif(not _can_reset_peak_rss(), reason="needs Linux's /proc/self/clear_refs")
def test_the_3d_memory_estimate_is_not_below_a_measured_3d_fit():
    # Stack mode '3d' is refused, never tiled, when its estimate exceeds the device: the
    # estimate must not fall below a real 3-D fit's settled peak. Anisotropic voxels (Z not
    # down-sampled) and a deconvolution: among the tightest cases of benchmarks.memory3d
    # (1.1-2.1x over its 8 sizes and spacings; 0.85x before volumes had a factor of their own).
    from benchmarks.memory3d import estimate, measure

    measured = measure(16, 96, 96, 4.0, "deconvolve")
    ratio = estimate(16, 96, 96, "deconvolve") / measured
    assert 0.9 < ratio < 3.5, (measured, ratio)


def test_thread_choice_leaves_busy_cores_alone(monkeypatch):
    from napari_dip.engine import devices

    monkeypatch.delenv("NAPARI_DIP_THREADS", raising=False)
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(devices.os, "getloadavg", lambda: (0.1, 0, 0))
    assert devices.choose_threads() == 4
    assert devices.choose_threads(reserve=1) == 3  # one core for the GUI
    monkeypatch.setattr(devices.os, "getloadavg", lambda: (3.4, 0, 0))
    assert devices.choose_threads() == 1
    monkeypatch.setattr(devices.os, "getloadavg", lambda: (9.0, 0, 0))
    assert devices.choose_threads() == 1
    monkeypatch.setenv("NAPARI_DIP_THREADS", "2")
    assert devices.choose_threads() == 2


_REFILL_FAULTS = """
import resource, torch
from napari_dip.engine import devices

def faults_of_refill():
    # a 40 MiB step buffer (above glibc's largest dynamic mmap threshold), freed at once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(10 * 2**20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

if devices._glibc() is None:
    print("skip")
else:
    plain = [faults_of_refill() for _ in range(5)]
    with devices.cpu_run(1):
        # the first few blocks freed are a few bytes too small for the next, aligned, request
        kept = [faults_of_refill() for _ in range(20)][-5:]
        held = rss()
    print(sum(plain), sum(kept), held - rss())
"""


def test_inside_a_cpu_run_freed_memory_is_reused_and_given_back_after():
    # A fresh process: the page-fault counts depend on the heap's history.
    out = subprocess.run([sys.executable, "-c", _REFILL_FAULTS], capture_output=True,
                         text=True, timeout=300, check=True).stdout.split()
    if out == ["skip"]:
        pytest.skip("the heap policy is glibc's (Linux)")
    plain, kept, given_back = map(int, out)
    assert plain > 5 * 10_000  # 40 MiB of fresh pages is 10,240 faults, every time
    assert kept < 1000  # inside a CPU run the same pages serve every step
    assert given_back > 40 * 2**20  # and the run's heap goes back to the system after it
