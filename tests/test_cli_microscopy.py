"""Command-line options for microscopy: noise model, PSF, guide and stack mode."""

import numpy as np
import pytest
import tifffile

from napari_dip import _io
from napari_dip._cli import _parser, main
from napari_dip.choices import NOISE_MODEL, STACK_MODE


@pytest.fixture
def cli(data_dir):
    def run(*args):
        args = [str(data_dir / a[1:]) if isinstance(a, str) and a.startswith("@") else str(a)
                for a in args]
        return main([*args, "--quiet", "--device", "cpu", "--preset", "light", "--seed", "0"])

    return run


def _record(path):
    return _io.read_record(path)


def test_options_and_their_defaults():
    actions = {a.dest: a for a in _parser()._subparsers._group_actions[0].choices["restore"]
               ._actions}
    assert tuple(actions["noise_model"].choices) == NOISE_MODEL.values
    assert actions["noise_model"].default == "auto"
    assert tuple(actions["stack_mode"].choices) == STACK_MODE.values
    assert actions["stack_mode"].default is None  # chosen from the stack
    assert {"psf", "psf_sigma", "guide"} <= set(actions)


def test_psf_sigma_makes_a_deconvolution_and_records_the_psf(tmp_path, cli, capsys):
    out = tmp_path / "out.tif"
    assert cli("restore", "@nuclei_64_uint16.tif", out, "--psf-sigma", "1.5",
               "--max-iters", "3") == 0
    err = capsys.readouterr().err  # what the run chose, as the widget's status says it
    assert "  noise model: " in err and "(auto: " in err
    assert "  deconvolution: within the input's range" in err
    rec = _record(out)
    assert rec["task"] == "deconvolve"
    assert rec["operator"]["name"] == "blur"
    assert rec["operator"]["psf"]["sigma"] == [1.5, 1.5]
    assert rec["noise_model"]["requested"] == "auto"
    assert rec["noise_model"]["model"] in NOISE_MODEL.values


def test_psf_file_and_noise_model_recorded(tmp_path, cli, capsys):
    out = tmp_path / "out.tif"
    assert cli("restore", "@nuclei_64_uint16.tif", out, "--psf", "@psf_beads_16x17x15.tif",
               "--noise-model", "poisson-gaussian", "--max-iters", "3") == 0
    rec = _record(out)
    psf = rec["operator"]["psf"]
    assert psf["source"] == "image" and len(psf["shape"]) == 2  # the in-focus plane
    assert all(n % 2 == 1 for n in psf["shape"])
    assert rec["noise_model"]["model"] == "poisson-gaussian"
    assert rec["noise_model"]["gain"][0] > 0


@pytest.mark.parametrize("args, message", [
    (["--task", "deconvolve"], "needs a PSF"),
    (["--psf-sigma", "2", "--task", "sr"], "cannot be combined with --task sr"),
    (["--psf-sigma", "2,a"], "--psf-sigma takes"),
    (["--psf", "missing.tif"], "PSF file"),
    (["--stack-mode", "warm"], "is one plane"),
])
def test_bad_microscopy_options_exit_2_with_a_clear_message(tmp_path, cli, capsys, args,
                                                             message):
    code = cli("restore", "@nuclei_64_uint16.tif", tmp_path / "o.tif", *args, "--max-iters", "1")
    assert code == 2
    assert message in capsys.readouterr().err


def test_guide_of_the_wrong_size_is_named(tmp_path, cli, capsys, load):
    guide = tmp_path / "guide.tif"
    tifffile.imwrite(guide, load("nuclei_64_uint16.tif")[:32, :32])
    assert cli("restore", "@nuclei_64_uint16.tif", tmp_path / "o.tif", "--guide", guide,
               "--max-iters", "1") == 2
    err = capsys.readouterr().err
    assert "guide" in err and str(guide) in err and "(64, 64)" in err


def test_an_ome_tiff_z_stack_gives_the_3d_mode_its_voxel_size(tmp_path, cli, capsys, load):
    src = tmp_path / "stack.ome.tif"
    tifffile.imwrite(src, load("nuclei3d_3x40x40_uint16.tif"), ome=True,
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25,
                               "PhysicalSizeZ": 1000, "PhysicalSizeZUnit": "nm"})
    assert cli("restore", src, tmp_path / "o.tif", "--stack-mode", "3d", "--dry-run") == 0
    assert "voxel size (Z, Y, X) 1 x 0.25 x 0.25" in capsys.readouterr().out
    out = tmp_path / "vol.tif"
    assert cli("restore", src, out, "--stack-mode", "3d", "--max-iters", "1") == 0
    assert _record(out)["stack_mode"]["voxel_size"] == pytest.approx([1.0, 0.25, 0.25])
    with tifffile.TiffFile(out) as tif:  # the output keeps the Z spacing, for ImageJ too
        assert tif.imagej_metadata["spacing"] == pytest.approx(1.0)
        assert tif.imagej_metadata["unit"] == "\\u00B5m"


