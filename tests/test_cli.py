"""The command line, end to end on real files."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from helpers import DATA, load
from napari_dip._cli import main


def run(*args):
    return main([*map(str, args), "--quiet", "--device", "cpu", "--preset", "light", "--seed", "0"])


def test_restore_tiff_stack_keeps_dtype_axes_resolution_and_records_run(tmp_path):
    src = tmp_path / "stack.tif"
    stack = load("nuclei3d_3x40x40_uint16.tif")
    tifffile.imwrite(src, stack, imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "ZYX", "unit": "um"})
    out = tmp_path / "out.tif"
    assert run("restore", src, out, "--max-iters", "5") == 0
    with tifffile.TiffFile(out) as tif:
        data = tif.series[0].asarray()
        assert tif.series[0].axes == "ZYX"
        assert tif.pages[0].get_resolution() == pytest.approx((4.0, 4.0))
        record = json.loads(tif.shaped_metadata[0]["napari_dip"])
    assert data.shape == stack.shape and data.dtype == np.uint16
    assert record["seed"] == 0 and len(record["slices"]) == 3
    np.testing.assert_array_equal(tifffile.imread(src), stack)  # input file untouched


def test_sr_png_writes_factor_times_larger_image(tmp_path):
    from PIL import Image

    out = tmp_path / "big.png"
    assert run("restore", DATA / "f16_64.png", out, "--task", "sr", "--factor", "2",
               "--max-iters", "3") == 0
    assert Image.open(out).size == (128, 128)


def test_inpaint_with_mask_file(tmp_path):
    out = tmp_path / "filled.png"
    assert run("restore", DATA / "kate_64.png", out, "--task", "inpaint", "--mask",
               DATA / "kate_64_fill_mask.png", "--max-iters", "3") == 0
    assert out.exists()


@pytest.mark.parametrize("args,message", [
    (["restore", "missing.tif", "out.tif"], "does not exist"),
    (["restore", DATA / "kate_64.png", "out.png", "--task", "inpaint"], "needs --mask"),
    (["restore", DATA / "kate_64.png", "out.png", "--task", "inpaint", "--mask",
      DATA / "zebra_96_hr.png"], "shape"),
    (["restore", DATA / "f16_64.png", "out.xyz"], "unsupported extension"),
    (["restore", DATA / "f16_64.png", "out.png", "--axes", "YX"], "do not match"),
    (["restore", DATA / "f16_64.png", "nowhere/out.png"], "does not exist"),
])
def test_bad_input_exits_non_zero_with_one_line_message(tmp_path, capsys, args, message):
    args = [a if not isinstance(a, str) or not a.startswith("out") else tmp_path / a for a in args]
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_console_script_runs_as_a_process(tmp_path):
    out = tmp_path / "o.tif"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_dip._cli", "restore", str(DATA / "nuclei_64_uint16.tif"),
         str(out), "--max-iters", "2", "--device", "cpu", "--preset", "light"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert tifffile.imread(out).dtype == np.uint16


def test_importing_the_plugin_does_not_import_torch():
    code = ("import sys, napari_dip, napari_dip._cli, napari_dip._io, napari_dip.engine.axes; "
            "assert 'torch' not in sys.modules, 'torch imported at start-up'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
