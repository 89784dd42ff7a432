"""The fit loop's speed paths (used on GPUs) give the CPU path's results, and run without a GPU."""

import numpy as np
import pytest
import torch

from napari_dip.engine.fit import resolve_precision, run_fit
from napari_dip.engine.operators import Identity
from napari_dip.engine.presets import make_config

CPU = torch.device("cpu")


class Spiky(Identity):
    """The data term blows up once, at the 33rd call (a step to undo)."""

    calls = 0

    def data_term(self, x, y):
        self.calls += 1
        loss = super().data_term(x, y)
        return loss * 100 if self.calls == 33 else loss


@pytest.fixture(scope="module")
def noisy_f16():
    from conftest import load_crop

    clean = load_crop("f16_64.png").astype(np.float32) / 255
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 25 / 255, clean.shape), 0, 1).astype(np.float32)
    to_t = lambda a: torch.from_numpy(np.moveaxis(a, -1, 0).copy())  # noqa: E731
    return to_t(noisy)[None], to_t(clean)


def test_reading_the_loss_every_5_steps_keeps_the_decision(noisy_f16):
    obs, clean = noisy_f16
    outcomes = [
        run_fit(obs, Identity(), make_config("denoise", "light", sync_every=k, max_iters=1500),
                device=CPU, seed=0)
        for k in (1, 5)
    ]
    a, b = outcomes
    assert a.stop_reason == b.stop_reason == "noise-level"
    assert a.best_iteration == b.best_iteration
    assert abs(a.iterations - b.iterations) < 5
    # the kept images are averages a few iterations apart: the same image for the eye
    mse = float(((a.image - b.image) ** 2).mean())
    assert mse < 1e-4  # above 40 dB; 0 where a processor's kernels take both to one path


def test_backtracking_works_when_the_loss_is_read_in_chunks():
    obs = torch.rand(1, 1, 32, 32)
    config = make_config("denoise", "light", max_iters=60, stopping="none", sync_every=5)
    outcome = run_fit(obs, Spiky(), config, device=CPU, seed=0)
    assert outcome.backtracks == 1
    losses = [h[1] for h in outcome.history]
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="divide"):
        run_fit(obs, Identity(), make_config("denoise", "light", max_iters=3, sync_every=3,
                                             stopping="none"), device=CPU, seed=0)


def test_bfloat16_autocast_runs_and_is_recorded():
    obs = torch.rand(1, 1, 32, 32)
    config = make_config("denoise", "light", max_iters=6, stopping="none", precision="bfloat16")
    outcome = run_fit(obs, Identity(), config, device=CPU, seed=0)
    assert outcome.precision == "bfloat16"
    assert outcome.image.dtype == torch.float32 and torch.isfinite(outcome.image).all()
    assert resolve_precision("auto", CPU) is None  # CPUs keep float32 unless asked
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", CPU)


def test_channels_last_gives_the_same_fit(noisy_f16):
    obs, _ = noisy_f16
    config = make_config("denoise", "light", max_iters=20, stopping="none")
    plain = run_fit(obs, Identity(), config, device=CPU, seed=0)
    nhwc = run_fit(obs, Identity(), make_config("denoise", "light", max_iters=20,
                                                stopping="none", channels_last=True),
                   device=CPU, seed=0)
    # Adam amplifies rounding differences between memory layouts, so the iterates drift
    # apart; the fit itself must progress alike.
    first, last = plain.history[0][1], plain.history[-1][1]
    assert nhwc.history[0][1] == pytest.approx(first, rel=1e-4)  # same start
    assert nhwc.history[-1][1] == pytest.approx(last, rel=0.15) and last < 0.5 * first


def test_warm_start_continues_from_given_weights(noisy_f16):
    obs, _ = noisy_f16
    config = make_config("denoise", "light", max_iters=200, stopping="none")
    first = run_fit(obs, Identity(), config, device=CPU, seed=0, return_state=True)
    assert first.state is not None
    warm = run_fit(obs, Identity(), make_config("denoise", "light", max_iters=5,
                                                stopping="none", ema=0.0),
                   device=CPU, seed=0, initial_state=first.state)
    cold = run_fit(obs, Identity(), make_config("denoise", "light", max_iters=5,
                                                stopping="none", ema=0.0), device=CPU, seed=0)
    assert warm.history[0][1] < 0.5 * cold.history[0][1]


