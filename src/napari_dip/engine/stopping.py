"""Stopping rules that need no ground truth.

A rule sees, at every iteration, the data term and (if it asks for them) the raw network output.
It answers two questions: is this iterate the best so far, and is it time to stop. When it stops
it says why (:data:`STOP_REASONS`).

* ``noise`` (the default): the discrepancy principle. A fit that reproduces the structure but not
  yet the noise leaves a residual as large as the noise; once the (smoothed) data term falls to the
  noise variance estimated from the image (:mod:`.noise`), further progress is fitting noise. That
  iterate is the pick; the run goes on only for ``lag`` iterations and returns the output
  average (EMA) then. The average's memory is short early in a fit (:func:`~.fit.ema_decay`:
  about the last tenth of the iterations before ~900), so it lies after the pick, not on it.
  That is what was tuned: on the 11 real fluorescence pairs of the benchmarks, averaging
  centred on the pick itself lost 0.06-0.26 dB on the mean (1.9 dB on one tuning pair).
* ``wmv`` / ``emv``: ES-WMV and ES-EMV (Wang et al., "Early Stopping for Deep Image Prior", TMLR):
  the variance of recent outputs dips when the fit has captured structure but not yet the noise.
  Here a minimum only counts once the data term has reached the noise level (earlier dips are
  pauses of the coarse fit), and the rule stops once the variance has risen clearly above its
  minimum for a while, instead of waiting a fixed 1000 iterations.
"""

from __future__ import annotations

import torch

from ..choices import STOPPING

#: Why a fit ended: the data term reached the image's noise level; the variance rule found a
#: minimum; the rule ran but found nothing it trusts (the image kept is its best guess); the
#: iteration cap came first; the user stopped it.
STOP_REASONS = ("noise-level", "minimum", "no-minimum", "cap", "user")
#: Stopping rules by name.
RULES = STOPPING.values


def combine_stop_reasons(reasons) -> str:
    """One reason for several fits (channels, slices): the least trustworthy one."""
    reasons = [r for r in reasons if r in STOP_REASONS]
    if not reasons:
        return "user"
    return max(reasons, key=STOP_REASONS.index)


class StoppingRule:
    """Interface, and the "no automatic stop" rule (run to the iteration cap)."""

    name = "none"
    needs_outputs = False  # whether :meth:`update` must be given the raw output

    def __init__(self):
        self.best_iteration: int | None = None
        self.signal: float | None = None  # the statistic shown in progress (lower = better)
        self.stop_reason: str | None = None  # set when :meth:`should_stop` first says True

    def update(self, iteration: int, loss: float, output: torch.Tensor | None = None) -> bool:
        """Feed iteration ``iteration``; return True if it is the new best iterate."""
        return False

    def should_stop(self, iteration: int) -> bool:
        return False

    def status(self, iteration: int) -> str:
        """One line for a progress display: what the rule is waiting for."""
        return "no automatic stop"

    def describe(self) -> dict:
        return {"name": self.name}


class NoiseLevel(StoppingRule):
    """Stop when the smoothed data term reaches ``target`` (the noise variance times ``kappa``).

    ``lag`` more iterations follow the pick before the output average is taken. A fit whose
    data term stalls above the target for ``plateau`` iterations (improving by less than 1 %) ends
    with ``no-minimum``: the noise estimate was too low, or the network cannot fit further.
    No iterate before ``min_iters`` is picked (a blurred observation's data term reaches the
    noise level long before the detail the blur weakens has converged).
    """

    name = "noise"

    def __init__(self, noise_variance: float, kappa: float = 1.0, lag: int = 99,
                 plateau: int = 500, smoothing: float = 0.1, min_iters: int = 0):
        super().__init__()
        self.min_iters = int(min_iters)
        self.noise_variance, self.kappa = float(noise_variance), float(kappa)
        self.target = self.kappa * self.noise_variance
        self.lag, self.plateau, self.smoothing = int(lag), int(plateau), float(smoothing)
        self._smoothed: float | None = None
        self._stall_from: tuple[int, float] | None = None

    def update(self, iteration, loss, output=None):
        s = loss if self._smoothed is None else (
            self._smoothed + self.smoothing * (loss - self._smoothed))
        self._smoothed = self.signal = s
        if self.best_iteration is not None:
            return False
        if s <= self.target:
            if iteration >= self.min_iters:
                self.best_iteration = iteration
                return True
            self._stall_from = None  # at the noise level already: not a stall above it
            return False
        if self._stall_from is None or s < 0.99 * self._stall_from[1]:
            self._stall_from = (iteration, s)
        return False

    def should_stop(self, iteration):
        if self.best_iteration is not None:
            if iteration >= self.best_iteration + self.lag:
                self.stop_reason = "noise-level"
                return True
            return False
        if self._stall_from is not None and iteration - self._stall_from[0] >= self.plateau:
            self.best_iteration = iteration
            self.stop_reason = "no-minimum"
            return True
        return False

    def status(self, iteration):
        if self.best_iteration is not None:
            left = self.best_iteration + self.lag - iteration
            return (f"noise level reached at iteration {self.best_iteration}; "
                    f"averaging {max(left, 0)} more")
        if self._smoothed is None:
            return "starting"
        level = "the noise level" if self.kappa == 1 else f"{self.kappa:g}x the noise level"
        return f"fit error {self._smoothed:.3g}, stops at {level} {self.target:.3g}"

    def describe(self):
        return {"name": self.name, "noise_variance": self.noise_variance, "kappa": self.kappa,
                "target": self.target, "lag": self.lag, "plateau": self.plateau,
                "min_iters": self.min_iters}


