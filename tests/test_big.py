"""Large runs from the command line: OME-Zarr in and out, resume, dask workers, batches."""

import json
import re

import numpy as np
import pytest
import tifffile

pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")
pytest.importorskip("distributed")

import zarr  # noqa: E402
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Reader  # noqa: E402
from ome_zarr.writer import add_metadata, write_multiscales_metadata  # noqa: E402

import napari_dip.engine.units as units  # noqa: E402
from napari_dip._cli import main  # noqa: E402
from napari_dip._io import read_record  # noqa: E402

FAST = ["--quiet", "--device", "cpu", "--preset", "light", "--seed", "0", "--max-iters", "3"]


def cli(*args):
    return main([str(a) for a in args] + FAST)


def read_zarr(path):
    node = list(Reader(parse_url(str(path)))())[0]
    return np.asarray(node.data[0]), node.metadata


@pytest.fixture
def ome_stack(tmp_path, load):
    """A (C=2, Z=3, 40, 40) uint16 OME-Zarr with pixel sizes, units and channel names."""
    nuclei = load("nuclei3d_3x40x40_uint16.tif")
    data = np.stack([nuclei, (nuclei // 2 + 50).astype(np.uint16)])
    path = tmp_path / "in.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", data=data, chunks=(1, 1, 40, 40))
    write_multiscales_metadata(group, [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, 2.0, 0.25, 0.25]}]}], axes=[
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"}])
    add_metadata(group, {"omero": {"channels": [{"label": "DAPI", "color": "0000FF"},
                                                {"label": "GFP", "color": "00FF00"}]}})
    return path, data


def test_ome_zarr_metadata_round_trips_and_the_input_is_untouched(tmp_path, ome_stack):
    src, data = ome_stack
    out = tmp_path / "out.zarr"
    assert cli("restore", src, out) == 0
    restored, meta = read_zarr(out)
    _, meta_in = read_zarr(src)
    assert restored.shape == data.shape and restored.dtype == np.uint16
    assert not np.array_equal(restored, data)
    assert meta["axes"] == meta_in["axes"]
    assert meta["coordinateTransformations"][0] == [
        {"type": "scale", "scale": [1.0, 2.0, 0.25, 0.25]}]
    assert meta["channel_names"] == ["DAPI", "GFP"]
    record = zarr.open_group(str(out), mode="r").attrs["napari_dip"]
    assert record["seed"] == 0 and len(record["slices"]) == 3 and record["axes"] == "CZYX"
    np.testing.assert_array_equal(read_zarr(src)[0], data)
    # ... and into a TIFF: the axes, and the pixel size with its unit.
    tif = tmp_path / "out.tif"
    assert cli("restore", src, tif) == 0
    with tifffile.TiffFile(tif) as f:
        assert f.series[0].axes == "CZYX"
        np.testing.assert_array_equal(f.asarray(), restored)
    from napari_dip._io import read_image

    back = read_image(tif)
    assert back.unit == "micrometer" and back.resolution == pytest.approx((4.0, 4.0))
    assert back.z_spacing == 2.0  # ... and the Z spacing


def test_a_tiff_stack_into_ome_zarr_keeps_its_pixel_size_and_z_spacing(tmp_path, load):
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, load("nuclei3d_3x40x40_uint16.tif"), imagej=True,
                     resolution=(4.0, 4.0), metadata={"axes": "ZYX", "unit": "um",
                                                      "spacing": 2.5})
    out = tmp_path / "out.zarr"
    assert cli("restore", src, out, "--task", "sr", "--factor", "2") == 0
    restored, meta = read_zarr(out)
    assert restored.shape == (3, 80, 80)
    assert [a["name"] for a in meta["axes"]] == ["z", "y", "x"]
    assert meta["axes"][0]["unit"] == meta["axes"][1]["unit"] == "micrometer"
    assert meta["coordinateTransformations"][0][0]["scale"] == [2.5, 0.125, 0.125]


def _killed_at_unit(monkeypatch, n: int) -> list:
    """Make the run die at its ``n``-th unit, as if killed while fitting; the names of the
    units started are collected in the list returned."""
    calls, real = [], units.run_unit

    def dies(*args, **kwargs):
        calls.append(kwargs["name"])
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(units, "run_unit", dies)
    return calls


