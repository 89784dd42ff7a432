"""A small live plot of the fit: the loss, the stopping rule's signal and the picked iterate.

matplotlib (its Qt canvas) is imported when the first run starts, not with the widget.
"""

from __future__ import annotations

from qtpy.QtWidgets import QVBoxLayout, QWidget

#: Line labels (also how tests find the lines).
LOSS, SIGNAL, KEPT, TARGET = "loss", "stopping signal", "picked iterate", "stop target"


class FitPlot:
    """Loss (log scale) and the stopping signal of the current fit; a vertical line marks the
    iterate the stopping rule picked. One fit at a time: a new slice or channel starts afresh."""

    def __init__(self, theme: str | None = None):
        self.native = QWidget()
        self.native.setLayout(QVBoxLayout())
        self.native.layout().setContentsMargins(0, 0, 0, 0)
        self.native.setVisible(False)
        self.figure = None  # matplotlib Figure, made at the first run
        self._theme = theme
        self._canvas = self._ax = self._ax2 = None
        self._lines: dict = {}
        self._x: list[int] = []
        self._loss: list[float] = []
        self._signal: list[float] = []
        self._same_axis = True

    # ---- set-up ----------------------------------------------------------------------------

    def _colours(self) -> tuple[str, str, str]:
        """Background, text and accent colours of the viewer's theme."""
        try:
            from napari.utils.theme import get_theme

            theme = get_theme(self._theme or "dark")
            return theme.background.as_hex(), theme.text.as_hex(), theme.current.as_hex()
        except Exception:  # noqa: BLE001 - any theme trouble: plain colours
            return "#262930", "#f0f1f2", "#7a7f8c"

    def _make(self):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import NullFormatter

        bg, fg, _ = self._colours()
        self.figure = Figure(figsize=(3.2, 1.9), dpi=90, facecolor=bg, layout="constrained")
        self._canvas = FigureCanvasQTAgg(self.figure)
        self._canvas.setMinimumHeight(150)
        self.native.layout().addWidget(self._canvas)
        self._ax = self.figure.add_subplot()
        self._ax2 = self._ax.twinx()
        for ax in (self._ax, self._ax2):
            ax.set_facecolor(bg)
            ax.tick_params(colors=fg, labelsize=7)
            for spine in ax.spines.values():
                spine.set_color(fg)
        self._ax.set_xlabel("iteration", color=fg, fontsize=7)
        for ax in (self._ax, self._ax2):
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())  # decades only: a readable axis
        self._lines[LOSS], = self._ax.plot([], [], color="#4aa3ff", lw=0.8, label=LOSS)
        self._lines[SIGNAL], = self._ax.plot([], [], color="#ffb347", lw=1.2, label=SIGNAL)
        self._lines[KEPT] = self._ax.axvline(0, color="#7ee07e", lw=1, ls="--", label=KEPT)
        self._lines[KEPT].set_visible(False)
        self._lines[TARGET] = self._ax.axhline(1, color=fg, lw=0.6, ls=":", label=TARGET)
        self._lines[TARGET].set_visible(False)
        self._text = self._ax.set_title("", color=fg, fontsize=8, loc="left")
        self._legend_colours = (bg, fg)

    # ---- data ------------------------------------------------------------------------------

    def start(self, title: str, rule: str | None):
        """A new fit: clears the curves. ``rule``: the stopping rule ('noise' draws its
        signal, the smoothed loss, on the loss axis; the variance rules on their own)."""
        if self.figure is None:
            self._make()
        self.native.setVisible(True)
        self._x, self._loss, self._signal = [], [], []
        self._same_axis = rule in (None, "noise", "none")
        target = self._ax if self._same_axis else self._ax2
        if self._lines[SIGNAL].axes is not target:
            self._lines[SIGNAL].remove()
            self._lines[SIGNAL], = target.plot([], [], color="#ffb347", lw=1.2, label=SIGNAL)
        self._ax2.set_visible(not self._same_axis)
        self._lines[KEPT].set_visible(False)
        self._lines[TARGET].set_visible(False)
        self._text.set_text(title)
        self._redraw()

    def add(self, iteration: int, loss: float, signal: float | None, kept: int | None):
        """One progress event (events are throttled, so the curve is sampled while running)."""
        if self.figure is None:
            return
        self._x.append(iteration)
        self._loss.append(loss)
        self._signal.append(float("nan") if signal is None else signal)
        self._mark(kept)
        self._redraw()

    def show_history(self, history, kept: int | None, title: str | None = None,
                     target: float | None = None):
        """The whole fit, every iteration, once it ended: (iteration, loss, signal) tuples."""
        if self.figure is None:
            self._make()
            self.native.setVisible(True)
        self._x = [h[0] for h in history]
        self._loss = [h[1] for h in history]
        self._signal = [float("nan") if h[2] is None else h[2] for h in history]
        self._mark(kept)
        if target is not None and target > 0:
            self._lines[TARGET].set_ydata([target, target])
            self._lines[TARGET].set_visible(True)
        if title is not None:
            self._text.set_text(title)
        self._redraw()

    def _mark(self, kept: int | None):
        line = self._lines[KEPT]
        line.set_visible(kept is not None)
        if kept is not None:
            line.set_xdata([kept, kept])

    def _legend(self):
        bg, fg = self._legend_colours
        shown = [line for line in self._lines.values() if line.get_visible()]
        for ax in (self._ax, self._ax2):
            if ax.get_legend() is not None:
                ax.get_legend().remove()
        legend = self._ax.legend(handles=shown, loc="upper right", fontsize=6, frameon=False,
                                 labelcolor=fg, handlelength=1.5)
        legend.set_zorder(10)

    def _redraw(self):
        self._lines[LOSS].set_data(self._x, self._loss)
        self._lines[SIGNAL].set_data(self._x, self._signal)
        has_signal = any(v == v for v in self._signal)  # not all NaN
        self._lines[SIGNAL].set_visible(has_signal)
        for ax in (self._ax, self._ax2):
            ax.relim(visible_only=True)
            ax.autoscale_view()
        if self._x:
            self._ax.set_xlim(0, max(self._x[-1], 10) * 1.02)
        self._legend()
        self._canvas.draw_idle()
