"""The command line, end to end on real files."""

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_dip import _io
from napari_dip._cli import _parser, main
from napari_dip.choices import PRESET, REFINE, SR_FACTOR, STOPPING, TASK


@pytest.fixture
def cli(data_dir):
    """``cli(*args)``: run the CLI quietly on the CPU with the light net and seed 0; an
    argument "@name" is the committed crop tests/data/<name>."""

    def run(*args):
        args = [str(data_dir / a[1:]) if isinstance(a, str) and a.startswith("@") else str(a)
                for a in args]
        return main([*args, "--quiet", "--device", "cpu", "--preset", "light", "--seed", "0"])

    return run


@pytest.fixture
def engine_calls(monkeypatch):
    """Counts fit-loop starts, so a test can tell that a run never began."""
    import napari_dip.engine.restoration as restoration

    calls = []
    real = restoration.fit

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(restoration, "fit", counting)
    return calls


def test_restore_tiff_stack_keeps_dtype_axes_resolution_unit_and_records_run(tmp_path, cli,
                                                                              load):
    src = tmp_path / "stack.tif"
    stack = load("nuclei3d_3x40x40_uint16.tif")
    tifffile.imwrite(src, stack, imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "ZYX", "unit": "um"})
    out = tmp_path / "out.tif"
    assert cli("restore", src, out, "--max-iters", "5") == 0
    with tifffile.TiffFile(out) as tif:
        data = tif.series[0].asarray()
        assert tif.series[0].axes == "ZYX"
        # An ImageJ hyperstack, as Fiji writes one: 4 px per um, the unit in the description
        assert tif.imagej_metadata["unit"] == "um"
        assert tif.pages[0].resolutionunit == tifffile.RESUNIT.NONE
        assert tif.pages[0].get_resolution() == pytest.approx((4.0, 4.0))
    record = _io.read_record(out)
    back = _io.read_image(out)  # ... and read back as it was given
    assert back.unit == "um" and back.resolution == pytest.approx((4.0, 4.0))
    assert data.shape == stack.shape and data.dtype == np.uint16
    assert record["seed"] == 0 and len(record["slices"]) == 3
    np.testing.assert_array_equal(tifffile.imread(src), stack)  # input file untouched


def test_a_tiff_stack_keeps_its_z_spacing_unit_by_unit_as_in_memory(tmp_path, cli, load):
    """A stack goes unit by unit (slice by slice, resumable) by default, and in memory with
    --stack-mode warm: both outputs keep the input's Z spacing, frame interval, unit and X/Y
    pixel size where ImageJ reads them, and the record notes them."""
    pytest.importorskip("dask")
    pytest.importorskip("zarr")
    from napari_dip._batch_cli import wants_units

    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, load("nuclei3d_3x40x40_uint16.tif"), imagej=True,
                     resolution=(4.0, 5.0), metadata={"spacing": 2.5, "unit": "um",
                                                      "finterval": 0.5, "axes": "ZYX"})
    units_out, memory_out = tmp_path / "units.tif", tmp_path / "memory.tif"
    assert wants_units(_parser().parse_args(["restore", str(src), str(units_out)]))
    assert cli("restore", src, units_out, "--max-iters", "3") == 0
    assert cli("restore", src, memory_out, "--max-iters", "3", "--stack-mode", "warm") == 0

    def metadata(path):
        with tifffile.TiffFile(path) as tif:
            meta = tif.imagej_metadata
            return (tif.series[0].axes, meta["spacing"], meta["finterval"], meta["unit"],
                    tif.pages[0].resolutionunit, tif.pages[0].get_resolution())

    assert metadata(units_out) == metadata(memory_out)
    for out in (units_out, memory_out):
        back = _io.read_image(out)
        assert back.axes == "ZYX" and back.unit == "um" and back.z_spacing == 2.5
        assert back.resolution == pytest.approx((4.0, 5.0)) and back.frame_interval == 0.5
        assert _io.read_record(out)["calibration"] == {
            "pixel_size": [0.25, 0.2], "unit": "um", "z_spacing": 2.5, "frame_interval": 0.5}


