"""Fast checks of the engine's parts: networks, operators, stopping, checkpoints, arrays."""

import numpy as np
import pytest
import torch

from napari_dip.engine import arrays
from napari_dip.engine.devices import estimate_memory, resolve_device
from napari_dip.engine.fit import _Checkpoint
from napari_dip.engine.generators import (
    LIGHT_SKIP, PAPER_SKIP, build_generator, count_parameters, hourglass, padded_size,
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


@pytest.mark.parametrize("size", [1, 17, 33, 64, 65, 100])
def test_padded_size_keeps_deepest_level_above_one_pixel(size):
    p = padded_size(size, 5)
    assert p >= size and p % 32 == 0 and p // 32 >= 2


def test_lanczos_kernel_is_normalised_symmetric_and_sized_like_reference():
    k = lanczos_kernel(4)
    assert k.shape == (16, 16)  # 4*factor taps for Lanczos-2 at half-pixel phase
    assert np.isclose(k.sum(), 1)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-7)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_downsample_shape_and_preserves_constants(factor):
    op = Downsample(factor)
    x = torch.full((1, 3, 16 * factor, 12 * factor), 0.3)
    y = op.forward(x)
    assert y.shape == (1, 3, 16, 12)
    torch.testing.assert_close(y, torch.full_like(y, 0.3))


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
    assert make_config("sr", "paper", factor=8).jitter == 0.05
    assert make_config("denoise", "paper", lr=0.001).lr == 0.001
    with pytest.raises(ValueError, match="unknown setting"):
        make_config("denoise", "paper", learning_rate=1)
    with pytest.raises(ValueError, match="unknown task"):
        make_config("deblur", "paper")


def test_device_resolution_and_memory_estimate():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="not available|unknown device"):
        resolve_device("cuda:7" if torch.cuda.device_count() < 8 else "nonsense")
    paper = estimate_memory(512, 512, PAPER_SKIP)
    assert 2e9 < paper < 3.5e9  # measured: about 2.6 GB at 512x512
    assert estimate_memory(512, 512, LIGHT_SKIP) < paper / 2
