"""The widget on a lazy (dask-backed) stack: read one slice at a time, written into a zarr store
on disk. Run under Xvfb:

    xvfb-run -a .venv/bin/python -m pytest tests/test_widget_lazy.py

Every run is tiny (3 slices of 40 x 40, a few iterations, 'light' net, CPU). No assertion
depends on timing.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

import numpy as np
import pytest

from napari_dip._widget import ALL, CURRENT, SUFFIX

pytestmark = pytest.mark.gui

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")


class CountedStack:
    """An array-like (what ``dask.array.from_array`` reads, a chunk at a time) that records
    which slices are read, and how many slices each dask computation reads (by the thread that
    asked for it)."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.reads: list[int] = []  # the slice of each read, in order
        self.per_compute: list[int] = []  # slices read by each computation
        self.on_read = None  # called with each slice read (in the reading thread)
        self._local = threading.local()

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        first = key[0]
        index = range(self.shape[0])[first] if isinstance(first, slice) else [int(first)]
        for i in index:
            self.reads.append(i)
            if getattr(self._local, "reads", None) is not None:
                self._local.reads.append(i)
            if self.on_read is not None:
                self.on_read(i)
        return self.data[key]

    def scheduler(self, dsk, keys, **kwargs):
        """A dask scheduler (the synchronous one) that counts the slices each compute reads."""
        import dask

        self._local.reads = []
        try:
            return dask.get(dsk, keys, **kwargs)
        finally:
            self.per_compute.append(len(self._local.reads))
            self._local.reads = None

    def reset(self):
        self.reads.clear()
        self.per_compute.clear()


@pytest.fixture(autouse=True)
def stores_in_tmp_path(monkeypatch, tmp_path):
    """The runs' temporary store folders go under pytest's tmp_path (cleaned by pytest)."""
    import tempfile

    from napari_dip.gui import lazy

    monkeypatch.setattr(lazy, "temporary_folder",
                        lambda: tempfile.mkdtemp(prefix=lazy.TEMP_PREFIX, dir=tmp_path))


@pytest.fixture
def lazy_stack(load):
    """A real-looking noisy (Z, Y, X) float32 stack (the committed nuclei crop plus Gaussian
    noise), as a dask array of one slice per chunk that counts its reads."""
    import dask

    nuclei = load("nuclei3d_3x40x40_uint16.tif").astype(np.float32)
    rng = np.random.default_rng(3)
    noisy = (nuclei + rng.normal(0, 0.1 * nuclei.std(), nuclei.shape)).astype(np.float32)
    counted = CountedStack(noisy)
    with dask.config.set(scheduler=counted.scheduler):
        yield noisy, da.from_array(counted, chunks=(1, *noisy.shape[1:])), counted


def _add(viewer, data, noisy, **kw):
    # contrast limits given: napari would otherwise compute them from the whole array
    return viewer.add_image(data, name="nuclei", scale=(2.0, 0.5, 0.5),
                            translate=(1.0, 0.0, 3.0), axis_labels=("z", "y", "x"),
                            units=("um", "um", "um"),
                            contrast_limits=(float(noisy.min()), float(noisy.max())), **kw)


def _assert_slice_at_a_time(counted, n):
    assert counted.per_compute and max(counted.per_compute) == 1, counted.per_compute
    assert set(counted.reads) <= set(range(n))


def test_lazy_stack_is_restored_slice_by_slice_into_a_store_on_disk(
        viewer_widget, gui, lazy_stack):
    viewer, widget = viewer_widget
    noisy, data, counted = lazy_stack
    layer = _add(viewer, data, noisy)
    gui.configure(widget, layer, slices=ALL, max_iters=4, preview_every=2, stopping="none")
    counted.reset()  # what napari read to show the layer does not count

    assert widget.run() is not None
    gui.wait_done(widget)

    _assert_slice_at_a_time(counted, 3)
    assert set(counted.reads) == {0, 1, 2}  # every slice was read, one at a time
    out = viewer.layers["nuclei" + SUFFIX]
    assert isinstance(out.data, zarr.Array)  # shown from the store, not from memory
    record = out.metadata["napari_dip"]
    path = record["store"]
    assert os.path.isdir(path) and path in widget.status.value
    stored = zarr.open_array(path, mode="r")
    assert stored.shape == noisy.shape and stored.dtype == noisy.dtype
    assert stored.chunks == (1, *noisy.shape[1:])  # one slice per chunk
    for i in range(3):
        restored = np.asarray(stored[i])
        assert np.isfinite(restored).all() and not np.array_equal(restored, noisy[i])
        np.testing.assert_array_equal(np.asarray(out.data[i]), restored)
    assert record["slices_done"] == [0, 1, 2] and record["outcome"]["state"] == "finished"
    # Alike slices start warm, chosen in the same pass (as a stack in memory chooses).
    from napari_dip.engine.arrays import infer_layout
    from napari_dip.engine.stacks import choose_stack_mode

    assert record["stack_mode"] == choose_stack_mode(None, noisy, [0, 1, 2],
                                                     infer_layout(noisy[0], None))
    assert record["stack_mode"]["mode"] == "warm"
    assert [p["warm_start"] for e in record["slices"] for p in e["planes"]] == [False, True, True]
    from napari_dip.engine.units import shared_map

    every = shared_map(lambda i: noisy[i], range(3), [None] * 3, None, "denoise", False, "x")
    assert record["normalisation"]["data_low"] == list(every.data_low)  # one map, all slices
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
    assert tuple(out.axis_labels) == ("z", "y", "x") and tuple(out.units) == tuple(layer.units)
    assert layer.data is data  # the input layer still holds its lazy array, unchanged
    np.testing.assert_array_equal(np.asarray(layer.data), noisy)