def test_sr_keeps_the_unit_and_divides_the_pixel_size(tmp_path, cli, load):
    src = tmp_path / "cells.tif"
    tifffile.imwrite(src, load("nuclei_64_uint16.tif")[:24, :24], imagej=True,
                     resolution=(2.0, 2.0), metadata={"unit": "micron"})
    out = tmp_path / "big.tif"
    assert cli("restore", src, out, "--task", "sr", "--factor", "3", "--max-iters", "2") == 0
    back = _io.read_image(out)
    assert back.data.shape == (72, 72)
    assert back.unit == "micron" and back.resolution == pytest.approx((6.0, 6.0))


def test_sr_png_writes_factor_times_larger_image(tmp_path, cli):
    from PIL import Image

    out = tmp_path / "big.png"
    assert cli("restore", "@f16_64.png", out, "--task", "sr", "--factor", "2",
               "--max-iters", "3") == 0
    assert Image.open(out).size == (128, 128)


def test_inpaint_with_mask_file_composites_known_pixels(tmp_path, cli, load):
    out = tmp_path / "filled.png"
    assert cli("restore", "@kate_64.png", out, "--task", "inpaint", "--mask",
               "@kate_64_fill_mask.png", "--max-iters", "3") == 0
    known = load("kate_64_fill_mask.png") == 0
    filled = _io.read_image(out).data
    np.testing.assert_array_equal(filled[known], load("kate_64.png")[known])
    raw = tmp_path / "raw.tif"
    assert cli("restore", "@kate_64.png", raw, "--task", "inpaint", "--mask",
               "@kate_64_fill_mask.png", "--max-iters", "3", "--no-composite") == 0
    with tifffile.TiffFile(raw) as tif:
        assert _io.read_record(raw)["composite"] is False
        assert not np.array_equal(tif.asarray()[known], load("kate_64.png")[known])


@pytest.mark.parametrize("args,message", [
    (["restore", "missing.tif", "out.tif"], "does not exist"),
    (["restore", "@kate_64.png", "out.png", "--task", "inpaint"], "needs --mask"),
    (["restore", "@kate_64.png", "out.png", "--task", "inpaint", "--mask",
      "@zebra_96_hr.png"], "shape"),
    (["restore", "@f16_64.png", "out.xyz"], "unsupported extension"),
    (["restore", "@f16_64.png", "out.png", "--axes", "YX"], "do not match"),
    (["restore", "@f16_64.png", "nowhere/out.png"], "does not exist"),
])
def test_bad_input_exits_non_zero_with_one_line_message(tmp_path, capsys, cli, args, message):
    args = [a if not isinstance(a, str) or not a.startswith("out") else tmp_path / a for a in args]
    assert cli(*args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("data,axes,out,suggested", [
    (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), "YX", "o.jpg", ".tif or .png"),
    (np.random.default_rng(0).random((64, 64), np.float32), "YX", "o.png", "use .tif instead"),
    (np.arange(3 * 32 * 32, dtype=np.uint8).reshape(3, 32, 32), "ZYX", "o.png",
     "use .tif instead"),
    (np.random.default_rng(1).integers(0, 255, (32, 32, 4), np.uint8), "YXS", "o.jpg",
     ".tif or .png"),
])
def test_an_output_format_that_cannot_hold_the_result_is_refused_before_the_run(
        tmp_path, capsys, cli, engine_calls, data, axes, out, suggested):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, data, metadata={"axes": axes},
                     photometric="rgb" if axes.endswith("S") else "minisblack")
    assert cli("restore", src, tmp_path / out, "--max-iters", "2") == 2
    err = capsys.readouterr().err
    assert f"'{tmp_path / out}'" in err and suggested in err, err
    assert engine_calls == []  # refused before anything was computed
    assert not (tmp_path / out).exists()


