"""The DIP fit loop on one normalised plane: z + jitter, Adam, EMA, backtracking, stopping.

It knows nothing of files, layers, dtypes or threads: it takes tensors in [0, 1], yields
:class:`FitStep` events and returns a :class:`FitOutcome`. Cancellation is checked between any two
steps.

The host reads the data term back only every ``sync_every`` iterations (1 on the CPU, where it is
free; more on a GPU, where each read stalls the queue). Everything that needs the values —
backtracking, the stopping rule, progress — runs at those points, over the iterations since the
last one. A checkpoint is only ever kept once the data term of its weights has been read and found
sound, so a restore never lands on the state that blew up.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .generators import build_generator, padded_size
from .noise import estimate_noise
from .operators import Operator, psnr
from .presets import FitConfig
from .stopping import make_stopping_rule

#: Consecutive backtracks after which the step is taken anyway, at a lower learning rate.
MAX_CONSECUTIVE_BACKTRACKS = 3
#: Iterations between two checkpoints (a copy costs a few ms; the reference code keeps one per
#: 50 steps in its restoration notebook). A multiple of every automatic ``sync_every``.
CHECKPOINT_EVERY = 10


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
    precision: str = "float32"
    cuda_graphs: bool = False  # whether the steps were replayed as CUDA graphs
    stopping: dict = field(default_factory=dict)  # the rule and what it measured
    history: list[tuple[int, float, float | None]] = field(default_factory=list)
    oracle: dict | None = None
    state: dict | None = None  # the network's final weights, when asked for (warm starts)
    refinement: dict | None = None  # the second stage's record (config.refine), if any


def _make_input(config: FitConfig, hw: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    h, w = hw
    if config.input_kind == "meshgrid":
        ys, xs = torch.meshgrid(
            torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij"
        )
        return torch.stack([xs, ys])[None]
    return torch.rand((1, config.input_channels, h, w), generator=gen) * config.input_scale


def set_output_level(net: torch.nn.Module, level) -> None:
    """Start ``net``'s output near ``level`` (one value, or one per output channel, in [0, 1]):
    the bias of its last convolution, through the sigmoid when it ends with one."""
    head = list(net.head)
    conv = next(m for m in reversed(head) if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    level = torch.as_tensor(level, dtype=torch.float64).flatten()
    if level.numel() not in (1, conv.out_channels):
        raise ValueError(f"the output level needs 1 or {conv.out_channels} values, "
                         f"not {level.numel()}")
    if isinstance(head[-1], torch.nn.Sigmoid):
        level = torch.logit(level.clamp(1e-4, 1 - 1e-4))
    with torch.no_grad():
        conv.bias.copy_(level.expand(conv.out_channels).to(conv.bias.dtype))


def start_level(observed: torch.Tensor, operator: Operator):
    """Where the network's output starts for a forward model with headroom (a gain above 1):
    each channel's mean level of ``observed`` ((1, C, ...) intensities in [0, 1], not
    stabilised), in the network's units; None (the init's own start) without headroom. From
    mid-range, the first steps of such a fit would saturate the output's sigmoid."""
    if not operator.has_headroom:
        return None
    level = observed.flatten(2).mean(-1)[0]  # (C,)
    return operator.unscaled(level.reshape(level.shape + (1,) * (observed.ndim - 2))).flatten()


def initial_network(config: FitConfig, channels: int, out_hw: tuple[int, int], seed: int,
                    net_input: torch.Tensor | None = None, output_level=None,
                    ) -> tuple[torch.Tensor, torch.nn.Module]:
    """The input z (1, Cz, H, W), padded to the network's size, and the freshly initialised
    generator that a fit with ``seed`` starts from (on the CPU); ``output_level`` (per channel,
    in [0, 1]) sets where its output starts (:func:`set_output_level`), None leaves the init."""
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
        pad = (0, net_hw[1] - out_hw[1], 0, net_hw[0] - out_hw[0]) + (0, 0) * (net_input.ndim - 4)
        z = F.pad(net_input.float(), pad, mode="replicate")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_generator(config.net, z.shape[1], channels)
    if output_level is not None:
        set_output_level(net, output_level)
    return z, net


