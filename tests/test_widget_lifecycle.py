"""Closing the viewer and deleting layers while a run goes on (issue 9, items 7 and 9).
Run under Xvfb; tiny runs only; no assertion on timings."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity

pytestmark = pytest.mark.gui


# ---- 7. closing the viewer mid-run -----------------------------------------------------------


def test_the_running_task_has_a_readable_name(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(camera, name="cam")
    gui.configure(widget, image, max_iters=100_000, stopping="none")
    assert widget.run() is not None
    tasks = viewer.window._task_status_manager.get_status()  # what napari's close dialog lists
    widget.stop()
    gui.wait_done(widget)
    assert len(tasks) == 1
    assert "Deep Image Prior" in tasks[0] and "'cam'" in tasks[0]
    assert "_generate" not in tasks[0] and "<function" not in tasks[0]


def test_closing_the_viewer_mid_run_stops_cleanly(make_napari_viewer, camera, gui, qtbot):
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-dip", "Deep Image Prior")
    image = viewer.add_image(camera, name="cam")
    gui.configure(widget, image, max_iters=100_000, stopping="none", preview_every=2)
    seen = gui.watch_results(viewer)
    worker = widget.run()
    assert worker is not None
    gui.wait_for_updates(seen)
    viewer.close()  # napari cancels the task; previews keep arriving from the worker
    # the worker thread has ended when close returns: nothing left to abort the process
    assert not worker.is_running
    for _ in range(50):  # deliver anything still queued: no callback may touch dead widgets
        QApplication.processEvents()
    assert not widget.running


# ---- 9. deleting layers mid-run -------------------------------------------------------------


def test_removing_the_input_stops_the_run_and_says_so(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    other = viewer.add_image(camera[::2, ::2].copy(), name="other")
    image = viewer.add_image(camera, name="cam")
    gui.configure(widget, image, max_iters=100_000, stopping="none", preview_every=5)
    seen = gui.watch_results(viewer)
    start = gui.n_records()
    assert widget.run() is not None
    gui.wait_for_updates(seen)
    viewer.layers.remove(image)
    gui.wait_done(widget)
    (out,) = gui.dip_layers(viewer)
    assert out.metadata["napari_dip"]["stop_reason"] == "user"
    msgs = [str(r.message) for r in gui.records_since(start, NotificationSeverity.WARNING)]
    assert any("'cam'" in m and "removed" in m for m in msgs)
    assert widget.image.value is other  # never silently a result layer


def test_a_removed_result_layer_stops_the_run_and_stays_removed(viewer_widget, camera, gui):
    viewer, widget = viewer_widget
    image = viewer.add_image(camera, name="cam")
    gui.configure(widget, image, max_iters=100_000, stopping="none", preview_every=5)
    seen = gui.watch_results(viewer)
    start = gui.n_records()
    assert widget.run() is not None
    gui.wait_for_updates(seen)
    (out,) = gui.dip_layers(viewer)
    viewer.layers.remove(out)
    gui.wait_done(widget)
    assert gui.dip_layers(viewer) == []  # not brought back
    msgs = [str(r.message) for r in gui.records_since(start, NotificationSeverity.WARNING)]
    assert any(out.name in m and "removed" in m for m in msgs)
    assert image.visible and np.array_equal(image.data, camera)
