"""TIFF physical metadata (pixel size, unit, Z spacing, frame interval) and the run's record:
read from OME, ImageJ/Fiji and our own files, and written so that ImageJ/Fiji reads them."""

import numpy as np
import pytest
import tifffile

from napari_dip import _io


def _ome_stack(path, **sizes):
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint16), ome=True,
                     metadata={"axes": "ZYX", **sizes})


@pytest.fixture
def ome_sizes(tmp_path):
    """An OME-TIFF z-stack: X in the default unit (µm), Y and Z in nm, the time step in ms."""
    path = tmp_path / "z.ome.tif"
    _ome_stack(path, PhysicalSizeX=0.25, PhysicalSizeY=500, PhysicalSizeYUnit="nm",
               PhysicalSizeZ=1500, PhysicalSizeZUnit="nm", TimeIncrement=200,
               TimeIncrementUnit="ms")
    return path


def test_an_ome_tiff_gives_its_pixel_size_z_spacing_and_time_step(ome_sizes):
    image = _io.read_image(ome_sizes)
    assert image.unit == "µm"  # one unit for X, Y and Z: X's
    assert image.resolution == pytest.approx((4.0, 2.0))
    assert image.z_spacing == pytest.approx(1.5)
    assert image.frame_interval == pytest.approx(0.2)  # seconds


def test_an_ome_tiff_read_lazily_has_the_same_sizes(ome_sizes):
    pytest.importorskip("dask")
    pytest.importorskip("zarr")
    from napari_dip._lazy_io import open_input

    image = open_input(ome_sizes)
    try:
        assert image.scale == pytest.approx({"X": 0.25, "Y": 0.5, "Z": 1.5, "T": 0.2})
        assert image.units == {"X": "µm", "Y": "µm", "Z": "µm", "T": "s"}
    finally:
        image.close()


@pytest.mark.parametrize("unit, name", [("micron", "micron"), ("\\u00B5m", "µm"), ("um", "um")])
def test_a_fiji_hyperstack_gives_its_scale(tmp_path, unit, name):
    """As Fiji writes it: pixels per unit in X/YResolution with no ResolutionUnit, the unit
    (non-ASCII letters escaped), the Z spacing and the frame interval in the description."""
    src = tmp_path / "fiji.tif"
    tifffile.imwrite(src, np.zeros((2, 3, 8, 8), np.uint16), imagej=True, resolution=(2.0, 4.0),
                     metadata={"axes": "TZYX", "unit": unit, "spacing": 0.75, "finterval": 1.5})
    image = _io.read_image(src)
    assert image.unit == name and image.resolution == pytest.approx((2.0, 4.0))
    assert image.z_spacing == 0.75 and image.frame_interval == 1.5


def test_a_fiji_frame_interval_in_another_time_unit_is_read_in_seconds(tmp_path):
    src = tmp_path / "fiji.tif"
    tifffile.imwrite(src, np.zeros((2, 8, 8), np.uint8), imagej=True,
                     metadata={"axes": "TYX", "finterval": 250, "tunit": "ms"})
    assert _io.read_image(src).frame_interval == pytest.approx(0.25)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_outputs_imagej_can_hold_are_imagej_hyperstacks(tmp_path, dtype):
    out = tmp_path / "o.tif"
    data = np.arange(2 * 3 * 8 * 8).reshape(2, 3, 8, 8).astype(dtype)
    _io.write_image(out, _io.ImageFile(data, "TZYX", (4.0, 2.0), "µm", 0.5, 1.5),
                    {"seed": 7, "path": "C:\\data"})
    with tifffile.TiffFile(out) as tif:
        meta, page = tif.imagej_metadata, tif.pages[0]
        assert tif.series[0].axes == "TZYX" and (meta["frames"], meta["slices"]) == (2, 3)
        assert meta["unit"] == "\\u00B5m"  # ASCII, as Fiji writes it
        assert meta["spacing"] == 0.5 and meta["finterval"] == 1.5
        # ImageJ's own convention: pixels per unit, and no TIFF unit for a micrometre
        assert page.get_resolution() == pytest.approx((4.0, 2.0))
        assert page.resolutionunit == tifffile.RESUNIT.NONE
        np.testing.assert_array_equal(tif.asarray(), data)
    assert _io.read_record(out) == {"seed": 7, "path": "C:\\data"}
    back = _io.read_image(out)
    assert back.unit == "µm" and back.resolution == pytest.approx((4.0, 2.0))
    assert back.z_spacing == 0.5 and back.frame_interval == 1.5