class _Checkpoint:
    """Weights, BatchNorm buffers, optimiser state and the output average, restorable in place,
    with the data term the weights had (what a step after a restore is judged against)."""

    def __init__(self, net: torch.nn.Module, opt: torch.optim.Optimizer):
        self.net, self.opt = net, opt
        self.saved = False
        self.loss: float | None = None
        self.ema: torch.Tensor | None = None

    def _tensors(self) -> list[torch.Tensor]:
        ts = [*self.net.parameters(), *self.net.buffers()]
        for p in self.net.parameters():
            ts += [v for _, v in sorted(self.opt.state.get(p, {}).items()) if torch.is_tensor(v)]
        return ts

    def save(self, loss: float | None = None, ema: torch.Tensor | None = None):
        live = self._tensors()
        if not self.saved or len(live) != len(self._copy):
            self._copy = [t.detach().clone() for t in live]
        else:  # one call for every tensor: a few kernel launches on a GPU, not hundreds
            torch._foreach_copy_(self._copy, [t.detach() for t in live])
        if ema is None:
            self.ema = None
        elif self.ema is None or self.ema.shape != ema.shape:
            self.ema = ema.clone()
        else:
            self.ema.copy_(ema)
        self.saved, self.loss = True, loss

    def restore(self, ema: torch.Tensor | None = None) -> float | None:
        """Put the saved state back (and the saved average into ``ema``); returns the data
        term it had."""
        live = self._tensors()
        n_model = sum(1 for _ in self.net.parameters()) + sum(1 for _ in self.net.buffers())
        if len(live) != len(self._copy):
            # The checkpoint predates the optimiser's first step: forget its state entirely.
            self.opt.state.clear()
            live = live[:n_model]
        with torch.no_grad():
            torch._foreach_copy_(live, self._copy[:len(live)])
            if ema is not None and self.ema is not None:
                ema.copy_(self.ema)
        return self.loss


def observation_noise_variance(observation: torch.Tensor, operator: Operator) -> float:
    """Mean noise variance of the observation (normalised units), over its observed pixels."""
    known = getattr(operator, "known", None)
    if known is not None:
        known = known[0, 0].cpu().numpy()
    return estimate_noise(observation[0].cpu().numpy(), known).mean_variance


