"""Inputs read lazily and outputs written slice by slice, for runs larger than memory.

:func:`open_input` gives a :class:`LazyImage` (a dask array plus its axes, pixel sizes and
channel names) for OME-Zarr (:mod:`._zarr_io`), TIFF (read through tifffile's zarr view, one
page at a time) and the small PNG/JPEG/BMP formats. :func:`open_output` gives a sink that
writes each finished slice where it belongs: into an OME-Zarr store, into a TIFF laid out on
disk from the start (so a slice is on disk as soon as it is written), or, for PNG/JPEG/BMP,
into memory, written at the end. Imports dask, zarr and tifffile only when called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _io


def is_zarr(path) -> bool:
    return str(path).rstrip("/\\").lower().endswith(".zarr")


@dataclass
class LazyImage:
    """An image whose pixels stay on disk until a slice is asked for."""

    data: object  # a dask array
    axes: str  # one letter per axis (T, C, Z, Y, X, S, ...)
    path: str
    scale: dict = field(default_factory=dict)  # letter -> pixel size (or time step)
    units: dict = field(default_factory=dict)  # letter -> unit name
    channel_names: list | None = None
    omero: dict | None = None  # an OME-Zarr input's channel metadata, copied to the output
    closer: object = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    def calibration(self, factor: int = 1) -> dict:
        """The physical sizes as :meth:`._io.ImageFile.calibration` gives them, for a TIFF
        (one unit for X, Y and Z; ``factor``: a super-resolution's)."""
        resolution, unit = None, self.units.get("X") or self.units.get("Y")
        if "X" in self.scale and "Y" in self.scale:
            resolution = (factor / self.scale["X"], factor / self.scale["Y"])
        z, z_unit = self.scale.get("Z"), self.units.get("Z")
        if resolution is None:
            unit = z_unit if z is not None else None
        elif z is not None and z_unit is not None and unit is not None:
            z = _io._convert(z, z_unit, unit)
        t, t_unit = self.scale.get("T"), self.units.get("T")
        # a time axis without a unit (OME-Zarr's default scale of 1) gives no frame interval
        frame_interval = _io._seconds(t, t_unit) if t_unit is not None else None
        return {"resolution": resolution, "unit": unit, "z_spacing": z,
                "frame_interval": frame_interval}

    def close(self) -> None:
        if self.closer is not None:
            self.closer.close()
            self.closer = None


def _require(module: str, extra: str = "big"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"this needs the Python package {module.split('.')[0]!r}; install "
                         f"it with: pip install \"napari-dip[{extra}]\"") from exc


def open_input(path, role: str = "input") -> LazyImage:
    """Open ``path`` without reading its pixels (OME-Zarr, TIFF; PNG/JPEG/BMP are small and
    read at once)."""
    path = Path(path)
    if is_zarr(path):
        from ._zarr_io import read_ome_zarr

        return read_ome_zarr(path, role)
    da = _require("dask.array")
    if not path.is_file():
        raise FileNotFoundError(f"{role} file {str(path)!r} does not exist")
    if path.suffix.lower() not in _io.TIFF_SUFFIXES:
        small = _io.read_image(path, role)
        return LazyImage(da.from_array(small.data), small.axes, str(path))
    import tifffile
    import zarr

    try:
        tif = tifffile.TiffFile(path)
    except tifffile.TiffFileError as exc:
        raise ValueError(f"{role} file {str(path)!r} is not a readable TIFF file ({exc})") from exc
    series = tif.series[0]
    data = da.from_zarr(zarr.open(series.aszarr(), mode="r"))
    cal = _io.tiff_calibration(tif)
    scale, units = {}, {}
    if cal["resolution"] is not None:
        scale = {"X": 1 / cal["resolution"][0], "Y": 1 / cal["resolution"][1]}
    if cal["z_spacing"] is not None and "Z" in series.axes:
        scale["Z"] = cal["z_spacing"]
    if cal["unit"] is not None:
        units = dict.fromkeys(scale, cal["unit"])
    if cal["frame_interval"] is not None:
        scale["T"], units["T"] = cal["frame_interval"], "s"
    return LazyImage(data, series.axes, str(path), scale, units, closer=tif)


def place(slice_coords: dict, plane_letters: str, out_axes: str):
    """Index into an output of axes ``out_axes`` for one slice (``slice_coords``: stack letter
    -> index), and the transpose that brings a plane of ``plane_letters`` into its order."""
    index = tuple(slice_coords[a] if a in slice_coords else slice(None) for a in out_axes)
    kept = [a for a in out_axes if a not in slice_coords]
    return index, tuple(plane_letters.index(a) for a in kept)


class _Sink:
    """Where finished slices go: ``write(index, plane)`` with ``index``/transpose from
    :func:`place`; ``finish(record)`` once the run ends."""

    axes: str

    def write(self, coords: dict, plane_letters: str, plane: np.ndarray) -> None:
        index, order = place(coords, plane_letters, self.axes)
        self._array()[index] = np.transpose(plane, order)
        self._flush()

    def _array(self):
        raise NotImplementedError

    def _flush(self) -> None:
        pass

    def finish(self, record: dict, complete: bool) -> None:
        pass


class TiffSink(_Sink):
    """An uncompressed TIFF laid out in full at the start, written in place slice by slice;
    ``calibration``: the physical sizes, as :meth:`LazyImage.calibration` gives them."""

    def __init__(self, path: Path, shape, dtype, axes: str, calibration: dict, resume: bool):
        import tifffile

        self.path, self.axes = Path(path), axes
        if resume and self.path.is_file():
            self.array = tifffile.memmap(self.path, mode="r+")
            if self.array.shape != tuple(shape) or self.array.dtype != np.dtype(dtype):
                raise ValueError(f"output {str(path)!r} holds a {self.array.dtype} array of "
                                 f"{self.array.shape}, not the {np.dtype(dtype)} {tuple(shape)} "
                                 "this run writes; use --restart to start it again")
            return
        self.array = tifffile.memmap(self.path, shape=tuple(shape), dtype=dtype,
                                     **_io.tiff_options(axes, tuple(shape), dtype,
                                                        **calibration))

    def _array(self):
        return self.array

    def _flush(self) -> None:
        self.array.flush()

    def finish(self, record: dict, complete: bool) -> None:
        self.array.flush()
        del self.array
        _io.add_record(self.path, record)


class MemorySink(_Sink):
    """PNG/JPEG/BMP (and anything small): kept in memory, written at the end."""

    def __init__(self, path: Path, shape, dtype, axes: str, calibration: dict):
        self.path, self.axes = Path(path), axes
        self.array = np.zeros(shape, dtype)
        self.calibration = calibration

    def _array(self):
        return self.array

    def finish(self, record: dict, complete: bool) -> None:
        _io.write_image(self.path, _io.ImageFile(self.array, self.axes, **self.calibration),
                        record)


def check_output(path, dtype, shape, axes) -> None:
    """Refuse before any work an output that cannot hold the result (format, folder)."""
    path = Path(path)
    if is_zarr(path):
        if not path.parent.exists():
            raise FileNotFoundError(f"the output folder {str(path.parent)!r} does not exist")
        from ._zarr_io import ngff_axes

        ngff_axes(axes, str(path))
        return
    _io.check_output_path(path, dtype, tuple(shape), axes)