def test_an_interrupted_run_resumes_without_redoing_finished_units(tmp_path, ome_stack,
                                                                   monkeypatch, capsys):
    src, _ = ome_stack
    real = units.run_unit
    calls = _killed_at_unit(monkeypatch, 3)
    out = tmp_path / "out.zarr"
    assert cli("restore", src, out, "--tile", "24") == 130  # 3 slices x 4 tiles
    assert "run the same command to resume" in capsys.readouterr().err
    first = list(calls)
    calls.clear()
    monkeypatch.setattr(units, "run_unit", real)
    counted = []
    monkeypatch.setattr(units, "run_unit", lambda *a, **k: counted.append(1) or real(*a, **k))
    real_map = units.shared_map

    def no_pass(*args, **kwargs):
        raise AssertionError("the resume read the whole input again")

    # The intensity map and the shared choices come from the ledger, not from a new pass.
    monkeypatch.setattr(units, "shared_map", no_pass)
    assert cli("restore", src, out, "--tile", "24") == 0
    monkeypatch.setattr(units, "shared_map", real_map)
    assert len(first) == 3 and len(counted) == 12 - 2  # the two finished tiles are kept
    resumed = read_zarr(out)[0]
    # The same run without an interruption gives the same image and choices.
    again = tmp_path / "again.zarr"
    assert cli("restore", src, again, "--tile", "24") == 0
    np.testing.assert_array_equal(resumed, read_zarr(again)[0])
    record = zarr.open_group(str(out), mode="r").attrs["napari_dip"]
    assert record["noise_model"] == zarr.open_group(str(again), mode="r").attrs[
        "napari_dip"]["noise_model"]
    assert "shared_choices" not in record  # the record says them once, as noise_model
    assert record["stop_reason"] != "user" and record["tile"] == 24
    assert [len(s["tiles"]) for s in record["slices"]] == [4, 4, 4]


def test_a_resumed_run_with_other_settings_is_refused_and_says_which(tmp_path, ome_stack,
                                                                     monkeypatch, capsys):
    src, _ = ome_stack
    out = tmp_path / "out.zarr"
    real = units.run_unit

    def stop_after_one(*args, **kwargs):
        if stop_after_one.n:
            raise KeyboardInterrupt
        stop_after_one.n += 1
        return real(*args, **kwargs)

    stop_after_one.n = 0
    monkeypatch.setattr(units, "run_unit", stop_after_one)
    assert cli("restore", src, out) == 130
    monkeypatch.setattr(units, "run_unit", real)
    assert main(["restore", str(src), str(out), "--quiet", "--device", "cpu", "--preset",
                 "light", "--max-iters", "4"]) == 2
    err = capsys.readouterr().err
    assert "max_iters: 3 -> 4" in err and "--restart" in err
    # Without --seed, the resumed run keeps the seed it started with.
    assert main(["restore", str(src), str(out), "--quiet", "--device", "cpu", "--preset",
                 "light", "--max-iters", "3"]) == 0
    assert zarr.open_group(str(out), mode="r").attrs["napari_dip"]["seed"] == 0
    assert cli("restore", src, out, "--max-iters", "2", "--restart") == 0


def test_a_local_cluster_of_two_workers_gives_the_serial_result(tmp_path, ome_stack):
    src, _ = ome_stack
    serial, parallel = tmp_path / "serial.zarr", tmp_path / "parallel.zarr"
    # Workers fit units independently: slice by slice, as the serial run does when asked.
    assert cli("restore", src, serial, "--stack-mode", "slices") == 0
    assert cli("restore", src, parallel, "--workers", "2") == 0
    np.testing.assert_array_equal(read_zarr(serial)[0], read_zarr(parallel)[0])
    records = [zarr.open_group(str(p), mode="r").attrs["napari_dip"] for p in (serial,
                                                                              parallel)]
    assert records[1]["stack_mode"] == {"mode": "slices", "requested": None,
                                        "reason": "dask workers restore units independently"}
    assert [s["best_iteration"] for s in records[0]["slices"]] == \
        [s["best_iteration"] for s in records[1]["slices"]]


