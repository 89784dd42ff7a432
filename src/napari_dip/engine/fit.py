"""The DIP fit loop on one normalised plane: z + jitter, Adam, EMA, backtracking, stopping.

It knows nothing of files, layers, dtypes or threads: it takes tensors in [0, 1], yields one
:class:`FitStep` per iteration and returns a :class:`FitOutcome`. Cancellation is checked
between any two steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .generators import build_generator, padded_size
from .operators import Operator, psnr
from .presets import FitConfig
from .stopping import make_stopping_rule


@dataclass
class FitStep:
    iteration: int  # steps done so far (1-based)
    loss: float
    signal: float | None  # the stopping rule's statistic (lower = better), None while warming up
    best_iteration: int | None
    elapsed: float
    estimate: torch.Tensor  # current estimate (C, H, W), normalised; do not modify
    psnr: float | None = None  # against a reference, only when one was given (never steers)
    backtracked: bool = False


@dataclass
class FitOutcome:
    image: torch.Tensor  # (C, H, W) normalised, on the CPU
    iterations: int
    best_iteration: int | None
    stop_reason: str  # "minimum", "no-minimum", "cap" or "user" (see stopping.STOP_REASONS)
    backtracks: int
    seconds: float
    seed: int
    parameters: int
    history: list[tuple[int, float, float | None]] = field(default_factory=list)
    oracle: dict | None = None


def _make_input(config: FitConfig, hw: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    h, w = hw
    if config.input_kind == "meshgrid":
        ys, xs = torch.meshgrid(
            torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij"
        )
        return torch.stack([xs, ys])[None]
    return torch.rand((1, config.input_channels, h, w), generator=gen) * config.input_scale


class _Checkpoint:
    """Weights, BatchNorm buffers and optimiser state, restorable in place."""

    def __init__(self, net: torch.nn.Module, opt: torch.optim.Optimizer):
        self.net, self.opt = net, opt
        self.saved = False

    def _tensors(self) -> list[torch.Tensor]:
        ts = [*self.net.parameters(), *self.net.buffers()]
        for p in self.net.parameters():
            ts += [v for _, v in sorted(self.opt.state.get(p, {}).items()) if torch.is_tensor(v)]
        return ts

    def save(self):
        live = self._tensors()
        if not self.saved or len(live) != len(self._copy):
            self._copy = [t.detach().clone() for t in live]
        else:
            for c, t in zip(self._copy, live):
                c.copy_(t.detach())
        self.saved = True

    def restore(self):
        live = self._tensors()
        n_model = sum(1 for _ in self.net.parameters()) + sum(1 for _ in self.net.buffers())
        if len(live) != len(self._copy):
            # The checkpoint predates the optimiser's first step: forget its state entirely.
            self.opt.state.clear()
            live = live[:n_model]
        with torch.no_grad():
            for c, t in zip(self._copy, live):
                t.copy_(c)


def fit(
    observation: torch.Tensor,
    operator: Operator,
    config: FitConfig,
    *,
    device: torch.device,
    seed: int,
    cancel: Callable[[], bool] | None = None,
    reference: torch.Tensor | None = None,
    net_input: torch.Tensor | None = None,
) -> Iterator[FitStep]:
    """Fit a fresh generator to ``observation`` (1, C, h, w); a generator of steps.

    ``net_input`` (1, Cz, H, W) at the restored image's size replaces the random input z
    (e.g. the flash image of a flash/no-flash pair); it is padded to the network's size.

    The outcome is the generator's return value (``StopIteration.value``); ``run_fit`` is the
    blocking form.
    """
    t0 = time.perf_counter()
    c = observation.shape[1]
    out_hw = operator.output_size(tuple(observation.shape[-2:]))
    net_hw = tuple(padded_size(s, config.net.depth) for s in out_hw)

    gen = torch.Generator().manual_seed(seed)
    if net_input is None:
        z = _make_input(config, net_hw, gen)
    else:
        if tuple(net_input.shape[-2:]) != tuple(out_hw):
            raise ValueError(
                f"the network input has spatial shape {tuple(net_input.shape[-2:])}; "
                f"it must match the restored image's {tuple(out_hw)}"
            )
        pad = (0, net_hw[1] - out_hw[1], 0, net_hw[0] - out_hw[0])
        z = F.pad(net_input.float(), pad, mode="replicate")
    z = z.to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_generator(config.net, z.shape[1], c).to(device)
    jitter_gen = torch.Generator(device=device).manual_seed(seed + 1)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    y = observation.to(device)
    op = operator.to(device)
    ref = reference.to(device) if reference is not None else None
    rule = make_stopping_rule(config.stopping, config.patience, config.window)
    checkpoint = _Checkpoint(net, opt) if config.backtrack else None
    loss_jump = 10 ** (config.backtrack_db / 10)

    ema = best = estimate = None
    accepted_loss = None
    backtracks = 0
    history: list[tuple[int, float, float | None]] = []
    oracle_best = (None, -np.inf)
    stop_reason = "cap"
    it = 0
    net.train()
    while it < config.max_iters:
        if cancel is not None and cancel():
            stop_reason = "user"
            break
        it += 1
        z_in = z
        if config.jitter > 0:
            noise = torch.randn(z.shape, generator=jitter_gen, device=device)
            z_in = z + config.jitter * noise
        out = net(z_in)[..., : out_hw[0], : out_hw[1]]
        loss = op.data_term(out, y)
        loss_value = float(loss.detach())
        if not np.isfinite(loss_value):
            raise FloatingPointError(
                f"the loss became {loss_value} at iteration {it}; try a lower learning rate"
            )

        if checkpoint is not None and accepted_loss is not None and (
            loss_value > accepted_loss * loss_jump
        ):
            # The last step blew the fit up: undo it (weights *and* Adam moments) and skip.
            checkpoint.restore()
            backtracks += 1
            history.append((it, loss_value, rule.signal))
            shown = best if best is not None else estimate
            yield FitStep(it, loss_value, rule.signal, rule.best_iteration,
                          time.perf_counter() - t0,
                          shown if shown is not None else out[0].detach(), backtracked=True)
            continue
        if checkpoint is not None:
            # Copying weights and Adam moments costs a few ms: every 10 accepted steps is enough
            # (the reference code keeps one checkpoint per 50 steps in its restoration notebook).
            if not checkpoint.saved or it % 10 == 0:
                checkpoint.save()
            accepted_loss = loss_value

        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

        with torch.no_grad():
            raw = out[0].detach()
            if config.ema > 0:
                # Short memory at first, so the average is not dragged by the first, random
                # outputs (with a flat 0.99 they still weigh 25 % at iteration 140).
                decay = min(config.ema, (1 + it) / (10 + it))
                ema = raw.clone() if ema is None else ema.mul_(decay).add_(raw, alpha=1 - decay)
                estimate = ema
            else:
                estimate = raw
            if rule.update(it, raw):
                best = estimate.clone() if best is None else best.copy_(estimate)
            score = None
            if ref is not None:
                score = psnr(estimate.clamp(0, 1), ref)
                if score > oracle_best[1]:
                    oracle_best = (it, score)
        history.append((it, loss_value, rule.signal))
        yield FitStep(it, loss_value, rule.signal, rule.best_iteration,
                      time.perf_counter() - t0, estimate, psnr=score)
        if rule.should_stop(it):
            stop_reason = "minimum"
            break

    picked = rule.best_iteration
    if best is None:  # no rule, or it had no pick yet (cancelled, capped): the latest estimate
        picked = it
        if estimate is None:
            with torch.no_grad():
                estimate = net(z)[..., : out_hw[0], : out_hw[1]][0]
        best = estimate
    image = best.clamp(0, 1).cpu()
    oracle = None
    if ref is not None:
        oracle = {
            "best_iteration": oracle_best[0],
            "best_psnr": oracle_best[1],
            "returned_psnr": psnr(image.to(device), ref),
        }
    return FitOutcome(
        image=image,
        iterations=it,
        best_iteration=picked,
        stop_reason=stop_reason,
        backtracks=backtracks,
        seconds=time.perf_counter() - t0,
        seed=seed,
        parameters=sum(p.numel() for p in net.parameters()),
        history=history,
        oracle=oracle,
    )


def run_fit(*args, **kwargs) -> FitOutcome:
    """Blocking form of :func:`fit`."""
    steps = fit(*args, **kwargs)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