def test_output_level_sets_where_a_network_starts():
    from dataclasses import replace

    from napari_dip.engine.fit import initial_network
    from napari_dip.engine.generators import volume_spec

    config = make_config("deconvolve", "light")
    cfg3d = replace(config, net=volume_spec(config.net, 4))
    for cfg, shape, hw in ((config, (1, 32, 20, 24), (20, 24)),
                           (cfg3d, (1, 32, 4, 20, 24), (20, 24))):
        z = torch.rand(shape) * 0.1
        levels = []
        for level in (None, [0.01, 0.05]):
            zp, net = initial_network(cfg, 2, hw, 0, z, output_level=level)
            with torch.no_grad():
                levels.append(net(zp).mean(dim=tuple(range(2, zp.ndim)))[0])
        assert 0.3 < float(levels[0].mean()) < 0.7  # the sigmoid's middle by default
        np.testing.assert_allclose(levels[1].numpy(), [0.01, 0.05], rtol=0.5)
    with pytest.raises(ValueError, match="output level needs 1 or 2 values"):
        initial_network(config, 2, (20, 24), 0, torch.rand(1, 32, 20, 24), output_level=[0.1] * 3)


def test_cuda_graphs_and_fused_adam_are_for_cuda_only():
    from napari_dip.engine.fit import make_optimizer, use_cuda_graphs

    config = make_config("denoise", "light")
    assert config.cuda_graphs is None  # the default: on where there is CUDA
    assert not use_cuda_graphs(config, CPU)
    assert use_cuda_graphs(config, torch.device("cuda"))
    assert not use_cuda_graphs(make_config("denoise", "light", cuda_graphs=False), torch.device("cuda"))
    # a compiled network is not also captured
    assert not use_cuda_graphs(make_config("denoise", "light", compile=True), torch.device("cuda"))
    opt = make_optimizer(torch.nn.Linear(2, 2), 0.01, CPU)
    assert not opt.defaults.get("fused")
    outcome = run_fit(torch.rand(1, 1, 16, 16), Identity(),
                      make_config("denoise", "light", max_iters=2, stopping="none"), device=CPU, seed=0)
    assert outcome.cuda_graphs is False


def test_a_graphed_forward_is_handed_back_not_left_on_the_network(monkeypatch):
    """torch stores the graphed forward on the module; left there it forms a reference cycle
    that keeps the graphs' GPU memory until the garbage collector runs (a stack of fits)."""
    import contextlib

    from napari_dip.engine.fit import graph_network

    def fake_capture(module, sample_args):  # what make_graphed_callables does to a module
        orig = module.forward
        module.forward = lambda *a: orig(*a)

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", fake_capture)
    net = torch.nn.Conv2d(2, 2, 3)
    forward = graph_network(net, torch.rand(1, 2, 8, 8), contextlib.nullcontext())
    assert callable(forward) and "forward" not in vars(net)
    x = torch.rand(1, 2, 8, 8)
    assert torch.equal(forward(x), net(x))


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@CUDA
def test_cuda_graphs_give_the_eager_fit(noisy_f16):
    obs, clean = noisy_f16
    dev = torch.device("cuda")
    runs = {}
    for graphs in (False, True):
        config = make_config("denoise", "light", max_iters=300, stopping="none", cuda_graphs=graphs,
                             precision="float32")
        runs[graphs] = run_fit(obs, Identity(), config, device=dev, seed=0, reference=clean[None])
    eager, graphed = runs[False], runs[True]
    assert graphed.cuda_graphs and not eager.cuda_graphs  # what the record says
    first, last = eager.history[0][1], eager.history[-1][1]
    assert graphed.history[0][1] == pytest.approx(first, rel=1e-3)  # the same start
    assert graphed.history[-1][1] == pytest.approx(last, rel=0.15) and last < 0.2 * first
    assert abs(graphed.oracle["best_psnr"] - eager.oracle["best_psnr"]) < 0.3  # same quality (dB)


@CUDA
def test_cuda_graphs_keep_backtracking_and_the_plain_output():
    obs = torch.rand(1, 1, 32, 32)
    config = make_config("denoise", "light", max_iters=60, stopping="none", ema=0.0,
                         precision="bfloat16")
    outcome = run_fit(obs, Spiky(), config, device=torch.device("cuda"), seed=0)
    assert outcome.backtracks == 1 and outcome.cuda_graphs
    losses = [h[1] for h in outcome.history]
    assert losses[-1] < losses[0]
    assert torch.isfinite(outcome.image).all() and outcome.image.shape == (1, 32, 32)