def test_guide_is_recorded(tmp_path, cli, load):
    guide = tmp_path / "guide.tif"
    tifffile.imwrite(guide, load("nuclei_64_uint16.tif"))
    out = tmp_path / "o.tif"
    assert cli("restore", "@nuclei_64_uint16.tif", out, "--guide", guide, "--max-iters", "2") == 0
    rec = _record(out)
    assert rec["guide"]["channels"] == 1 and rec["config"]["jitter"] == 0.0


def test_stack_modes_from_the_command_line(tmp_path, cli, load):
    src = tmp_path / "stack.tif"
    stack = load("nuclei3d_3x40x40_uint16.tif")
    tifffile.imwrite(src, stack, imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 1.0})
    out = tmp_path / "warm.tif"
    assert cli("restore", src, out, "--stack-mode", "warm", "--max-iters", "3") == 0
    rec = _record(out)
    assert rec["stack_mode"]["mode"] == "warm"
    assert [p["warm_start"] for e in rec["slices"] for p in e["planes"]] == [False, True, True]
    out3 = tmp_path / "vol.tif"
    assert cli("restore", src, out3, "--stack-mode", "3d", "--max-iters", "2") == 0
    rec = _record(out3)
    assert rec["stack_mode"]["mode"] == "3d"
    assert rec["stack_mode"]["voxel_size"] == pytest.approx([1.0, 0.25, 0.25])
    # Z spacing 4x the pixel size: the 3-D net keeps Z at full resolution on the finest levels
    assert rec["config"]["net"]["z_strides"][:2] == [1, 1]
    back = tifffile.imread(out3)
    assert back.shape == stack.shape and back.dtype == stack.dtype


def test_dry_run_in_3d_plans_one_fit_of_the_whole_stack(tmp_path, cli, capsys, load):
    import re

    stack = load("nuclei3d_3x40x40_uint16.tif")
    memory = {}
    for name, data in (("3", stack), ("6", np.concatenate([stack, stack]))):
        src = tmp_path / f"stack{name}.tif"
        tifffile.imwrite(src, data, imagej=True, resolution=(4.0, 4.0),
                         metadata={"axes": "ZYX", "unit": "um", "spacing": 1.0})
        for mode in ("warm", "3d"):  # warm: one 2-D fit per slice (unit by unit with dask)
            assert cli("restore", src, tmp_path / "o.tif", "--stack-mode", mode,
                       "--dry-run") == 0
            text = capsys.readouterr().out
            memory[name, mode] = int(re.search(r"memory: about (\d+) MiB", text).group(1))
            if mode == "3d":
                assert f"stack mode 3d, one 3-D fit of the whole {name}x40x40 stack" in text
                assert "voxel size (Z, Y, X) 1 x 0.25 x 0.25" in text
                assert re.search(r"time: ~[\d.e-]+ s/iteration .* at most 3000: ≤ ", text)
            else:
                assert re.search(rf"{name} (plane|slice)\(s\) of 40x40", text)
    assert not (tmp_path / "o.tif").exists()
    assert memory["3", "3d"] > memory["3", "warm"] == memory["6", "warm"]
    assert memory["6", "3d"] > memory["3", "3d"]  # one fit over Z x Y x X: grows with Z
    assert cli("restore", src, tmp_path / "o.tif", "--stack-mode", "3d", "--task", "sr",
               "--dry-run") == 2
    assert "stack mode '3d' restores tasks denoise and deconvolve" in capsys.readouterr().err


def test_whole_stack_modes_refuse_unit_by_unit_options(tmp_path, cli, capsys, load):
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, load("nuclei3d_3x40x40_uint16.tif"), metadata={"axes": "ZYX"})
    assert cli("restore", src, tmp_path / "o.tif", "--stack-mode", "3d", "--tile", "32",
               "--max-iters", "1") == 2
    assert "cannot be combined with several inputs, --tile" in capsys.readouterr().err


def test_3d_needs_a_single_stack_axis(tmp_path, cli, capsys):
    src = tmp_path / "tz.tif"
    tifffile.imwrite(src, np.random.default_rng(0).integers(0, 200, (2, 3, 32, 32), np.uint16),
                     metadata={"axes": "TZYX"})
    assert cli("restore", src, tmp_path / "o.tif", "--stack-mode", "3d", "--max-iters", "1") == 2
    assert "one Z axis" in capsys.readouterr().err