def test_a_stopped_lazy_run_keeps_the_finished_slices_on_disk(viewer_widget, gui, lazy_stack):
    viewer, widget = viewer_widget
    noisy, data, counted = lazy_stack
    layer = _add(viewer, data, noisy)
    gui.configure(widget, layer, slices=ALL, max_iters=4, preview_every=2, stopping="none")
    counted.reset()
    seen = {}

    def stop_when_slice_1_is_fitted(i):
        # The first pass reads every slice once (the shared intensity map); the second read
        # of slice 1 is for its fit, after slice 0 is written: stop there.
        seen[i] = seen.get(i, 0) + 1
        if i == 1 and seen[i] == 2:
            widget._run.stop()

    counted.on_read = stop_when_slice_1_is_fitted
    assert widget.run() is not None
    gui.wait_done(widget)

    _assert_slice_at_a_time(counted, 3)
    assert 2 not in counted.reads[3:]  # slice 2 was never read to be fitted
    out = viewer.layers["nuclei" + SUFFIX + " (1 of 3 slices restored)"]
    record = out.metadata["napari_dip"]
    assert record["slices_done"] == [0] and record["outcome"]["state"] == "partial"
    assert "1 of 3 slices restored" in widget.status.value
    stored = zarr.open_array(record["store"], mode="r")
    slice0 = np.asarray(stored[0])
    assert np.isfinite(slice0).all() and not np.array_equal(slice0, noisy[0])
    assert not np.asarray(stored[2]).any()  # never restored: the fill value
    assert zarr.open_array(record["store"]).attrs["napari_dip"]["slices_done"] == [0]
    assert layer.visible  # the input is shown again, unchanged
    np.testing.assert_array_equal(np.asarray(layer.data), noisy)


def test_lazy_current_slice_reads_only_that_slice(viewer_widget, gui, lazy_stack):
    viewer, widget = viewer_widget
    noisy, data, counted = lazy_stack
    layer = _add(viewer, data, noisy)
    gui.configure(widget, layer, slices=CURRENT, max_iters=3, preview_every=2)
    viewer.dims.set_point(0, layer.translate[0] + 2 * layer.scale[0])  # z = 2
    counted.reset()

    assert widget.run() is not None
    gui.wait_done(widget)

    out = viewer.layers["nuclei" + SUFFIX]
    assert set(counted.reads) <= {2} and counted.reads  # napari showed z=2; the run read it
    _assert_slice_at_a_time(counted, 3)
    assert isinstance(out.data, zarr.Array)
    assert out.metadata["napari_dip"]["widget"]["slice_index"] == [2]
    assert not np.array_equal(np.asarray(out.data[2]), noisy[2])
    assert not np.asarray(out.data[0]).any()


def test_a_lazy_stack_in_3d_mode_is_refused_with_the_fix(viewer_widget, gui, lazy_stack):
    viewer, widget = viewer_widget
    noisy, data, counted = lazy_stack
    layer = _add(viewer, data, noisy)
    gui.configure(widget, layer, slices=ALL, stack_mode="3d")
    counted.reset()
    assert widget.run() is None
    assert "stack mode '3d'" in widget.status.value and "'slices'" in widget.status.value
    assert counted.reads == []  # refused before anything was read


def test_a_lazy_run_that_restores_nothing_leaves_no_store(viewer_widget, gui, monkeypatch,
                                                          tmp_path):
    from napari_dip.gui import lazy

    viewer, widget = viewer_widget
    folder = tmp_path / "napari-dip-run"

    made = []

    def temporary_folder():
        folder.mkdir()
        made.append(folder)
        return str(folder)

    monkeypatch.setattr(lazy, "temporary_folder", temporary_folder)
    flat = da.full((3, 32, 32), 7.0, dtype=np.float32, chunks=(1, 32, 32))
    layer = viewer.add_image(flat, name="flat", contrast_limits=(0.0, 10.0),
                             axis_labels=("z", "y", "x"))
    gui.configure(widget, layer, slices=ALL, max_iters=3)
    assert widget.run() is not None
    gui.wait_done(widget)
    assert "every slice is constant" in widget.status.value
    assert made == []  # the first pass found nothing to restore before a store was made
    assert not folder.exists() and gui.dip_layers(viewer) == []