def test_an_8_bit_rgb_output_is_an_imagej_rgb_image(tmp_path):
    out = tmp_path / "o.tif"
    data = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    _io.write_image(out, _io.ImageFile(data, "YXS", (2.0, 2.0), "um"), {"seed": 1})
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "YXS"
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
        np.testing.assert_array_equal(tif.asarray(), data)
    assert _io.read_record(out) == {"seed": 1}


@pytest.mark.parametrize("dtype, shape, axes", [
    ("float64", (3, 8, 8), "ZYX"),  # dtypes ImageJ has not
    ("int32", (3, 8, 8), "ZYX"),
    ("uint16", (3, 8, 8, 3), "ZYXS"),  # RGB is 8-bit in ImageJ
    ("uint8", (8, 8, 4), "YXS"),  # and has no alpha
    ("uint16", (2, 3, 8, 8), "CZYX"),  # axes out of ImageJ's T, Z, C order
    ("uint16", (2, 3, 8, 8), "QZYX"),  # an axis ImageJ has not
    ("uint16", (1, 3, 8, 8), "TZYX"),  # an axis of length 1, which ImageJ would drop
])
def test_other_outputs_keep_their_sizes_and_record_in_tifffile_metadata(tmp_path, dtype, shape,
                                                                        axes):
    out = tmp_path / "o.tif"
    data = np.ones(shape, dtype)
    _io.write_image(out, _io.ImageFile(data, axes, (4.0, 2.0), "um", 0.5, 1.5), {"seed": 3})
    with tifffile.TiffFile(out) as tif:
        assert not tif.is_imagej and tif.series[0].axes == axes
        # a standard TIFF unit, for readers that know only the tags
        assert tif.pages[0].resolutionunit == tifffile.RESUNIT.CENTIMETER
    assert _io.read_record(out) == {"seed": 3}
    back = _io.read_image(out)
    assert back.unit == "um" and back.resolution == pytest.approx((4.0, 2.0))
    assert back.z_spacing == 0.5 and back.frame_interval == 1.5


def test_an_output_too_large_for_a_classic_tiff_is_a_bigtiff_not_an_imagej_file():
    small = _io.tiff_options("ZYX", (3, 64, 64), "uint16")
    big = _io.tiff_options("ZYX", (40_000, 256, 256), "uint16")  # 5.2 GB
    assert small["imagej"] and not small["bigtiff"]
    assert big["bigtiff"] and not big["imagej"]


def test_a_slice_by_slice_tiff_is_an_imagej_hyperstack_with_the_record_added_last(tmp_path):
    from napari_dip._lazy_io import TiffSink

    out = tmp_path / "o.tif"
    sizes = dict(resolution=(4.0, 4.0), unit="um", z_spacing=2.0, frame_interval=None)
    sink = TiffSink(out, (3, 8, 8), "uint16", "ZYX", sizes, resume=False)
    sink.write({"Z": 1}, "YX", np.full((8, 8), 5, np.uint16))
    sink.finish({"seed": 1, "stop_reason": "user"}, complete=False)  # interrupted ...
    sink = TiffSink(out, (3, 8, 8), "uint16", "ZYX", sizes, resume=True)  # ... and resumed
    sink.write({"Z": 2}, "YX", np.full((8, 8), 6, np.uint16))
    sink.finish({"seed": 1, "stop_reason": "cap"}, complete=True)
    with tifffile.TiffFile(out) as tif:
        assert tif.imagej_metadata["spacing"] == 2.0 and tif.imagej_metadata["unit"] == "um"
        assert tif.pages[0].imagej_description.count("napari_dip=") == 1
        assert tif.asarray()[1:, 0, 0].tolist() == [5, 6]
    assert _io.read_record(out) == {"seed": 1, "stop_reason": "cap"}
