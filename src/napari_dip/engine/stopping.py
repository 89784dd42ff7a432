"""Stopping rules that need no ground truth.

A rule sees each raw network output and answers two questions: is this iterate the best so far
(so the loop should keep the current estimate), and is it time to stop. ES-WMV and ES-EMV are
from Wang et al., "Early Stopping for Deep Image Prior" (TMLR): the variance of recent outputs
dips when the fit has captured structure but not yet the noise.
"""

from __future__ import annotations

import torch

#: Why a fit ended, best first: the rule found a minimum; the rule ran but found none (the image
#: kept is the rule's best guess); the iteration cap came first; the user stopped it.
STOP_REASONS = ("minimum", "no-minimum", "cap", "user")


def combine_stop_reasons(reasons) -> str:
    """One reason for several fits (channels, slices): the least trustworthy one."""
    reasons = [r for r in reasons if r in STOP_REASONS]
    if not reasons:
        return "user"
    return max(reasons, key=STOP_REASONS.index)


class StoppingRule:
    """Interface, and the "no automatic stop" rule (run to the iteration cap)."""

    name = "none"

    def __init__(self):
        self.best_iteration: int | None = None
        self.best_signal: float | None = None
        self.signal: float | None = None

    def update(self, iteration: int, output: torch.Tensor) -> bool:
        """Feed the raw output of ``iteration``; return True if it is the new best iterate."""
        return False

    def should_stop(self, iteration: int) -> bool:
        return False

    def _record(self, iteration: int, value: float) -> bool:
        self.signal = value
        if self.best_signal is None or value < self.best_signal:
            self.best_signal, self.best_iteration = value, iteration
            return True
        return False

    def describe(self) -> dict:
        return {"name": self.name}


class _PatienceRule(StoppingRule):
    def __init__(self, patience: int):
        super().__init__()
        if patience < 1:
            raise ValueError(f"patience must be at least 1 iteration, not {patience}")
        self.patience = patience

    def should_stop(self, iteration: int) -> bool:
        return self.best_iteration is not None and iteration - self.best_iteration >= self.patience


class WindowedVariance(_PatienceRule):
    """ES-WMV: mean variance of the last ``window`` outputs; stop after ``patience`` iterations
    without a new minimum.

    To keep memory bounded on large images the variance is estimated on a fixed random subset
    of at most ``max_pixels`` values (the full image when it is smaller).
    """

    name = "wmv"

    def __init__(self, window: int = 100, patience: int = 1000, max_pixels: int = 2**16,
                 seed: int = 0, burn_in: int | None = None):
        super().__init__(patience)
        # The variance also dips while the fit pauses between its first coarse phase and the
        # details; no minimum is accepted before ``burn_in`` (3 windows by default).
        self.burn_in = 3 * window if burn_in is None else burn_in
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

    def update(self, iteration, output):
        x = self._sample(output).float()
        if self._buffer is None:
            self._buffer = torch.empty((self.window, x.numel()), device=x.device)
        self._buffer[self._count % self.window] = x
        self._count += 1
        if self._count < self.window or iteration < self.burn_in:
            return False
        value = float(self._buffer.var(dim=0, unbiased=False).mean())
        return self._record(iteration, value)

    def describe(self):
        return {"name": self.name, "window": self.window, "patience": self.patience,
                "burn_in": self.burn_in}


class ExponentialVariance(_PatienceRule):
    """ES-EMV: exponential moving variance of the outputs; O(1) memory."""

    name = "emv"

    def __init__(self, alpha: float = 0.1, patience: int = 1000, warmup: int = 100):
        super().__init__(patience)
        self.alpha, self.warmup = alpha, warmup
        self._mean: torch.Tensor | None = None
        self._var = 0.0

    def update(self, iteration, output):
        x = output.detach().float()
        if self._mean is None:
            self._mean = x.clone()
            return False
        delta = x - self._mean
        self._mean += self.alpha * delta
        self._var = (1 - self.alpha) * (self._var + self.alpha * float((delta**2).mean()))
        if iteration < self.warmup:
            return False
        return self._record(iteration, self._var)

    def describe(self):
        return {"name": self.name, "alpha": self.alpha, "patience": self.patience}


def make_stopping_rule(name: str, patience: int, window: int = 100) -> StoppingRule:
    if name == "wmv":
        return WindowedVariance(window=window, patience=patience)
    if name == "emv":
        return ExponentialVariance(patience=patience, warmup=3 * window)
    if name == "none":
        return StoppingRule()
    raise ValueError(f"unknown stopping rule {name!r}: use 'wmv', 'emv' or 'none'")
