"""Many independent fits at once: one network per unit (a slice, a channel), one forward pass.

Each unit is the fit :func:`.fit.fit` runs for its seed: the same input z and initial weights,
its own jitter, Adam moments, step count and learning rate, output average, checkpoints,
backtracking and stopping rule (the same :class:`~.fit.LossReader`). The networks are one
grouped network (:class:`~.generators.SkipNet` with ``units``): every convolution has
``groups=units`` and BatchNorm is per channel, so a unit's output and gradient depend on its own
weights only. A unit that stops leaves the batch: every per-unit tensor is re-sliced and the
network rebuilt for the units left, so its compute stops.

Grouped convolutions rather than ``stack_module_state`` + ``vmap``: vmap lowers a convolution
with batched weights to the same grouped convolution, and the two measured alike (light net,
8 units, one training step, one thread of the 2-core test CPU, per unit against one network at a
time: 64² grouped 0.83-0.94x, vmap 0.89-1.02x; 128² grouped 1.25-1.52x, vmap 1.37-1.42x). The
module form keeps BatchNorm per channel without vmap's in-place buffer rules and takes autocast,
channels_last and torch.compile as :func:`.fit.fit` does. On the CPU, the layers whose input and
output widths differ run unit by unit (:class:`~.generators.UnitConv2d`); a batch then restored
1.12x the slices per CPU-second of one slice at a time (see :func:`default_batch`).

Sums over a batch divide time among the units: each unit is charged an equal share of every
stretch of wall and CPU time it spent in the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .fit import (
    CHECKPOINT_EVERY, FitOutcome, FitStep, LossReader, autocast_context, ema_decay, ema_lag,
    finish_estimate, initial_network, precision_name, resolve_precision, resolve_sync_every,
    stop_variance, stopping_rule,
)
from .generators import build_generator, padded_size
from .operators import Identity, Operator, psnr
from .presets import FitConfig

#: Most units fitted together by default on a GPU (issue 8's 64-slice stack in one batch).
MAX_DEFAULT_BATCH = 64


@dataclass
class UnitStep(FitStep):
    """A :class:`~.fit.FitStep` of one unit; ``unit`` indexes the units given to
    :func:`fit_batch`."""

    unit: int = 0


@dataclass
class UnitDone:
    """A unit has left the batch: its outcome, or the error that ended it (others go on)."""

    unit: int
    outcome: FitOutcome | None
    error: Exception | None = None


def _units_view(t: torch.Tensor, n: int) -> torch.Tensor:
    """``t`` with its units on a leading axis of length ``n`` (a view)."""
    return t.unflatten(0, (n, -1))


def _keep_rows(t: torch.Tensor, n: int, keep: torch.Tensor) -> torch.Tensor:
    """The units ``keep`` of a per-unit tensor (units first along dimension 0)."""
    out = _units_view(t, n).index_select(0, keep).flatten(0, 1)
    return out.contiguous(memory_format=torch.channels_last) if _is_channels_last(t) else out


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
        memory_format=torch.channels_last)


class _Adam:
    """Adam on stacked per-unit parameters (``torch.optim.Adam``'s update, default betas/eps):
    each unit has its own step count and learning rate, kept on the device so that nothing
    waits for the host."""

    def __init__(self, params: list[torch.Tensor], n: int, lr: float,
                 betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.n, self.betas, self.eps = params, n, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        dev = params[0].device
        self.step_count = torch.zeros(n, device=dev)
        self.lr = torch.full((n,), float(lr), device=dev)

    def tensors(self) -> list[torch.Tensor]:
        """Everything a checkpoint holds, units first."""
        return [*self.params, *self.exp_avg, *self.exp_avg_sq, self.step_count]

    @torch.no_grad()
    def step(self):
        b1, b2 = self.betas
        self.step_count += 1
        # Per-unit scalars as (n, 1): they broadcast over each unit's block of a parameter.
        step_size = (self.lr / (1 - b1 ** self.step_count))[:, None]
        bc2_sqrt = (1 - b2 ** self.step_count).sqrt()[:, None]
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            g = p.grad
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = _units_view(v.sqrt(), self.n).flatten(1).div_(bc2_sqrt).add_(self.eps)
            update = _units_view(m, self.n).flatten(1).div(denom).mul_(step_size)
            p.sub_(update.view(p.shape))  # ``update`` is in logical order, like flatten

    def zero_grad(self):
        for p in self.params:
            p.grad = None


class _Rows:
    """Copies of the per-unit state (weights, Adam state, output average): saved for all units
    at once, put back or taken over one unit at a time; each unit's copy has its own data
    term."""

    def __init__(self, n: int):
        self.n = n
        self.copy: list[torch.Tensor] | None = None
        self.ema: torch.Tensor | None = None
        self.has_ema = [False] * n
        self.loss: list[float | None] = [None] * n

    def save(self, live: list[torch.Tensor], ema: torch.Tensor | None):
        if self.copy is None:
            self.copy = [t.detach().clone() for t in live]
        else:
            for c, t in zip(self.copy, live):
                c.copy_(t.detach())
        if ema is not None:
            if self.ema is None:
                self.ema = ema.clone()
            else:
                self.ema.copy_(ema)
        self.has_ema = [ema is not None] * self.n

    def put_back(self, k: int, live: list[torch.Tensor], ema: torch.Tensor | None):
        """Restore unit ``k``'s saved state into ``live`` (and its average into ``ema``)."""
        with torch.no_grad():
            for c, t in zip(self.copy, live):
                _units_view(t, self.n)[k].copy_(_units_view(c, self.n)[k])
            if ema is not None and self.has_ema[k]:
                ema[k].copy_(self.ema[k])
        return self.loss[k]

    def take(self, other: _Rows, units: list[int], losses: list[float]):
        """Unit ``units[j]`` takes ``other``'s copy, whose data term was ``losses[j]``."""
        index = torch.tensor(units, dtype=torch.long, device=other.copy[0].device)
        if self.copy is None:
            self.copy = [torch.zeros_like(c) for c in other.copy]
        for c, o in zip(self.copy, other.copy):
            _units_view(c, self.n).index_copy_(0, index, _units_view(o, self.n)[index])
        if other.ema is not None:
            if self.ema is None:
                self.ema = torch.zeros_like(other.ema)
            self.ema.index_copy_(0, index, other.ema[index])
        for k, loss in zip(units, losses):
            self.has_ema[k], self.loss[k] = other.has_ema[k], loss

    def keep(self, keep: torch.Tensor, kept: list[int]):
        if self.copy is not None:
            self.copy = [_keep_rows(c, self.n, keep) for c in self.copy]
        if self.ema is not None:
            self.ema = self.ema.index_select(0, keep)
        self.has_ema = [self.has_ema[k] for k in kept]
        self.loss = [self.loss[k] for k in kept]
        self.n = len(kept)


@dataclass
class _Unit:
    """The host-side state of one unit in the batch."""

    index: int  # position in the caller's list
    seed: int
    reader: LossReader
    candidate_at: int | None = None
    verified: bool = False  # a checkpoint of this unit has been verified
    best_at: int | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    oracle_best: tuple = (None, -np.inf)


def _grouped_network(config: FitConfig, in_channels: int, out_channels: int,
                     units: int) -> nn.Module:
    """The network structure for ``units`` units, without storage (weights are passed in).

    BatchNorm's running statistics are dropped: a fit always normalises with the batch
    statistics (training mode), so they never change an output."""
    with torch.device("meta"):
        net = build_generator(config.net, in_channels, out_channels, units)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return net


def fit_batch(
    observations: Sequence[torch.Tensor],
    operators: Operator | Sequence[Operator],
    config: FitConfig,
    *,
    device: torch.device,
    seeds: int | Sequence[int],
    cancel: Callable[[], bool] | None = None,
    references: Sequence[torch.Tensor | None] | None = None,
    net_input: torch.Tensor | None = None,
    output_levels: Sequence | None = None,
) -> Iterator[UnitStep | UnitDone]:
    """Fit one generator per observation (each (1, C, h, w), all of one shape), all at once.

    ``operators`` is one operator for every unit or one per unit; ``seeds`` one seed or one per
    unit (each unit starts as :func:`.fit.fit` does with its seed). ``references`` (per unit,
    (C, H', W')) only report PSNR. ``net_input`` replaces z for every unit and
    ``output_levels`` (per unit, None or one level per channel) set where each unit's output
    starts, as in :func:`.fit.fit`.

    Yields :class:`UnitStep` events (one per unit still running at every read-back) and one
    :class:`UnitDone` per unit when it leaves the batch; returns the list of outcomes in the
    units' order (a unit that failed has its exception there). Cancellation ends every unit
    with the best estimate so far.
    """
    t0 = time.perf_counter()
    n = len(observations)
    ops = list(operators) if isinstance(operators, (list, tuple)) else [operators] * n
    seed_of = [seeds] * n if isinstance(seeds, int) else [int(s) for s in seeds]
    if not n or len(ops) != n or len(seed_of) != n:
        raise ValueError("fit_batch needs one operator and one seed per observation, or one "
                         "for all")
    c = observations[0].shape[1]
    out_hw = ops[0].output_size(tuple(observations[0].shape[-2:]))

    # -- every unit's start, exactly as fit.fit makes it for its seed ---------------------------
    levels = [None] * n if output_levels is None else list(output_levels)
    key_of = [(s, None if lv is None else tuple(torch.as_tensor(lv).flatten().tolist()))
              for s, lv in zip(seed_of, levels)]
    starts = {k: initial_network(config, c, out_hw, k[0], net_input, k[1])
              for k in dict.fromkeys(key_of)}
    z = torch.cat([starts[k][0] for k in key_of]).to(device)  # (n, Cz, H, W)
    cz = z.shape[1]
    names = [name for name, _ in starts[key_of[0]][1].named_parameters()]
    channels_last = config.channels_last if config.channels_last is not None \
        else device.type == "cuda"

    weights = {k: dict(net.named_parameters()) for k, (_, net) in starts.items()}

    def stacked(name):
        t = torch.cat([weights[k][name].detach() for k in key_of])
        t = t.to(device)
        if channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t.requires_grad_()

    params = [stacked(name) for name in names]
    per_unit_parameters = sum(p.numel() for p in starts[key_of[0]][1].parameters())
    del starts
    weights.clear()
    y = torch.cat(list(observations)).to(device)
    ops = [op.to(device) for op in ops]
    # One mean-squared error over all units at once where every unit has the same forward model
    # (a stack's slices each bring their own operator object; Identity has no parameters).
    shared_op = type(ops[0]).data_term is Operator.data_term and (
        all(op is ops[0] for op in ops) or all(type(op) is Identity for op in ops))
    refs = None
    if references is not None and all(r is not None for r in references):
        refs = torch.stack([r.to(device) for r in references])
    autocast_dtype = resolve_precision(config.precision, device)
    autocast = autocast_context(device, autocast_dtype)
    lag = ema_lag(config.ema)
    loss_jump = 10 ** (config.backtrack_db / 10) if config.backtrack else None
    units = []
    for k in range(n):
        rule = stopping_rule(config, stop_variance(observations[k], ops[k]), lag)
        units.append(_Unit(k, seed_of[k], LossReader(rule, lag, loss_jump)))
    needs_outputs = units[0].reader.rule.needs_outputs
    sync_every = resolve_sync_every(config, device, needs_outputs or refs is not None)

    # -- the batch's tensors: units first along dimension 0 -------------------------------------
    opt = _Adam(params, n, config.lr)
    kept = _Rows(n) if config.backtrack else None
    candidate = _Rows(n) if config.backtrack else None
    jitter_gens = {s: torch.Generator(device=device).manual_seed(s + 1) for s in set(seed_of)}
    state = {"forward": None, "n": None}  # the network for the current number of units
    ema = best = None
    outcomes: list[FitOutcome | Exception | None] = [None] * n
    unread: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []
    clock = [time.perf_counter(), time.process_time()]

    def network():
        if state["n"] != len(units):
            net = _grouped_network(config, cz, c, len(units))
            names_now = [name for name, _ in net.named_parameters()]

            def forward(weights, x):
                return torch.func.functional_call(net, dict(zip(names_now, weights)), (x,))

            state.update(n=len(units),
                         forward=torch.compile(forward) if config.compile else forward)
        return state["forward"]

    def run(x):
        """The units' outputs (m, C, H', W') for inputs x (m, Cz, H, W)."""
        m = len(units)
        x = x.reshape(1, m * cz, *x.shape[-2:])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            out = network()(params, x)
        return out.unflatten(1, (m, c))[0][..., : out_hw[0], : out_hw[1]].float()

    def data_terms(out):
        if shared_op:
            return (ops[0].forward(out) - y).square().flatten(1).mean(1)
        return torch.stack([op.data_term(out[k: k + 1], y[k: k + 1]) for k, op in enumerate(ops)])

    def account():
        """Charge the time since the last call to the units running, in equal shares."""
        now = [time.perf_counter(), time.process_time()]
        for u in units:
            u.seconds += (now[0] - clock[0]) / len(units)
            u.cpu_seconds += (now[1] - clock[1]) / len(units)
        clock[:] = now

    def finish(k: int, it: int, stop_reason: str, final: torch.Tensor | None) -> FitOutcome:
        """Unit at position ``k`` ends: its outcome, chosen as fit.fit chooses."""
        u = units[k]
        rule, picked, best_at = u.reader.rule, u.reader.rule.best_iteration, u.best_at
        if best_at is None or u.reader.pending is not None:
            # No pick yet, or a newer pick whose average is not complete: the latest estimate.
            image = ema[k] if ema is not None else final[k]
            best_at = it
            if picked is None:
                picked = it
        else:
            image = best[k]
        image, refinement, oracle = finish_estimate(
            config, image, y[k], ops[k],
            None if refs is None else refs[k], u.oracle_best)
        return FitOutcome(
            image=image, iterations=it, best_iteration=picked, returned_iteration=best_at,
            stop_reason=stop_reason, backtracks=u.reader.backtracks,
            lr_drops=u.reader.lr_drops, steps=it, seconds=u.seconds,
            cpu_seconds=u.cpu_seconds, seed=u.seed, parameters=per_unit_parameters,
            precision=precision_name(autocast_dtype),
            stopping=rule.describe(), history=u.reader.history, oracle=oracle,
            refinement=refinement,
        )

    def final_outputs():
        """Outputs without jitter, for units ending with no average (``ema`` = 0)."""
        if ema is not None:
            return None
        with torch.no_grad():
            return run(z)

    def leave(done: list[int]):
        """Re-slice every per-unit tensor to the units that go on."""
        nonlocal params, z, y, refs, ema, best, ops
        kept_pos = [k for k in range(len(units)) if k not in set(done)]
        if not kept_pos:
            units.clear()
            return
        m = len(units)
        index = torch.tensor(kept_pos, dtype=torch.long, device=z.device)
        params = [_keep_rows(p.detach(), m, index).requires_grad_() for p in params]
        opt.params = params
        opt.exp_avg = [_keep_rows(t, m, index) for t in opt.exp_avg]
        opt.exp_avg_sq = [_keep_rows(t, m, index) for t in opt.exp_avg_sq]
        opt.step_count, opt.lr = opt.step_count[index], opt.lr[index]
        opt.n = len(kept_pos)
        for rows in (kept, candidate):
            if rows is not None:
                rows.keep(index, kept_pos)
        z, y = z[index], y[index]
        refs = refs[index] if refs is not None else None
        ema = ema[index] if ema is not None else None
        best = best[index] if best is not None else None
        ops = [ops[k] for k in kept_pos]
        units[:] = [units[k] for k in kept_pos]
        for s in set(jitter_gens) - {u.seed for u in units}:
            del jitter_gens[s]  # no unit left draws from it

    it = 0
    stop_all = None
    while units:
        if it >= config.max_iters:
            stop_all = "cap"
        elif cancel is not None and cancel():
            stop_all = "user"
        if stop_all is not None:
            account()
            final = final_outputs()
            for k, u in enumerate(units):
                outcomes[u.index] = finish(k, it, stop_all, final)
                yield UnitDone(u.index, outcomes[u.index])
            break
        it += 1
        z_in = z
        if config.jitter > 0:
            draws = {s: torch.randn((1, cz, *z.shape[-2:]), generator=g, device=device)
                     for s, g in jitter_gens.items()}
            # One seed (a stack's slices share one): the draw broadcasts over the units.
            noise = next(iter(draws.values())) if len(draws) == 1 else \
                torch.cat([draws[u.seed] for u in units])
            z_in = z + config.jitter * noise
        out = run(z_in)
        losses = data_terms(out)
        if candidate is not None and (it % CHECKPOINT_EVERY == 0 or it == 1):
            candidate.save(opt.tensors(), ema)
            for u in units:
                u.candidate_at = it
        opt.zero_grad()
        losses.sum().backward()  # each unit's weights get its own data term's gradient
        opt.step()
        with torch.no_grad():
            raw = out.detach()
            if config.ema > 0:
                decay = ema_decay(config.ema, it)
                ema = raw.clone() if ema is None else ema.mul_(decay).add_(raw, alpha=1 - decay)
        unread.append((it, losses.detach(), raw if needs_outputs else None))
        if it % sync_every and it < config.max_iters:
            continue

        # -- read the data terms back; each unit acts on its own ---------------------------------
        values = torch.stack([u_[1] for u_ in unread]).tolist()
        chunk_raw = [r for _, _, r in unread]
        iters = [i for i, _, _ in unread]
        unread = []
        account()
        estimate = ema if ema is not None else raw
        done: list[int] = []
        verified: list[int] = []
        events: list[UnitStep | UnitDone] = []
        elapsed = time.perf_counter() - t0
        for k, u in enumerate(units):
            chunk = [(i, v[k], r[k] if r is not None else None)
                     for i, v, r in zip(iters, values, chunk_raw)]
            reader = u.reader

            def restore(k=k):
                return kept.put_back(k, opt.tensors(), ema)

            def halve_lr(k=k):
                opt.lr[k] *= 0.5

            try:
                blown, stop, value = reader.read(
                    chunk, restore if kept is not None and u.verified else None, halve_lr)
            except FloatingPointError as exc:
                outcomes[u.index] = exc
                events.append(UnitDone(u.index, None, exc))
                done.append(k)
                continue
            rule = reader.rule
            if blown:
                u.candidate_at = None
                shown = best[k] if u.best_at is not None else estimate[k]
                events.append(UnitStep(it, value, rule.signal, rule.best_iteration, elapsed,
                                       shown, backtracked=True, status=rule.status(it),
                                       unit=u.index))
                continue
            if u.candidate_at is not None:
                verified.append(k)
            with torch.no_grad():
                if reader.pending is not None and it >= reader.pending:
                    if best is None:
                        best = torch.zeros_like(estimate)
                    best[k].copy_(estimate[k])
                    u.best_at, reader.pending = it, None
                score = None
                if refs is not None:
                    score = psnr(ops[k].scaled(estimate[k].clamp(0, 1)), refs[k])
                    if score > u.oracle_best[1]:
                        u.oracle_best = (it, score)
            events.append(UnitStep(it, values[-1][k], rule.signal, rule.best_iteration,
                                   elapsed, estimate[k], psnr=score, status=rule.status(it),
                                   unit=u.index))
            if stop:
                done.append(k)
        if verified:
            losses_at = [values[iters.index(units[k].candidate_at)][k] for k in verified]
            kept.take(candidate, verified, losses_at)
            for k in verified:
                units[k].verified, units[k].candidate_at = True, None
        stopped = [k for k in done if outcomes[units[k].index] is None]
        final = final_outputs() if stopped else None
        for k in stopped:
            u = units[k]
            outcomes[u.index] = finish(k, it, u.reader.rule.stop_reason, final)
        yield from events
        for k in stopped:
            yield UnitDone(units[k].index, outcomes[units[k].index])
        if done:
            leave(done)
    return outcomes


def run_batch(*args, **kwargs) -> list[FitOutcome | Exception]:
    """Blocking form of :func:`fit_batch`."""
    steps = fit_batch(*args, **kwargs)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def unit_memory(out_hw: tuple[int, int], config: FitConfig, channels: int) -> int:
    """Rough bytes one unit adds to a batch: a training step's activations plus its weights,
    gradients, Adam moments and two checkpoints of them."""
    from .devices import estimate_memory

    h, w = (padded_size(s, config.net.depth) for s in out_hw)
    with torch.device("meta"):
        n_params = sum(p.numel() for p in build_generator(
            config.net, config.input_channels, channels).parameters())
    images = 4 * channels * out_hw[0] * out_hw[1] * 4  # output, average, pick, observation
    return estimate_memory(h, w, config.net) - 2**26 + 10 * 4 * n_params + images


def default_batch(device: torch.device, n_units: int, out_hw: tuple[int, int],
                  config: FitConfig, channels: int) -> int:
    """How many units to fit together by default: on CUDA as many as half the free memory
    holds (at most :data:`MAX_DEFAULT_BATCH`); elsewhere one at a time. On the 2-core test CPU
    (one thread) a batch of 8 cold slices of 128² restored at 1.12x the one-at-a-time throughput
    per CPU-second (benchmarks/RESULTS.md; 0.76x before the unit-by-unit layers): a gain too
    small for 8x the memory, and a CPU stack's fast path is the warm start (2.5x), which
    fits one slice after another."""
    if device.type != "cuda" or n_units < 2:
        return 1
    free = torch.cuda.mem_get_info(device)[0]
    fits = int(0.5 * free // unit_memory(out_hw, config, channels))
    return max(1, min(n_units, MAX_DEFAULT_BATCH, fits))
