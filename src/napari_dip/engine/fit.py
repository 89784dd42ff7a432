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
from .noise import estimate_noise
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
    status: str = ""  # what the stopping rule is waiting for, in words


@dataclass
class FitOutcome:
    image: torch.Tensor  # (C, H, W) normalised, on the CPU
    iterations: int
    best_iteration: int | None  # the stopping rule's pick
    returned_iteration: int | None  # when the returned average was taken (pick + EMA lag)
    stop_reason: str  # one of stopping.STOP_REASONS
    backtracks: int
    lr_drops: int  # learning-rate halvings after repeated backtracks
    steps: int  # optimiser steps taken
    seconds: float
    cpu_seconds: float  # process CPU time over all threads (wall time misleads on busy machines)
    seed: int
    parameters: int
    stopping: dict = field(default_factory=dict)  # the rule and what it measured
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
    """Weights, BatchNorm buffers and optimiser state, restorable in place, with the data term
    they had (the reference a step after a restore is judged against)."""

    def __init__(self, net: torch.nn.Module, opt: torch.optim.Optimizer):
        self.net, self.opt = net, opt
        self.saved = False
        self.loss: float | None = None

    def _tensors(self) -> list[torch.Tensor]:
        ts = [*self.net.parameters(), *self.net.buffers()]
        for p in self.net.parameters():
            ts += [v for _, v in sorted(self.opt.state.get(p, {}).items()) if torch.is_tensor(v)]
        return ts

    def save(self, loss: float | None = None):
        live = self._tensors()
        if not self.saved or len(live) != len(self._copy):
            self._copy = [t.detach().clone() for t in live]
        else:
            for c, t in zip(self._copy, live):
                c.copy_(t.detach())
        self.saved, self.loss = True, loss

    def restore(self) -> float | None:
        """Put the saved state back; returns the data term it had."""
        live = self._tensors()
        n_model = sum(1 for _ in self.net.parameters()) + sum(1 for _ in self.net.buffers())
        if len(live) != len(self._copy):
            # The checkpoint predates the optimiser's first step: forget its state entirely.
            self.opt.state.clear()
            live = live[:n_model]
        with torch.no_grad():
            for c, t in zip(self._copy, live):
                t.copy_(c)
        return self.loss


#: Consecutive backtracks after which the step is taken anyway, at a lower learning rate.
MAX_CONSECUTIVE_BACKTRACKS = 3
#: Accepted steps between two checkpoints (a copy costs a few ms; the reference code keeps one
#: per 50 steps in its restoration notebook).
CHECKPOINT_EVERY = 10


def observation_noise_variance(observation: torch.Tensor, operator: Operator) -> float:
    """Mean noise variance of the observation (normalised units), over its observed pixels."""
    known = getattr(operator, "known", None)
    if known is not None:
        known = known[0, 0].cpu().numpy()
    return estimate_noise(observation[0].cpu().numpy(), known).mean_variance


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
    t0, cpu0 = time.perf_counter(), time.process_time()
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
    noise_variance = observation_noise_variance(observation, operator)
    # The output average's centre trails the newest output by ema / (1 - ema) iterations: the
    # image kept for a pick at iteration t is the average at t + lag, centred on t.
    lag = round(config.ema / (1 - config.ema)) if config.ema > 0 else 0
    rule = make_stopping_rule(config.stopping, noise_variance=noise_variance,
                              patience=config.patience, window=config.window, lag=lag)
    checkpoint = _Checkpoint(net, opt) if config.backtrack else None
    loss_jump = 10 ** (config.backtrack_db / 10)

    ema = best = estimate = None
    best_at = pending = None  # iteration of the kept image; when the next one is due
    reference_loss = None  # the data term a new step is judged against
    backtracks = consecutive = lr_drops = steps = 0
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

        if checkpoint is not None and reference_loss is not None and (
            loss_value > reference_loss * loss_jump
        ):
            consecutive += 1
            if consecutive <= MAX_CONSECUTIVE_BACKTRACKS:
                # The last step blew the fit up: undo it (weights *and* Adam moments) and skip.
                # From now on, judge against the restored state's own data term.
                reference_loss = checkpoint.restore()
                backtracks += 1
                history.append((it, loss_value, rule.signal))
                shown = best if best is not None else estimate
                yield FitStep(it, loss_value, rule.signal, rule.best_iteration,
                              time.perf_counter() - t0,
                              shown if shown is not None else out[0].detach(), backtracked=True,
                              status=rule.status(it))
                continue
            # Restoring keeps landing in the same place: take the step, more carefully.
            for group in opt.param_groups:
                group["lr"] *= 0.5
            lr_drops += 1
        consecutive = 0
        if checkpoint is not None and (not checkpoint.saved or it % CHECKPOINT_EVERY == 0):
            checkpoint.save(loss_value)
        reference_loss = loss_value

        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1

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
            if rule.update(it, loss_value, raw if rule.needs_outputs else None):
                pending = it + lag
            if pending is not None and it >= pending:
                best = estimate.clone() if best is None else best.copy_(estimate)
                best_at, pending = it, None
            score = None
            if ref is not None:
                score = psnr(estimate.clamp(0, 1), ref)
                if score > oracle_best[1]:
                    oracle_best = (it, score)
        history.append((it, loss_value, rule.signal))
        stop = rule.should_stop(it)
        yield FitStep(it, loss_value, rule.signal, rule.best_iteration,
                      time.perf_counter() - t0, estimate, psnr=score, status=rule.status(it))
        if stop:
            stop_reason = rule.stop_reason
            break

    picked = rule.best_iteration
    if best is None or pending is not None:
        # No pick yet, or a newer pick whose average is not complete: the latest estimate.
        if estimate is None:
            with torch.no_grad():
                estimate = net(z)[..., : out_hw[0], : out_hw[1]][0]
        best, best_at = estimate, it
        if picked is None:
            picked = it
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
        returned_iteration=best_at,
        stop_reason=stop_reason,
        backtracks=backtracks,
        lr_drops=lr_drops,
        steps=steps,
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - cpu0,
        seed=seed,
        parameters=sum(p.numel() for p in net.parameters()),
        stopping=rule.describe(),
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