class _VarianceRule(StoppingRule):
    """Shared logic of ES-WMV and ES-EMV: a minimum of a variance signal, gated and confirmed."""

    needs_outputs = True

    def __init__(self, gate: float | None, rise: float = 0.1, confirm: int = 100,
                 patience: int = 1000, burn_in: int = 300):
        super().__init__()
        if patience < 1:
            raise ValueError(f"patience must be at least 1 iteration, not {patience}")
        self.gate, self.rise, self.confirm = gate, rise, confirm
        self.patience, self.burn_in = patience, burn_in
        self.best_signal: float | None = None
        self._eligible_from: int | None = None
        self._risen_since: int | None = None
        self._smoothed_loss: float | None = None

    def _eligible(self, iteration: int, loss: float) -> bool:
        s = loss if self._smoothed_loss is None else (
            self._smoothed_loss + 0.1 * (loss - self._smoothed_loss))
        self._smoothed_loss = s
        if self._eligible_from is None:
            reached = s <= self.gate if self.gate is not None else iteration >= self.burn_in
            if not reached:
                return False
            self._eligible_from = iteration
        return True

    def _record(self, iteration: int, value: float) -> bool:
        self.signal = value
        if self.best_signal is None or value < self.best_signal:
            self.best_signal, self.best_iteration = value, iteration
            self._risen_since = None
            return True
        if value > (1 + self.rise) * self.best_signal:
            if self._risen_since is None:
                self._risen_since = iteration
        else:
            self._risen_since = None
        return False

    def should_stop(self, iteration):
        if self.best_iteration is None:
            return False
        risen = self._risen_since is not None and iteration - self._risen_since >= self.confirm
        if risen or iteration - self.best_iteration >= self.patience:
            # A "minimum" on the first eligible iteration is the gate's boundary, not a dip.
            boundary = self.best_iteration <= (self._eligible_from or 0) + 1
            self.stop_reason = "no-minimum" if boundary or not risen else "minimum"
            return True
        return False

    def status(self, iteration):
        if self.best_iteration is None:
            return "waiting for the fit to reach the noise level" if self.gate is not None \
                else "warming up"
        return (f"best so far at iteration {self.best_iteration}; stops once the variance "
                f"stays {self.rise:.0%} above it for {self.confirm} iterations")

    def describe(self):
        return {"name": self.name, "gate": self.gate, "rise": self.rise, "confirm": self.confirm,
                "patience": self.patience, "eligible_from": self._eligible_from}


class WindowedVariance(_VarianceRule):
    """ES-WMV: mean variance of the last ``window`` outputs.

    To keep memory bounded on large images the variance is estimated on a fixed random subset
    of at most ``max_pixels`` values (the full image when it is smaller).
    """

    name = "wmv"

    def __init__(self, window: int = 100, max_pixels: int = 2**16, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if window < 2:
            raise ValueError(f"the variance window must be at least 2, not {window}")
        self.window, self.max_pixels, self._seed = window, max_pixels, seed
        self._buffer: torch.Tensor | None = None
        self._index: torch.Tensor | None = None
        self._count = 0

    def _sample(self, output: torch.Tensor) -> torch.Tensor:
        flat = output.detach().reshape(-1)
        if self._index is None and flat.numel() > self.max_pixels:
            g = torch.Generator().manual_seed(self._seed)
            self._index = torch.randperm(flat.numel(), generator=g)[: self.max_pixels]
            self._index = self._index.to(flat.device)
        return flat if self._index is None else flat[self._index]

    def update(self, iteration, loss, output=None):
        x = self._sample(output).float()
        if self._buffer is None:
            self._buffer = torch.empty((self.window, x.numel()), device=x.device)
        self._buffer[self._count % self.window] = x
        self._count += 1
        if not self._eligible(iteration, loss) or self._count < self.window:
            return False
        return self._record(iteration, float(self._buffer.var(dim=0, unbiased=False).mean()))

    def describe(self):
        return {**super().describe(), "window": self.window}


class ExponentialVariance(_VarianceRule):
    """ES-EMV: exponential moving variance of the outputs; O(1) memory."""

    name = "emv"

    def __init__(self, alpha: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.alpha = alpha
        self._mean: torch.Tensor | None = None
        self._var = 0.0

    def update(self, iteration, loss, output=None):
        x = output.detach().float()
        if self._mean is None:
            self._mean = x.clone()
            return False
        delta = x - self._mean
        self._mean += self.alpha * delta
        self._var = (1 - self.alpha) * (self._var + self.alpha * float((delta**2).mean()))
        if not self._eligible(iteration, loss):
            return False
        return self._record(iteration, self._var)

    def describe(self):
        return {**super().describe(), "alpha": self.alpha}


def make_stopping_rule(name: str, *, noise_variance: float | None, patience: int = 1000,
                       window: int = 100, lag: int = 99, min_iters: int = 0,
                       kappa: float = 1.0) -> StoppingRule:
    """The rule ``name`` (one of :data:`RULES`) for an image of the given noise variance (in the
    fit's normalised units; None when unknown). ``min_iters`` and ``kappa``: the noise rule's
    earliest pick and the fraction of the noise variance it aims at."""
    if name == "noise":
        if noise_variance is None:
            raise ValueError("the 'noise' stopping rule needs the image's noise variance")
        return NoiseLevel(noise_variance, kappa=kappa, lag=lag, min_iters=min_iters)
    if name == "wmv":
        return WindowedVariance(window=window, gate=noise_variance, patience=patience)
    if name == "emv":
        return ExponentialVariance(gate=noise_variance, patience=patience)
    if name == "none":
        return StoppingRule()
    raise ValueError(f"unknown stopping rule {name!r}: use one of {', '.join(RULES)}")
