"""Start-up cost: the plugin, the CLI and the torch-free modules must not import torch."""

import subprocess
import sys


def test_importing_the_plugin_does_not_import_torch():
    code = ("import sys, napari_dip, napari_dip._cli, napari_dip._io, napari_dip.choices, "
            "napari_dip.engine.axes; "
            "assert 'torch' not in sys.modules, 'torch imported at start-up'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_importing_the_widget_does_not_import_torch():
    code = "import sys, napari_dip._widget; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_layer_mapping_needs_neither_qt_nor_torch():
    code = ("import sys, napari_dip.gui.plan, napari_dip.gui.results; "
            "print([m for m in ('torch', 'qtpy', 'PyQt6', 'napari') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_the_widget_does_not_import_matplotlib():
    code = "import sys, napari_dip._widget; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