def stop_variance(observation: torch.Tensor, operator: Operator,
                  noise_variance: float | None = None) -> float:
    """The data term's level for the stopping rule: the observation's noise variance (as given,
    or measured), times the operator's ``stop_factor`` (a deconvolution stops a little above
    the noise level: Morozov)."""
    if noise_variance is None:
        noise_variance = observation_noise_variance(observation, operator)
    return operator.stop_factor * noise_variance


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` ('auto', 'float32', 'bfloat16') on ``device``;
    None means plain float32. 'auto' is bfloat16 on CUDA devices that support it: CPUs without
    bf16 units run it many times slower."""
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    raise ValueError(f"precision must be 'auto', 'float32' or 'bfloat16', not {precision!r}")


def ema_lag(ema: float) -> int:
    """Iterations from a pick to the average that is kept (ema / (1 - ema)): the image kept for
    a pick at iteration t is the average at t + lag. That is where a flat ``ema`` would centre
    the average on t; with the short early memory of :func:`ema_decay` its centre is later
    (about 0.9 * (t + lag) before iteration ~900; :mod:`.stopping` says why it stays so)."""
    return round(ema / (1 - ema)) if ema > 0 else 0


def stopping_rule(config: FitConfig, noise_variance: float | None, lag: int):
    """The stopping rule ``config`` asks for, for a data term of this noise level."""
    return make_stopping_rule(config.stopping, noise_variance=noise_variance,
                              patience=config.patience, window=config.window, lag=lag,
                              min_iters=config.min_iters)


def resolve_sync_every(config: FitConfig, device: torch.device, every_output: bool) -> int:
    """Iterations between two read-backs of the data term: ``config.sync_every``, or 1 on the
    CPU and :data:`CHECKPOINT_EVERY` elsewhere; 1 when ``every_output`` must be looked at."""
    sync_every = config.sync_every or (CHECKPOINT_EVERY if device.type == "cuda" else 1)
    if every_output:
        sync_every = 1  # the stopping rule or the reference looks at every iteration's output
    if CHECKPOINT_EVERY % sync_every:
        raise ValueError(f"sync_every must divide {CHECKPOINT_EVERY}, not {sync_every}")
    return sync_every


def autocast_context(device: torch.device, dtype: torch.dtype | None, cache: bool = True):
    """Autocast to ``dtype`` on ``device`` (:func:`resolve_precision`); nothing for None.
    ``cache`` False: no cache of cast weights (what a captured CUDA graph needs)."""
    return (torch.autocast(device.type, dtype=dtype, cache_enabled=cache) if dtype is not None
            else contextlib.nullcontext())


def make_optimizer(net: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam; on CUDA its fused form (a few kernels per step instead of several per tensor)."""
    return torch.optim.Adam(net.parameters(), lr=lr, fused=device.type == "cuda" or None)


def use_cuda_graphs(config: FitConfig, device: torch.device) -> bool:
    """Whether the network's steps are replayed as CUDA graphs (``config.cuda_graphs``, None: on
    CUDA unless the network is compiled)."""
    if config.compile or device.type != "cuda":
        return False
    return config.cuda_graphs is not False


def graph_network(net: torch.nn.Module, z: torch.Tensor, autocast) -> Callable | None:
    """Capture ``net``'s forward and backward on inputs like ``z`` as CUDA graphs, in place
    (:func:`torch.cuda.make_graphed_callables`): the network's part of a step is then two graph
    launches instead of hundreds of kernel launches from Python, which is what bounded a DIP
    step on a fast GPU (benchmarks/RESULTS.md). Returns the graphed forward, or None where
    capture fails (the network then runs eagerly). ``net`` keeps its own forward: a graphed one
    stored on it would form a reference cycle that holds the graphs' memory until the garbage
    collector runs, which a stack of fits on one GPU would pile up."""
    import warnings

    # Seen once per process on an H200 (torch 2.11) at the first step after capture: the
    # weights' gradient nodes were made on the capture's stream. A harmless one-off sync.
    warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")
    try:
        with autocast:
            # A copy: the graph's input is overwritten at every step, and z must stay fixed.
            torch.cuda.make_graphed_callables(net, (z.clone(memory_format=torch.preserve_format),))
    except (RuntimeError, TypeError, AssertionError) as exc:  # pragma: no cover - CUDA only
        warnings.warn(f"CUDA graph capture failed ({exc}); running the network eagerly",
                      RuntimeWarning, stacklevel=2)
        return None
    forward = net.forward
    del net.forward
    return forward


def precision_name(dtype: torch.dtype | None) -> str:
    """How an outcome names the precision ``dtype`` (:func:`resolve_precision`)."""
    return "float32" if dtype is None else str(dtype).split(".")[-1]


def ema_decay(ema: float, iteration: int) -> float:
    """The output average's decay at ``iteration``: short memory at first, so the average is not
    dragged by the first, random outputs (with a flat 0.99 they still weigh 25 % at iteration
    140)."""
    return min(ema, (1 + iteration) / (10 + iteration))


class LossReader:
    """What a fit does with the data terms it reads back: backtracking decisions, the stopping
    rule, the pick (its average due ``lag`` iterations later, :func:`ema_lag`) and the
    history. One per fitted network, so batched fits (:mod:`.batched`) judge each alike."""

    def __init__(self, rule, lag: int, loss_jump: float | None):
        self.rule, self.lag, self.loss_jump = rule, lag, loss_jump  # loss_jump None: no backtracking
        self.reference_loss: float | None = None  # the data term a new step is judged against
        self.consecutive = self.backtracks = self.lr_drops = 0
        self.pending: int | None = None  # when the average for the latest pick is due
        self.history: list[tuple[int, float, float | None]] = []

    def read(self, chunk, restore: Callable[[], float | None] | None,
             halve_lr: Callable[[], None]) -> tuple[bool, bool, float]:
        """Act on ``chunk`` [(iteration, data term, raw output)], oldest first. ``restore`` puts
        the last verified checkpoint back and returns its data term (None while there is none
        to go back to); ``halve_lr`` lowers the learning rate. Returns (blown: a step blew the
        fit up and the checkpoint was restored, stop: the rule says stop, the last value
        read)."""
        value = float("nan")
        for i, value, raw in chunk:
            if not np.isfinite(value):
                raise FloatingPointError(
                    f"the loss became {value} at iteration {i}; try a lower learning rate"
                )
            if self.loss_jump is not None and self.reference_loss is not None and (
                value > self.reference_loss * self.loss_jump
            ):
                self.consecutive += 1
                if self.consecutive <= MAX_CONSECUTIVE_BACKTRACKS and restore is not None:
                    # A step blew the fit up: go back to the last sound weights (and Adam
                    # moments, and the average), and judge against their own data term.
                    self.reference_loss = restore()
                    self.backtracks += 1
                    self.history.append((i, value, self.rule.signal))
                    return True, False, value
                # Restoring keeps landing here: carry on from this state, more carefully.
                halve_lr()
                self.lr_drops += 1
            self.consecutive = 0
            self.reference_loss = value
            self.history.append((i, value, self.rule.signal))
            if self.rule.update(i, value, raw if self.rule.needs_outputs else None):
                self.pending = i + self.lag
            if self.rule.should_stop(i):
                return False, True, value
        return False, False, value


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
    initial_state: dict | None = None,
    return_state: bool = False,
    noise_variance: float | None = None,
    output_level=None,
) -> Iterator[FitStep]:
    """Fit a generator to ``observation`` (1, C, h, w); a generator of steps.

    ``net_input`` (1, Cz, H, W) at the restored image's size replaces the random input z
    (e.g. the flash image of a flash/no-flash pair); it is padded to the network's size.
    ``initial_state`` starts from given weights (a warm start) instead of a random init;
    ``return_state`` puts the final weights in the outcome. ``noise_variance`` is the data
    term's noise level when it is known (a volume, whose planes the 2-D estimator cannot see
    together); None estimates it from the observation. The stopping rule aims at it times
    the operator's stop factor (:func:`stop_variance`). ``output_level`` (per channel, in
    [0, 1]) is where the network's output starts (:func:`set_output_level`); ignored with
    ``initial_state``.
    Tensors may be volumes, (1, C, Z, h, w), given a 3-D generator and a ``net_input``.

    The outcome is the generator's return value (``StopIteration.value``); ``run_fit`` is the
    blocking form.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    c = observation.shape[1]
    out_hw = operator.output_size(tuple(observation.shape[-2:]))

    z, net = initial_network(config, c, out_hw, seed, net_input, output_level)
    if initial_state is not None:
        net.load_state_dict(initial_state)
    net = net.to(device)
    z = z.to(device)
    if config.channels_last if config.channels_last is not None else device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
        z = z.contiguous(memory_format=torch.channels_last)
    autocast_dtype = resolve_precision(config.precision, device)
    net.train()  # a graph replays the mode it was captured in
    capture = use_cuda_graphs(config, device)
    autocast = autocast_context(device, autocast_dtype, cache=not capture)
    forward = graph_network(net, z, autocast) if capture else None
    graphed = forward is not None
    model = forward or (torch.compile(net) if config.compile else net)
    jitter_gen = torch.Generator(device=device).manual_seed(seed + 1)
    opt = make_optimizer(net, config.lr, device)
    y = observation.to(device)
    op = operator.to(device)
    ref = reference.to(device) if reference is not None else None
    lag = ema_lag(config.ema)
    rule = stopping_rule(config, stop_variance(observation, operator, noise_variance), lag)
    sync_every = resolve_sync_every(config, device, rule.needs_outputs or ref is not None)
    # ``kept`` holds verified weights; ``candidate`` the weights of the latest checkpoint
    # iteration, saved before its step and kept once its data term has been read and found sound.
    kept = _Checkpoint(net, opt) if config.backtrack else None
    candidate = _Checkpoint(net, opt) if config.backtrack else None
    candidate_at = None
    reader = LossReader(rule, lag, 10 ** (config.backtrack_db / 10) if config.backtrack else None)

    ema = best = best_at = None  # best_at: iteration of the kept image
    steps = 0
    unread: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (iteration, loss, raw output)
    oracle_best = (None, -np.inf)
    stop_reason = "cap"
    it = 0

    def restore():  # the checkpoint kept last (``kept`` and ``ema`` are rebound as the fit goes)
        return kept.restore(ema)

    def halve_lr():
        for group in opt.param_groups:
            group["lr"] *= 0.5

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
        with autocast:
            out = model(z_in)
        # A graph's output is overwritten by its next replay: take a copy (one, also from bf16).
        out = out[..., : out_hw[0], : out_hw[1]].to(torch.float32, copy=graphed)
        loss = op.data_term(out, y)
        if candidate is not None and (it % CHECKPOINT_EVERY == 0 or it == 1):
            candidate.save(ema=ema)
            candidate_at = it
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        with torch.no_grad():
            raw = out[0].detach()
            if config.ema > 0:
                decay = ema_decay(config.ema, it)
                ema = raw.clone() if ema is None else ema.mul_(decay).add_(raw, alpha=1 - decay)
        unread.append((it, loss.detach(), raw))
        if it % sync_every and it < config.max_iters:
            continue

        # -- read the data terms back and act on them --------------------------------------
        values = torch.stack([u[1] for u in unread]).tolist()
        chunk, unread = [(i, v, r) for (i, _, r), v in zip(unread, values)], []
        blown, stop, value = reader.read(
            chunk, restore if kept is not None and kept.saved else None, halve_lr)
        if blown:
            candidate_at = None
            shown = best if best is not None else ema if ema is not None else raw
            yield FitStep(it, value, rule.signal, rule.best_iteration, time.perf_counter() - t0,
                          shown, backtracked=True, status=rule.status(it))
            continue
        if candidate_at is not None:
            candidate.loss = next(v for i, v, _ in chunk if i == candidate_at)
            kept, candidate, candidate_at = candidate, kept, None
        estimate = ema if ema is not None else raw
        with torch.no_grad():
            if reader.pending is not None and it >= reader.pending:
                best = estimate.clone() if best is None else best.copy_(estimate)
                best_at, reader.pending = it, None
            score = None
            if ref is not None:
                score = psnr(op.scaled(estimate.clamp(0, 1)), ref)
                if score > oracle_best[1]:
                    oracle_best = (it, score)
        yield FitStep(it, values[-1], rule.signal, rule.best_iteration,
                      time.perf_counter() - t0, estimate, psnr=score, status=rule.status(it))
        if stop:
            stop_reason = rule.stop_reason
            break

    picked = rule.best_iteration
    if best is None or reader.pending is not None:
        # No pick yet, or a newer pick whose average is not complete: the latest estimate.
        if ema is not None:
            best = ema
        else:
            with torch.no_grad(), autocast:
                best = model(z)[..., : out_hw[0], : out_hw[1]][0].float()
        best_at = it
        if picked is None:
            picked = it
    image, refinement, oracle = finish_estimate(config, best, y[0], op, ref, oracle_best)
    return FitOutcome(
        image=image,
        iterations=it,
        best_iteration=picked,
        returned_iteration=best_at,
        stop_reason=stop_reason,
        backtracks=reader.backtracks,
        lr_drops=reader.lr_drops,
        steps=steps,
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - cpu0,
        seed=seed,
        parameters=sum(p.numel() for p in net.parameters()),
        precision=precision_name(autocast_dtype),
        cuda_graphs=graphed,
        stopping=rule.describe(),
        history=reader.history,
        oracle=oracle,
        state={k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        if return_state else None,
        refinement=refinement,
    )


def finish_estimate(config: FitConfig, estimate: torch.Tensor, observation: torch.Tensor,
                    operator: Operator, reference: torch.Tensor | None, oracle_best: tuple):
    """What a fit returns from its kept ``estimate`` (C, ...): clamped to the network's range,
    then ``config.refine``'s second stage against the ``observation`` (C, ...) it was fitted
    to. Returns (image on the CPU, the stage's record or None, the oracle's figures or None)."""
    image, refinement = estimate.clamp(0, 1), None
    if config.refine != "none":
        from .wiener import second_stage

        image, refinement = second_stage(image, observation, operator, config.refine)
    oracle = None
    if reference is not None:
        oracle = {"best_iteration": oracle_best[0], "best_psnr": oracle_best[1],
                  "returned_psnr": psnr(operator.scaled(image), reference)}
    return image.cpu(), refinement, oracle


def run_fit(*args, **kwargs) -> FitOutcome:
    """Blocking form of :func:`fit`."""
    steps = fit(*args, **kwargs)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