def test_a_batch_on_a_scheduler_retries_a_failed_unit_and_keeps_the_others(
        tmp_path, load, monkeypatch, capsys):
    from distributed import LocalCluster

    folder = tmp_path / "in"
    folder.mkdir()
    stack = load("nuclei3d_3x40x40_uint16.tif")
    for name, data in (("a.tif", stack[:2]), ("b.tif", stack[1:])):
        tifffile.imwrite(folder / name, data, metadata={"axes": "ZYX"})
    real, failed = units.run_unit, tmp_path / "failed-once"

    def flaky(*args, **kwargs):  # the first try of one unit dies, as a lost worker would
        # (a file, not a variable: the task reaches the worker as a copy of this function)
        if kwargs["name"].endswith("b.tif' slice (1,)") and not failed.exists():
            failed.touch()
            raise RuntimeError("worker lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(units, "run_unit", flaky)
    out = tmp_path / "out"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        assert cli("restore", folder / "*.tif", out, "--scheduler",
                   cluster.scheduler_address) == 0
    assert failed.exists()
    for name, data in (("a.tif", stack[:2]), ("b.tif", stack[1:])):
        with tifffile.TiffFile(out / name) as f:
            assert f.series[0].shape == data.shape
            record = read_record(out / name)
            assert record["slices_done"] == [0, 1]
    assert not (out / "a.tif.napari-dip").exists()  # finished: the file holds the record
    assert "2/2 file(s) restored" in capsys.readouterr().err


def test_batch_needs_an_output_folder_that_is_not_the_input(tmp_path, load, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", load("nuclei_64_uint16.tif"))
    assert cli("restore", folder, folder) == 2
    assert "is the input's" in capsys.readouterr().err
    assert cli("restore", folder, tmp_path / "x.tif", folder / "a.tif") == 2


def test_the_big_data_modules_import_neither_torch_nor_dask():
    import subprocess
    import sys

    code = ("import sys, napari_dip._batch_cli, napari_dip._lazy_io, napari_dip._ledger, "
            "napari_dip.engine.units, napari_dip.engine.tiles; "
            "print(sorted(m for m in ('torch', 'dask', 'zarr', 'distributed') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_ctrl_c_keeps_the_running_units_best_so_far_and_the_rerun_redoes_only_it(
        tmp_path, ome_stack, monkeypatch):
    import os
    import signal

    src, _ = ome_stack
    real, names, pressed = units.run_unit, [], []

    def ctrl_c_during_the_second(*args, **kwargs):
        names.append(kwargs["name"])
        if len(names) == 2 and not pressed:
            pressed.append(1)
            os.kill(os.getpid(), signal.SIGINT)  # once: stop after this step, keep the best
        return real(*args, **kwargs)

    monkeypatch.setattr(units, "run_unit", ctrl_c_during_the_second)
    out = tmp_path / "out.zarr"
    assert cli("restore", src, out) == 130
    statuses = {k: json.loads(p.read_text())["status"] for k, p in (
        (p.stem, p) for p in (out / "napari_dip" / "units").glob("*.json"))}
    assert statuses == {"s000000": "done", "s000001": "partial"}
    assert read_zarr(out)[0][:, 1].any()  # the stopped slice's best so far is written
    names.clear()
    assert cli("restore", src, out) == 0
    assert [n.split()[-1] for n in names] == ["(1,)", "(2,)"]


def test_a_dry_run_unit_by_unit_says_the_network_and_the_memory_of_a_fit(tmp_path, ome_stack,
                                                                         capsys):
    src, _ = ome_stack
    out = tmp_path / "out.zarr"
    assert cli("restore", src, out, "--dry-run") == 0
    text = capsys.readouterr().out
    assert "3 slice(s) of 40x40" in text  # the unit-by-unit plan ...
    assert "network: preset 'light'" in text  # ... with what one fit needs, as in memory
    assert re.search(r"memory: about \d+ MiB per fit step", text)
    assert re.search(r"time: ~[\d.e-]+ s/iteration · .* at most 3 per fit, 3 fits: ≤ ", text)
    assert not out.exists()


def _zyx_tiff(path, data):
    tifffile.imwrite(path, data, imagej=True, resolution=(4.0, 4.0),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 1.0})
    return path


def test_a_tiff_stack_unit_by_unit_is_warm_started_as_in_memory(tmp_path, load, capsys):
    """Alike slices go warm unit by unit too (the default a stack in memory gets), with the
    result of the in-memory run; unlike ones go slice by slice; the dry run says so."""
    from napari_dip.engine import restore_stack

    stack = load("nuclei3d_3x40x40_uint16.tif")
    src, out = _zyx_tiff(tmp_path / "stack.tif", stack), tmp_path / "out.tif"
    assert cli("restore", src, out, "--dry-run") == 0
    assert "stack mode: warm when neighbouring slices are alike" in capsys.readouterr().out
    assert cli("restore", src, out, "--output-dtype", "float32") == 0
    assert "stack mode: warm (auto: neighbouring slices correlate" in capsys.readouterr().err
    record = read_record(out)
    assert record["stack_mode"]["mode"] == "warm" and record["stack_mode"]["requested"] is None
    assert record["stack_mode"]["neighbour_correlation"] >= 0.5
    assert [p["warm_start"] for e in record["slices"] for p in e["planes"]] == [False, True, True]
    memory = restore_stack(stack, seed=0, preset="light", device="cpu", max_iters=3,
                           as_float=True)
    assert memory.record["stack_mode"] == record["stack_mode"]
    np.testing.assert_array_equal(tifffile.imread(out), memory.image)
    np.testing.assert_array_equal(tifffile.imread(src), stack)  # the input is untouched

    noise = np.random.default_rng(0).integers(0, 1000, (3, 40, 40)).astype(np.uint16)
    unlike = tmp_path / "unlike.tif"
    assert cli("restore", _zyx_tiff(tmp_path / "noise.tif", noise), unlike) == 0
    record = read_record(unlike)
    assert record["stack_mode"]["mode"] == "slices"
    assert all("warm_start" not in p for e in record["slices"] for p in e["planes"])


def test_an_interrupted_warm_stack_resumes_from_the_slice_before(tmp_path, load,
                                                                  monkeypatch):
    src = _zyx_tiff(tmp_path / "stack.tif", load("nuclei3d_3x40x40_uint16.tif"))
    real = units.run_unit
    _killed_at_unit(monkeypatch, 3)
    out = tmp_path / "out.tif"
    assert cli("restore", src, out, "--stack-mode", "warm") == 130
    assert (tmp_path / "out.tif.napari-dip" / "warm_states.pt").is_file()
    monkeypatch.setattr(units, "run_unit", real)
    real_map = units.shared_map
    monkeypatch.setattr(units, "shared_map", lambda *a, **k: pytest.fail("read again"))
    assert cli("restore", src, out, "--stack-mode", "warm") == 0
    monkeypatch.setattr(units, "shared_map", real_map)
    record = read_record(out)
    assert [p["warm_start"] for e in record["slices"] for p in e["planes"]] == [False, True, True]
    assert not (tmp_path / "out.tif.napari-dip").exists()  # finished: nothing left to resume
    again = tmp_path / "again.tif"
    assert cli("restore", src, again, "--stack-mode", "warm") == 0
    np.testing.assert_array_equal(tifffile.imread(out), tifffile.imread(again))


def test_a_warm_start_is_refused_where_units_are_fitted_independently(tmp_path, load, capsys):
    src = _zyx_tiff(tmp_path / "stack.tif", load("nuclei3d_3x40x40_uint16.tif"))
    for extra, why in ((["--tile", "24"], "its slices are restored in tiles"),
                       (["--batch", "2"], "a batch of 2 units fitted together"),
                       (["--workers", "1"], "dask workers restore units independently")):
        assert cli("restore", src, tmp_path / "o.tif", "--stack-mode", "warm", *extra) == 2
        err = capsys.readouterr().err
        assert "--stack-mode warm starts each slice from the one before" in err and why in err
    assert not (tmp_path / "o.tif").exists()
    # Tiles without asking: slice by slice, and the record says why.
    assert cli("restore", src, tmp_path / "t.tif", "--tile", "24") == 0
    assert read_record(tmp_path / "t.tif")["stack_mode"]["reason"] == \
        "its slices are restored in tiles"


def test_a_dim_tiff_stack_unit_by_unit_is_restored_into_float32(tmp_path, load, capsys,
                                                               monkeypatch):
    nuclei = load("nuclei3d_3x40x40_uint16.tif").astype(float)
    lam = (nuclei - nuclei.min()) / (nuclei.max() - nuclei.min()) * 12 + 0.5
    src = _zyx_tiff(tmp_path / "dim.tif",
                    np.random.default_rng(0).poisson(lam).astype(np.uint16))
    out = tmp_path / "out.tif"
    assert cli("restore", src, out, "--dry-run") == 0
    assert "or float32 if the input spans fewer than 64 integer levels" in \
        capsys.readouterr().out
    assert cli("restore", src, out) == 0
    assert "result type: float32 (auto: the input spans only" in capsys.readouterr().err
    back = tifffile.imread(out)
    assert back.dtype == np.float32 and back.shape == lam.shape
    record = read_record(out)
    assert record["output_dtype"] == "float32" and record["result_type"]["input_levels"] < 64
    # Interrupted and resumed: the same type (kept in the ledger) and the same image.
    real = units.run_unit
    _killed_at_unit(monkeypatch, 2)
    resumed = tmp_path / "resumed.tif"
    assert cli("restore", src, resumed) == 130
    monkeypatch.setattr(units, "run_unit", real)
    assert cli("restore", src, resumed) == 0
    np.testing.assert_array_equal(tifffile.imread(resumed), back)


def test_invert_mask_unit_by_unit_is_recorded_and_fills_the_unkept_pixels(tmp_path, load):
    stack = load("nuclei3d_3x40x40_uint16.tif")
    src = _zyx_tiff(tmp_path / "stack.tif", stack)
    keep = np.ones((40, 40), np.uint8)
    keep[10:14, :] = 0  # a scratch: the only pixels not kept
    tifffile.imwrite(tmp_path / "keep.tif", keep)
    out = tmp_path / "out.tif"
    assert cli("restore", src, out, "--task", "inpaint", "--mask", tmp_path / "keep.tif",
               "--invert-mask") == 0
    record = read_record(out)
    assert record["mask"]["inverted"] is True
    back = tifffile.imread(out)
    np.testing.assert_array_equal(back[:, keep > 0], stack[:, keep > 0])  # kept exactly
    assert not np.array_equal(back[:, 10:14], stack[:, 10:14])  # the scratch is filled