def test_a_lazy_stack_deconvolution_shares_one_headroom_over_its_slices(viewer_widget, gui):
    # Points in focus in the first slices, out of focus in the last: read one slice at a time,
    # the run still gives every slice the room the in-focus ones need (and says so).
    from scipy import ndimage

    from napari_dip.engine.psf import gaussian_psf

    viewer, widget = viewer_widget
    k = gaussian_psf(1.5, 2).kernel
    truth = np.zeros((32, 32))
    for p in [(10, 10), (21, 12), (12, 22), (22, 21)]:
        truth[p] = 50 / k.max()
    sharp = ndimage.convolve(truth, k, mode="nearest")
    rng = np.random.default_rng(0)
    stack = np.stack([rng.poisson(s + 2) for s in (sharp, sharp, ndimage.gaussian_filter(
        sharp, 3))]).astype(np.float32)
    layer = viewer.add_image(da.from_array(stack, chunks=(1, 32, 32)), name="beads",
                             axis_labels=("z", "y", "x"), contrast_limits=(float(stack.min()), float(stack.max())))
    gui.configure(widget, layer, slices=ALL, task="deconvolve", psf_sigma=1.5, max_iters=3,
                  stopping="none")
    assert widget.run() is not None
    gui.wait_done(widget)
    record = viewer.layers["beads" + SUFFIX].metadata["napari_dip"]
    assert len(record["slices"]) == 3
    assert record["operator"]["gain"][0] > 1 and record["operator"]["peak_ratio"][0] >= 2
    assert "room for peaks" in widget.status.value


def test_a_dim_integer_lazy_stack_is_stored_as_float32_as_one_in_memory_is(viewer_widget, gui,
                                                                          load):
    """Rounding a restoration back to the few levels of a dim acquisition loses much of it: a
    lazy stack gets the float32 result an in-memory one gets, judged on the same slices, which
    the run's own first pass reads (in the worker: the viewer reads nothing)."""
    import dask

    nuclei = load("nuclei3d_3x40x40_uint16.tif").astype(np.float64)
    rng = np.random.default_rng(5)
    photons = 1 + 30 * (nuclei - nuclei.min()) / np.ptp(nuclei)
    dim = rng.poisson(photons).astype(np.uint16)  # about 40 levels
    counted = CountedStack(dim)
    viewer, widget = viewer_widget
    with dask.config.set(scheduler=counted.scheduler):
        layer = _add(viewer, da.from_array(counted, chunks=(1, 40, 40)), dim)
        gui.configure(widget, layer, slices=ALL, max_iters=4, stopping="none")
        counted.reset()
        main_thread_reads = []
        counted.on_read = lambda i: main_thread_reads.append(i) \
            if threading.current_thread() is threading.main_thread() else None
        assert widget.run() is not None
        gui.wait_done(widget)
    _assert_slice_at_a_time(counted, 3)
    assert main_thread_reads == []
    assert sorted(Counter(counted.reads).items()) == [(0, 2), (1, 2), (2, 2)]  # pass, then fit
    out = viewer.layers["nuclei" + SUFFIX]
    record = out.metadata["napari_dip"]
    stored = zarr.open_array(record["store"], mode="r")
    assert stored.dtype == np.float32 and out.data.dtype == np.float32
    assert record["result_type"]["input_levels"] < 64 and "reason" in record["result_type"]
    restored = np.asarray(stored[0])
    assert not np.array_equal(restored, np.rint(restored))  # not rounded back to the levels
    from napari_dip.gui.plan import make_plan

    in_memory = make_plan(viewer.add_image(dim, name="in memory"), task="denoise")
    assert in_memory.result_dtype == np.float32
    assert in_memory.levels == record["result_type"]["input_levels"]
    assert layer.data.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(layer.data), dim)


def test_a_store_that_cannot_be_made_fails_the_run_with_the_reason(viewer_widget, gui,
                                                                   monkeypatch, tmp_path,
                                                                   lazy_stack):
    """The store is made by the worker after its first pass: a folder that cannot hold it
    ends the run with the reason, adds no layer and leaves the input as it was."""
    from napari_dip.gui import lazy

    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(lazy, "temporary_folder", lambda: str(blocker / "run"))
    noisy, data, _ = lazy_stack
    viewer, widget = viewer_widget
    layer = _add(viewer, data, noisy)
    gui.configure(widget, layer, slices=ALL, max_iters=3)
    assert widget.run() is not None
    gui.wait_done(widget)
    assert "cannot create the result store on disk" in widget.status.value
    assert gui.dip_layers(viewer) == [] and layer.visible
    np.testing.assert_array_equal(np.asarray(layer.data), noisy)