def _points(defocus: float = 0.0, peak: float = 50.0) -> np.ndarray:
    """Points under a Gaussian PSF (sigma 1.5 px) with shot noise; ``defocus`` px more blur
    makes them out of focus (a short Richardson-Lucy run raises them < 2x)."""
    from scipy import ndimage

    from napari_dip.engine.psf import gaussian_psf

    k = gaussian_psf(1.5, 2).kernel
    truth = np.zeros((32, 32))
    for p in [(10, 10), (21, 12), (12, 22), (22, 21)]:
        truth[p] = peak / k.max()
    blurred = ndimage.convolve(truth, k, mode="nearest")
    if defocus:
        blurred = ndimage.gaussian_filter(blurred, defocus)
    return np.random.default_rng(0).poisson(blurred + 2)


def test_a_stack_deconvolved_unit_by_unit_shares_one_headroom_and_says_it(tmp_path, cli,
                                                                          capsys):
    # In-focus points in two slices, out of focus in the last: every unit (here each slice,
    # run unit by unit into a resumable TIFF) gets the headroom the in-focus slices need.
    stack = np.stack([_points(), _points(), _points(defocus=3)])
    src, out = tmp_path / "beads.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, stack.astype(np.uint16), metadata={"axes": "ZYX"})
    assert cli("restore", src, out, "--psf-sigma", "1.5", "--max-iters", "3") == 0
    record = _record(out)
    assert record["operator"]["gain"][0] > 1 and record["operator"]["peak_ratio"][0] >= 2
    assert record["noise_model"]["requested"] == "auto"
    assert "deconvolution: room for peaks" in capsys.readouterr().err
    assert tifffile.imread(out).dtype == np.float32  # a deconvolution's result: float32


def test_an_8_bit_deconvolution_keeps_peaks_above_255_in_a_float32_result(tmp_path, cli):
    # The restored points rise far above the input's range; an 8-bit result would cut them.
    src = tmp_path / "points.tif"
    tifffile.imwrite(src, np.clip(_points(peak=200.0), 0, 255).astype(np.uint8))
    out, kept = tmp_path / "out.tif", tmp_path / "kept.tif"
    args = ("--psf-sigma", "1.5", "--max-iters", "150", "--stopping", "none")
    assert cli("restore", src, out, *args) == 0
    assert cli("restore", src, kept, *args, "--output-dtype", "input") == 0
    result, as_input = tifffile.imread(out), tifffile.imread(kept)
    assert result.dtype == np.float32 and result.max() > 300, result.max()
    assert as_input.dtype == np.uint8 and as_input.max() == 255
    assert cli("restore", src, tmp_path / "out.png", *args[:2], "--max-iters", "2") == 0
    from PIL import Image  # auto keeps the input's type where the format holds no float32

    assert np.asarray(Image.open(tmp_path / "out.png")).dtype == np.uint8


def test_a_3d_psf_for_2d_fits_is_named_in_the_plan_and_the_summary(tmp_path, cli, capsys,
                                                                      load):
    """A 3-D PSF file given for a stack fitted slice by slice (or for one plane): the dry run
    and the summary say that only its in-focus plane is used, and how to use it whole."""
    from napari_dip.engine.psf import gaussian_psf

    psf = tmp_path / "psf.tif"
    tifffile.imwrite(psf, gaussian_psf((1.5, 1.5, 1.5)).kernel.astype(np.float32))
    stack = load("nuclei3d_3x40x40_uint16.tif")
    src, plane = tmp_path / "stack.tif", tmp_path / "plane.tif"
    tifffile.imwrite(src, stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(plane, stack[1])
    whole = "--stack-mode 3d deconvolves the stack with the whole PSF"
    assert cli("restore", src, tmp_path / "o.tif", "--psf", psf, "--dry-run") == 0
    assert f"PSF: 3-D; the fits will use its in-focus plane, slice by slice ({whole})" in \
        capsys.readouterr().out
    assert cli("restore", src, tmp_path / "o.tif", "--psf", psf, "--max-iters", "2") == 0
    assert f"PSF: the fits used the 3-D PSF's in-focus plane, slice by slice ({whole})" in \
        capsys.readouterr().err
    assert cli("restore", plane, tmp_path / "p.tif", "--psf", psf, "--max-iters", "2") == 0
    assert "PSF: the fits used the 3-D PSF's in-focus plane (the input is one plane)" in \
        capsys.readouterr().err
    # Used whole in 3-D, or a 2-D PSF: nothing to say.
    assert cli("restore", src, tmp_path / "v.tif", "--psf", psf, "--stack-mode", "3d",
               "--max-iters", "2") == 0
    assert "PSF:" not in capsys.readouterr().err