def test_a_tiff_without_axes_metadata_is_sent_to_the_axes_option(tmp_path, capsys, cli):
    src = tmp_path / "five.tif"
    data = np.random.default_rng(2).integers(0, 4000, (2, 1, 2, 16, 16), np.uint16)
    tifffile.imwrite(src, data)  # tifffile reads its axes back as 'QQQYX'
    assert cli("restore", src, tmp_path / "o.tif", "--max-iters", "1") == 2
    err = capsys.readouterr().err
    assert "repeated 'Q'" in err and "--axes TZCYX" in err and str(src) in err, err
    assert cli("restore", src, tmp_path / "o.tif", "--max-iters", "1", "--axes", "TZCYX") == 0
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert tif.series[0].axes == "TZCYX" and tif.series[0].shape == data.shape


def test_a_file_that_is_not_a_tiff_is_named(tmp_path, capsys, cli):
    bad = tmp_path / "scan.tif"
    bad.write_text("not an image")
    assert cli("restore", bad, tmp_path / "o.tif") == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a readable TIFF" in err and "Traceback" not in err


def test_a_constant_slice_is_passed_through_and_a_failed_slice_does_not_lose_the_others(
        tmp_path, capsys, cli, load):
    stack = load("nuclei3d_3x40x40_uint16.tif").copy()
    stack[0] = 0  # a blank first plane
    src, mask_file, out = tmp_path / "s.tif", tmp_path / "m.tif", tmp_path / "o.tif"
    tifffile.imwrite(src, stack, metadata={"axes": "ZYX"}, photometric="minisblack")
    masks = np.zeros((3, 40, 40), np.uint8)
    masks[:, 10:14, 10:14] = 1
    masks[2] = 1  # slice 2's mask covers every pixel: nothing to fill from, an error
    tifffile.imwrite(mask_file, masks, metadata={"axes": "ZYX"}, photometric="minisblack")
    assert cli("restore", src, out, "--task", "inpaint", "--mask", mask_file,
               "--max-iters", "3") == 1
    err = capsys.readouterr().err
    assert "slice (2,) was not restored" in err and "every pixel" in err
    assert "slice (0,): passed through unchanged (constant)" in err
    with tifffile.TiffFile(out) as tif:
        data = tif.asarray()
    record = _io.read_record(out)
    np.testing.assert_array_equal(data[0], stack[0])
    np.testing.assert_array_equal(data[2], stack[2])
    assert not np.array_equal(data[1], stack[1])
    assert [e.get("skipped") for e in record["slices"]] == ["constant", None, None]
    assert record["slices_done"] == [1] and record["errors"][0]["slice"] == 2


def test_help_shows_defaults_formats_and_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["restore", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: denoise)", "(default: auto)", "(default: 4)",
                    "default: a random one"):
        assert default in text
    for suffix in (".tif", ".tiff", "PNG", ".jpg", ".jpeg", "BMP", "16-bit grey"):
        assert suffix in text
    assert "130" in text and "Ctrl-C" in text


def test_cli_options_come_from_the_shared_choices():
    actions = {a.dest: a for a in _parser()._subparsers._group_actions[0].choices[
        "restore"]._actions}
    assert tuple(actions["task"].choices) == TASK.values
    assert tuple(actions["preset"].choices) == PRESET.values
    assert tuple(actions["stopping"].choices) == STOPPING.values
    assert tuple(actions["refine"].choices) == REFINE.values
    assert tuple(actions["factor"].choices) == SR_FACTOR.values


def test_console_script_runs_as_a_process(tmp_path, data_dir):
    out = tmp_path / "o.tif"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_dip._cli", "restore", str(data_dir / "nuclei_64_uint16.tif"),
         str(out), "--max-iters", "2", "--device", "cpu", "--preset", "light"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert tifffile.imread(out).dtype == np.uint16


