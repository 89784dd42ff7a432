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
        for mode in ("warm", "3d"):  # warm: one 2-D fit per slice, planned in memory
            assert cli("restore", src, tmp_path / "o.tif", "--stack-mode", mode,
                       "--dry-run") == 0
            text = capsys.readouterr().out
            memory[name, mode] = int(re.search(r"memory: about (\d+) MiB", text).group(1))
            if mode == "3d":
                assert f"stack mode 3d, one 3-D fit of the whole {name}x40x40 stack" in text
                assert "voxel size (Z, Y, X) 1 x 0.25 x 0.25" in text
            else:
                assert f"{name} plane(s) of 40x40" in text
    assert not (tmp_path / "o.tif").exists()
    assert memory["3", "3d"] > memory["3", "warm"] == memory["6", "warm"]
    assert memory["6", "3d"] > memory["3", "3d"]  # one fit over Z x Y x X: grows with Z
    assert cli("restore", src, tmp_path / "o.tif", "--stack-mode", "3d", "--task", "sr",
               "--dry-run") == 2
    assert "stack mode '3d' restores tasks denoise and deconvolve" in capsys.readouterr().err


def test_whole_stack_modes_refuse_unit_by_unit_options(tmp_path, cli, capsys, load):
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, load("nuclei3d_3x40x40_uint16.tif"), metadata={"axes": "ZYX"})
    assert cli("restore", src, tmp_path / "o.tif", "--stack-mode", "warm", "--tile", "32",
               "--max-iters", "1") == 2
    assert "cannot be combined with several inputs, --tile" in capsys.readouterr().err


def test_3d_needs_a_single_stack_axis(tmp_path, cli, capsys):
    src = tmp_path / "tz.tif"
    tifffile.imwrite(src, np.random.default_rng(0).integers(0, 200, (2, 3, 32, 32), np.uint16),
                     metadata={"axes": "TZYX"})
    assert cli("restore", src, tmp_path / "o.tif", "--stack-mode", "3d", "--max-iters", "1") == 2
    assert "one Z axis" in capsys.readouterr().err
