"""Shared fixtures: one torch thread, the committed test crops (tests/data) and noise."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP spin-waits make 2 threads slower."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    mp.setenv("NAPARI_DIP_THREADS", "1")  # what the engine chooses for its runs
    yield
    mp.undo()
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of committed test crops (sources in tests/data/SOURCES.md)."""
    return DATA


def load_crop(name: str) -> np.ndarray:
    path = DATA / name
    if path.suffix == ".tif":
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    return np.asarray(Image.open(path))


@pytest.fixture(scope="session")
def load():
    """``load(name)``: a crop from tests/data (see tests/data/SOURCES.md); session-scoped, so
    module-scoped fixtures can use it too."""
    return load_crop


def _add_gaussian_noise(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """sigma in 8-bit units, clipped as in the paper's setup."""
    rng = np.random.default_rng(seed)
    noisy = img / 255.0 + rng.normal(0, sigma / 255.0, img.shape)
    return np.round(np.clip(noisy, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def gaussian_noise():
    """``gaussian_noise(img, sigma, seed=0)``: uint8 image plus N(0, sigma) noise, clipped."""
    return _add_gaussian_noise


# ---- the napari widget (GUI tests; napari and Qt are imported only by the fixtures) ---------

#: How long a GUI test waits for a run, in ms; generous because other jobs share the CPU.
GUI_TIMEOUT = 120_000


class WidgetDriver:
    """Drives a :class:`napari_dip._widget.DIPWidget` in a test: settings, runs, outcomes."""

    def __init__(self, qtbot):
        self.qtbot = qtbot

    #: Small, fast and reproducible: the CPU-sized network, one device, a fixed seed.
    DEFAULTS = dict(preset="light", device="cpu", seed=0, max_iters=20, preview_every=5)

    def configure(self, widget, layer, **values):
        widget.reset_choices()
        widget.image.value = layer
        for key, value in {**self.DEFAULTS, **values}.items():
            getattr(widget, key).value = value

    def wait_done(self, widget):
        self.qtbot.waitUntil(lambda: not widget.running, timeout=GUI_TIMEOUT)

    def watch_results(self, viewer):
        """Counts result-layer updates from now on (a result layer added counts once, each
        later change of its data once); returns the list of the layers' data at each update."""
        seen = []

        def on_data(layer):
            seen.append(np.array(layer.data, copy=True))

        def on_inserted(event):
            layer = event.value
            if " [dip]" in layer.name:
                on_data(layer)
                layer.events.data.connect(lambda e: on_data(layer))

        viewer.layers.events.inserted.connect(on_inserted)
        return seen

    def wait_for_updates(self, seen, n=2):
        """Wait until the watched result layers were updated ``n`` times (2: at least one
        preview has been shown)."""
        self.qtbot.waitUntil(lambda: len(seen) >= n, timeout=GUI_TIMEOUT)

    @staticmethod
    def shown(widget, control) -> bool:
        """Whether a control of the dock shows (once the dock is on screen): a hidden viewer
        reports every widget as invisible, so this asks its section of the dock instead."""
        for section in (widget.controls, widget.advanced_controls, widget):
            if section.native.isAncestorOf(control.native):
                return control.native.isVisibleTo(section.native)
        raise AssertionError(f"{control!r} is not part of the dock")

    @staticmethod
    def dip_layers(viewer):
        return [lyr for lyr in viewer.layers if "napari_dip" in lyr.metadata
                or " [dip]" in lyr.name]

    @staticmethod
    def records_since(start, severity=None):
        from napari.utils.notifications import notification_manager

        recs = notification_manager.records[start:]
        return [r for r in recs if severity is None or r.severity == severity]

    @staticmethod
    def n_records():
        from napari.utils.notifications import notification_manager

        return len(notification_manager.records)


@pytest.fixture
def gui(qtbot):
    """A :class:`WidgetDriver`: configure the widget, wait for runs, read notifications."""
    return WidgetDriver(qtbot)


@pytest.fixture
def viewer_widget(make_napari_viewer, gui):
    """A hidden viewer with the napari-dip dock widget, opened as napari opens it (through the
    manifest, so the widget sees napari's proxies of the viewer and its layers); no run is
    left behind."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-dip", "Deep Image Prior")
    yield viewer, widget
    if widget.running:  # never leave a worker behind a closed viewer
        widget.stop()
        gui.wait_done(widget)


@pytest.fixture
def camera():
    """A small real photograph (skimage's bundled camera), 48 x 48 uint8."""
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.camera()[100:484:8, 120:504:8])


def pytest_sessionfinish(session, exitstatus):
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave without the interpreter's teardown once the run's outcome is reported: tearing
    down Qt, the X connection and worker threads after the last test has crashed the process
    (a segfault after every test had passed, in one CI run of three), which would turn a
    passing run into a failed one."""
    status = config.stash.get(_EXIT_STATUS, None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


_EXIT_STATUS = pytest.StashKey[int]()