def test_a_dry_run_says_the_memory_and_a_measured_bound_on_the_time(tmp_path, cli, capsys):
    """Before hours of compute: the memory of a fit step and its time, measured here, with
    the bound the iteration cap sets (a stopping rule decides the rest); nothing is written."""
    import re

    out = tmp_path / "o.tif"
    assert cli("restore", "@nuclei_64_uint16.tif", out, "--dry-run") == 0
    text = capsys.readouterr().out
    assert re.search(r"memory: about \d+ MiB per fit step", text)
    assert re.search(r"time: ~[\d.e-]+ s/iteration · the automatic stop \(noise\) decides how "
                     r"many iterations; at most 3000: ≤ .+ \(a fit step measured here\)", text)
    assert cli("restore", "@nuclei_64_uint16.tif", out, "--dry-run", "--stopping", "none",
               "--max-iters", "50") == 0
    assert re.search(r"time: ~[\d.e-]+ s/iteration · runs 50 iterations: ≈ ",
                     capsys.readouterr().out)
    assert not out.exists()


def _dim_pair(load, peak=12.0):
    """A real nuclei crop at a few photons (Poisson, seed 0): the noisy uint16 counts and the
    mean they were drawn from."""
    nuclei = load("nuclei_64_uint16.tif").astype(float)
    lam = (nuclei - nuclei.min()) / (nuclei.max() - nuclei.min()) * peak + 0.5
    return np.random.default_rng(0).poisson(lam).astype(np.uint16), lam


def test_an_input_of_few_integer_levels_is_restored_into_float32(tmp_path, cli, capsys, load):
    """Rounded back to the ~20 levels of a dim image, a restoration loses much of its gain:
    'auto' keeps float32 there (and says why); 'input' keeps the input's type."""
    from benchmarks.metrics import psnr

    noisy, lam = _dim_pair(load)
    src = tmp_path / "dim.tif"
    tifffile.imwrite(src, noisy)
    auto, kept = tmp_path / "auto.tif", tmp_path / "kept.tif"
    assert cli("restore", src, auto, "--dry-run") == 0
    assert "result type: float32 (auto: the input spans only" in capsys.readouterr().out
    assert cli("restore", src, auto) == 0
    assert "result type: float32 (auto: the input spans only" in capsys.readouterr().err
    assert cli("restore", src, kept, "--output-dtype", "input") == 0
    as_float, rounded = tifffile.imread(auto), tifffile.imread(kept)
    assert as_float.dtype == np.float32 and rounded.dtype == np.uint16
    record = _io.read_record(auto)
    assert record["output_dtype"] == "float32" and record["result_type"]["requested"] == "auto"
    assert record["result_type"]["input_levels"] < 64
    np.testing.assert_array_equal(rounded, np.clip(np.rint(as_float), 0, 65535))  # same fit
    assert psnr(as_float, lam, lam.max()) > psnr(rounded.astype(float), lam, lam.max()) + 0.3
    # A PNG cannot hold float32: 'auto' keeps its integers there.
    png = tmp_path / "dim.png"
    assert cli("restore", src, png, "--max-iters", "3") == 0
    assert np.asarray(__import__("PIL.Image").Image.open(png)).dtype == np.uint16
    # Many levels: the input's type, as before.
    tifffile.imwrite(tmp_path / "bright_in.tif", (noisy * 40).astype(np.uint16))
    assert cli("restore", tmp_path / "bright_in.tif", tmp_path / "bright.tif", "--max-iters",
               "3") == 0
    assert tifffile.imread(tmp_path / "bright.tif").dtype == np.uint16


