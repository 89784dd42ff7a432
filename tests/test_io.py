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
