"""OME-Zarr images: read lazily with their axes, pixel sizes and channel names; written one
slice at a time with the same metadata (ome-zarr-py writes the OME-NGFF metadata).

A path ending in ``.zarr`` is OME-Zarr. The output holds one resolution level (``0``); its
record of the run is the group attribute ``napari_dip``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._lazy_io import LazyImage, _require, _Sink

#: Axis letters and their OME-NGFF type; any other letter is an axis of custom type.
_TYPES = {"T": "time", "C": "channel", "S": "channel", "Z": "space", "Y": "space", "X": "space"}
#: OME-NGFF wants time, then channel (or custom), then space axes.
_RANK = {"T": 0, "C": 1, "S": 1, "Z": 3, "Y": 4, "X": 5}
#: Unit names as TIFF metadata writes them, and the OME-NGFF (UDUNITS-2) names.
_NGFF_UNITS = {"um": "micrometer", "µm": "micrometer", "μm": "micrometer",
               "micron": "micrometer", "nm": "nanometer", "mm": "millimeter",
               "cm": "centimeter", "m": "meter", "inch": "inch", "s": "second",
               "ms": "millisecond"}
#: Chunk side along Y and X (a slice is one chunk along every other axis but the channels).
CHUNK_YX = 1024


def ngff_axes(letters: str, path: str = "the output") -> str:
    """The output's axis letters in OME-NGFF order (time, channel, custom, Z, Y, X)."""
    letters = letters.upper()
    if not 2 <= len(letters) <= 5:
        raise ValueError(f"{path}: OME-Zarr holds 2 to 5 axes, this image has {len(letters)} "
                         f"({letters}); write a TIFF instead")
    return "".join(sorted(letters, key=lambda a: _RANK.get(a, 2)))


def _letter(axis) -> tuple[str, dict]:
    axis = {"name": axis} if isinstance(axis, str) else dict(axis)
    name = str(axis.get("name", "?"))
    letter = "C" if axis.get("type") == "channel" else name[:1].upper()
    return letter, axis


def _attrs(path: Path) -> dict:
    import zarr

    attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    return attrs.get("ome", attrs)  # OME-NGFF 0.5 nests its metadata under "ome"


def read_ome_zarr(path, role: str = "input") -> LazyImage:
    """The full-resolution level of an OME-Zarr image (or a plain zarr array) as dask."""
    _require("zarr")
    _require("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    path = Path(path)
    location = parse_url(str(path), mode="r")
    if location is None:
        raise FileNotFoundError(f"{role} {str(path)!r} does not exist or is not a zarr store")
    nodes = list(Reader(location)())
    if not nodes or not nodes[0].data:
        raise ValueError(f"{role} {str(path)!r} holds no image (an OME-Zarr image group with "
                         "'multiscales' metadata, or a zarr array)")
    node = nodes[0]
    data = node.data[0]
    meta = node.metadata
    axes_meta = meta.get("axes")
    if not axes_meta:  # a bare array: its axes are unknown, --axes must name them
        return LazyImage(data, "Q" * (data.ndim - 2) + "YX", str(path))
    letters, scale, units = "", {}, {}
    transforms = (meta.get("coordinateTransformations") or [[]])[0] or []
    sizes = next((t["scale"] for t in transforms if t.get("type") == "scale"), None)
    for i, axis in enumerate(axes_meta):
        letter, axis = _letter(axis)
        if letter in letters:
            raise ValueError(f"{role} {str(path)!r}: two axes read as {letter!r} "
                             f"({[_letter(a)[1].get('name') for a in axes_meta]}); name them "
                             "with --axes")
        letters += letter
        if sizes is not None:
            scale[letter] = float(sizes[i])
        if axis.get("unit"):
            units[letter] = axis["unit"]
    omero = _attrs(path).get("omero")
    names = meta.get("channel_names") if omero else None
    return LazyImage(data, letters, str(path), scale, units, names, omero)


class ZarrSink(_Sink):
    """An OME-Zarr image written slice by slice; unwritten chunks read as 0."""

    def __init__(self, path, shape_by_letter: dict, dtype, letters: str, scale: dict,
                 units: dict, omero: dict | None, channel_names, resume: bool):
        zarr = _require("zarr")
        _require("ome_zarr")
        from ome_zarr.writer import add_metadata, write_multiscales_metadata

        self.path = Path(path)
        self.axes = ngff_axes(letters, str(path))
        shape = tuple(int(shape_by_letter[a]) for a in self.axes)
        if resume and self.path.exists():
            self.group = zarr.open_group(str(self.path), mode="r+")
            self.array = self.group["0"]
            if self.array.shape != shape or self.array.dtype != np.dtype(dtype):
                raise ValueError(f"output {str(path)!r} holds a {self.array.dtype} array of "
                                 f"{self.array.shape}, not the {np.dtype(dtype)} {shape} this "
                                 "run writes; use --restart to start it again")
            return
        self.group = zarr.open_group(str(self.path), mode="w")
        chunks = tuple(min(n, CHUNK_YX) if a in "YX" else n if a in "CS" else 1
                       for a, n in zip(self.axes, shape))
        self.array = self.group.create_array("0", shape=shape, chunks=chunks, dtype=dtype,
                                             fill_value=0)
        axes = []
        for a in self.axes:
            entry = {"name": "c" if a == "S" else a.lower()}
            if a in _TYPES:
                entry["type"] = _TYPES[a]
            if a in units:
                entry["unit"] = _NGFF_UNITS.get(units[a], units[a])
            axes.append(entry)
        sizes = [float(scale.get(a, 1.0)) for a in self.axes]
        write_multiscales_metadata(
            self.group, [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": sizes}]}], axes=axes, name=self.path.stem)
        if omero is None and channel_names:
            omero = {"channels": [{"label": str(n)} for n in channel_names]}
        if omero is not None:
            add_metadata(self.group, {"omero": omero})

    def _array(self):
        return self.array

    def finish(self, record: dict, complete: bool) -> None:
        self.group.attrs["napari_dip"] = json.loads(json.dumps(record, default=str))