def test_an_unnamed_axis_is_stacked_and_the_run_says_how_to_name_it(tmp_path, cli, capsys,
                                                                     load):
    src = tmp_path / "five.tif"
    stack = load("nuclei3d_3x40x40_uint16.tif")
    tifffile.imwrite(src, np.concatenate([stack, stack[:2]]))  # no axes: read as QYX
    assert cli("restore", src, tmp_path / "o.tif", "--max-iters", "2") == 0
    err = capsys.readouterr().err
    assert "does not say what its axis of length 5 is (read as 'QYX')" in err
    assert "restored as a stack of 5 slices. If it holds channels, add --axes CYX" in err
    assert cli("restore", src, tmp_path / "c.tif", "--max-iters", "2", "--axes", "CYX") == 0
    assert "does not say" not in capsys.readouterr().err
    assert _io.read_record(tmp_path / "c.tif").get("slices") is None  # one plane of channels


def test_a_mask_that_marks_the_pixels_to_keep_is_flagged_and_invert_mask_reads_it(
        tmp_path, cli, capsys, load):
    """The DIP repository's masks mark the pixels to keep: given as they are, most of the image
    would be filled, and the run says how to read them; --invert-mask fills the right ones."""
    import re

    from PIL import Image

    keep = tmp_path / "keep.png"  # the convention of the DIP repository's masks
    Image.fromarray(np.where(load("kate_64_fill_mask.png") > 0, 0, 255).astype(np.uint8)).save(
        keep)
    assert cli("restore", "@kate_64.png", tmp_path / "wrong.png", "--task", "inpaint", "--mask",
               keep, "--max-iters", "2") == 0
    err = capsys.readouterr().err
    assert re.search(r"note: mask .* marks \d+ % of the pixels to fill \(non-zero = fill\); if "
                     r"its non-zero pixels are the ones to keep, .* add --invert-mask", err)
    out, ref = tmp_path / "right.png", tmp_path / "ref.png"
    assert cli("restore", "@kate_64.png", out, "--task", "inpaint", "--mask", keep,
               "--invert-mask", "--max-iters", "3") == 0
    assert "note: mask" not in capsys.readouterr().err
    assert cli("restore", "@kate_64.png", ref, "--task", "inpaint", "--mask",
               "@kate_64_fill_mask.png", "--max-iters", "3") == 0
    np.testing.assert_array_equal(_io.read_image(out).data, _io.read_image(ref).data)
    # a mask non-zero everywhere, inverted, fills nothing: the error names the option
    full = tmp_path / "full.tif"
    tifffile.imwrite(full, np.ones((64, 64), np.uint8))
    assert cli("restore", "@kate_64.png", out, "--task", "inpaint", "--mask", full,
               "--invert-mask", "--max-iters", "3") == 2
    assert "leave out --invert-mask" in capsys.readouterr().err.lower()


def test_the_second_stage_is_said_before_the_run_and_can_be_turned_off(tmp_path, cli, capsys):
    out = tmp_path / "o.tif"
    assert cli("restore", "@nuclei_64_uint16.tif", out, "--dry-run") == 0
    assert "then a wiener second stage (auto: collaborative under gaussian" in \
        capsys.readouterr().out.lower()
    assert cli("restore", "@nuclei_64_uint16.tif", out, "--max-iters", "5") == 0
    record = _io.read_record(out)
    stage = record["planes"][0]["refinement"]
    method = "blend" if record["noise_model"]["model"] == "poisson-gaussian" else "collaborative"
    assert (stage["asked"], stage["method"]) == ("auto", method)
    said = capsys.readouterr().err.lower()
    assert f"second stage: {method} (auto: by the noise model) (a wiener filter" in said
    assert "averaged with hard thresholding as pilot" in said  # both grouped stages
    assert cli("restore", "@nuclei_64_uint16.tif", out, "--max-iters", "5", "--refine",
               "none") == 0
    record = _io.read_record(out)
    assert record["config"]["refine"] == "none" and "refinement" not in record["planes"][0]
    assert cli("restore", "@nuclei_64_uint16.tif", out, "--dry-run", "--refine", "none") == 0
    assert "second stage" not in capsys.readouterr().out
