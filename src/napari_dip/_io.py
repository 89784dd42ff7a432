"""Image files for the command line: TIFF (with its axes and physical sizes: ImageJ's, OME's or
our own metadata) and PNG/JPEG/BMP.

Kept apart from the CLI so scripts can reuse it; it imports neither torch nor napari.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

#: What a PIL format can hold: (dtype, samples per pixel) of a (Y, X) or (Y, X, S) image.
_PIL_HOLDS = {
    ".png": {("uint8", 1), ("uint8", 3), ("uint8", 4), ("uint16", 1)},
    ".jpg": {("uint8", 1), ("uint8", 3)},
    ".jpeg": {("uint8", 1), ("uint8", 3)},
    ".bmp": {("uint8", 1), ("uint8", 3)},
}

#: The output formats, for help texts.
FORMATS_HELP = (
    "TIFF (.tif, .tiff): any dtype, channels and stacks; keeps the axes, the pixel size, a "
    "stack's Z spacing and their unit, the frame interval, and embeds the run's record as "
    "JSON; an ImageJ hyperstack, which Fiji opens with its scale, where ImageJ can hold the "
    "image (8-bit, 16-bit, float32 or 8-bit RGB; axes in T, Z, C, Y, X order), else "
    "tifffile's format. PNG: 8-bit grey, RGB or RGBA, or 16-bit grey. JPEG (.jpg, .jpeg; "
    "lossy) and BMP: 8-bit grey or RGB."
)

#: Lengths in centimetres, to write pixel sizes as TIFF's standard pixels per centimetre.
_CM = {"cm": 1.0, "centimeter": 1.0, "mm": 0.1, "millimeter": 0.1, "um": 1e-4, "µm": 1e-4,
       "μm": 1e-4, "micron": 1e-4, "micrometer": 1e-4, "nm": 1e-7, "nanometer": 1e-7,
       "m": 100.0, "meter": 100.0, "inch": 2.54}
#: TIFF ResolutionUnit tag values (tifffile.RESUNIT) and the unit names they stand for.
_TAG_UNITS = {2: "inch", 3: "cm", 4: "mm", 5: "um"}
#: The pixel types an ImageJ hyperstack holds; other images are written in tifffile's format.
_IMAGEJ_DTYPES = ("uint8", "uint16", "float32")
#: The largest image a classic (not Big) TIFF holds, by tifffile's rule.
_CLASSIC_TIFF_BYTES = 2**32 - 2**25
#: The metadata key (ImageJ's or tifffile's description) of the run's record.
RECORD_KEY = "napari_dip"
#: Times in seconds: a frame interval is kept in seconds, whatever unit the file gave it in.
_SECONDS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3,
            "millisecond": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "microsecond": 1e-6,
            "min": 60.0, "minute": 60.0, "h": 3600.0, "hr": 3600.0, "hour": 3600.0}


@dataclass
class ImageFile:
    data: np.ndarray
    axes: str  # one letter per axis; Y and X spatial, C or S channels, anything else a stack
    resolution: tuple[float, float] | None = None  # pixels per unit along X, Y
    unit: str | None = None  # the length unit of ``resolution`` (e.g. 'um'), if known
    z_spacing: float | None = None  # distance between Z planes, in ``unit``, if known
    frame_interval: float | None = None  # time between T frames, in seconds, if known

    def calibration(self) -> dict:
        """The physical sizes, as :func:`tiff_options` takes them."""
        return {k: getattr(self, k) for k in ("resolution", "unit", "z_spacing",
                                              "frame_interval")}


def calibration_record(calibration: dict) -> dict:
    """The run record's note of an input's physical sizes (:meth:`ImageFile.calibration`):
    the pixel size along X and Y and the Z spacing in ``unit``, the frame interval in
    seconds; those it gives."""
    resolution = calibration.get("resolution")
    note = {"pixel_size": None if resolution is None else [1 / resolution[0], 1 / resolution[1]],
            **{k: calibration.get(k) for k in ("unit", "z_spacing", "frame_interval")}}
    return {k: v for k, v in note.items() if v is not None}


def _length_cm(unit: str | None) -> float | None:
    if unit is None:
        return None
    return _CM.get(_unescape(unit).strip().lower())


def _convert(length: float | None, unit: str | None, to: str | None) -> float | None:
    """``length`` in ``unit`` as a length in ``to``; None where one of the units is unknown."""
    if length is None or unit == to:
        return length
    cm, to_cm = _length_cm(unit), _length_cm(to)
    return length * cm / to_cm if cm and to_cm else None


def _seconds(interval, unit: str | None = None) -> float | None:
    """A positive time interval in ``unit`` (None: seconds) in seconds, else None."""
    interval = _positive(interval)
    factor = 1.0 if unit is None else _SECONDS.get(_unescape(str(unit)).strip().lower())
    return None if interval is None or factor is None else interval * factor


def _positive(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 and math.isfinite(value) else None


def _unescape(text: str) -> str:
    """ImageJ's text as it means it: ImageJ escapes non-ASCII letters (unit=\\u00B5m)."""
    return re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)


def _escape(text: str) -> str:
    """Text for an ImageJ description, which must be ASCII: as ImageJ escapes it."""
    return "".join(c if ord(c) < 128 else f"\\u{ord(c):04X}" for c in text)


def _check_suffix(path: Path, role: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in TIFF_SUFFIXES + PIL_SUFFIXES:
        raise ValueError(
            f"{role} {str(path)!r} has an unsupported extension {suffix!r}; "
            f"use one of {', '.join(TIFF_SUFFIXES + PIL_SUFFIXES)}"
        )
    return suffix


def read_image(path: str | Path, role: str = "input") -> ImageFile:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{role} file {str(path)!r} does not exist")
    suffix = _check_suffix(path, role)
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path, role)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
            elif im.mode == "LA":
                im = im.convert("L")
            data = np.asarray(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{role} file {str(path)!r} is not a readable {suffix[1:].upper()} "
                         f"image ({exc})") from exc
    return ImageFile(data, "YX" if data.ndim == 2 else "YXS")


def _read_tiff(path: Path, role: str) -> ImageFile:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return ImageFile(series.asarray(), series.axes, **tiff_calibration(tif))
    except tifffile.TiffFileError as exc:
        raise ValueError(f"{role} file {str(path)!r} is not a readable TIFF file ({exc})") from exc


def _tiff_metadata(tif) -> dict:
    """ImageJ's or our own (tifffile's JSON) description, as a dict."""
    return {**(tif.shaped_metadata[0] if tif.shaped_metadata else {}),
            **(tif.imagej_metadata or {})}


def tiff_calibration(tif) -> dict:
    """A TIFF's physical sizes as :class:`ImageFile`'s fields (resolution, unit, z_spacing,
    frame_interval): from ImageJ's or our own metadata ('unit', 'spacing', 'finterval' in
    'tunit') and the resolution tags, or from an OME-TIFF's OME-XML where it gives them."""
    meta = _tiff_metadata(tif)
    resolution, unit = _tiff_resolution(tif, meta)
    found = {"resolution": resolution, "unit": unit, "z_spacing": _positive(meta.get("spacing")),
             "frame_interval": _seconds(meta.get("finterval"), meta.get("tunit"))}
    if tif.is_ome:
        found.update(_ome_calibration(tif.ome_metadata))
    return found


def _ome_calibration(xml: str) -> dict:
    """The physical sizes an OME-XML gives its first image: the pixel size and Z spacing in
    X's length unit (OME's default µm), if it gives either; the frame interval in seconds."""
    from xml.etree import ElementTree

    try:
        pixels = ElementTree.fromstring(xml).find("{*}Image/{*}Pixels")
    except ElementTree.ParseError:
        return {}
    if pixels is None:
        return {}

    def size(axis: str):
        return (_positive(pixels.get(f"PhysicalSize{axis}")),
                pixels.get(f"PhysicalSize{axis}Unit", "µm"))

    (x, unit), (y, y_unit), (z, z_unit) = size("X"), size("Y"), size("Z")
    y = _convert(y, y_unit, unit)
    if x is None or y is None:  # no pixel size: the Z spacing's unit is the one
        x, unit = None, z_unit
    found = {}
    if x is not None or z is not None:
        found.update(resolution=None if x is None else (1 / x, 1 / y), unit=unit,
                     z_spacing=_convert(z, z_unit, unit))
    interval = _seconds(pixels.get("TimeIncrement"), pixels.get("TimeIncrementUnit", "s"))
    if interval is not None:
        found["frame_interval"] = interval
    return found


def _tiff_resolution(tif, meta: dict) -> tuple[tuple[float, float] | None, str | None]:
    """Pixels per unit along X and Y, and the unit: ImageJ's or our own metadata (``meta``)
    names it, else the ResolutionUnit tag does (inch, cm)."""
    page = tif.pages[0]
    try:
        xr, yr = (float(v) for v in page.get_resolution())
        tag_unit = _TAG_UNITS.get(int(page.resolutionunit))
    except Exception:  # tags absent or malformed: the pixel size is simply unknown
        return None, None
    if not xr or not yr or (xr, yr) == (1.0, 1.0):
        return None, None
    named = meta.get("unit")
    if named is None:
        return (xr, yr), tag_unit
    named = _unescape(str(named))
    tag_cm, named_cm = _length_cm(tag_unit), _length_cm(named)
    if tag_cm is not None and named_cm is not None:  # e.g. our px/cm tags for a um pixel size
        xr, yr = xr * named_cm / tag_cm, yr * named_cm / tag_cm
    return (xr, yr), named


def formats_that_hold(dtype, shape: tuple[int, ...], axes: str) -> list[str]:
    """Output extensions that can store an image of ``dtype``, ``shape`` and ``axes``."""
    dtype = np.dtype(dtype)
    axes = axes.upper()
    ok = [TIFF_SUFFIXES[0]]
    plane = (axes == "YX" and len(shape) == 2) or (axes == "YXS" and len(shape) == 3)
    if plane:
        samples = 1 if len(shape) == 2 else shape[-1]
        ok += [s for s in PIL_SUFFIXES if (dtype.name, samples) in _PIL_HOLDS[s]]
    return ok


def check_output_path(path: str | Path, dtype=None, shape: tuple[int, ...] | None = None,
                      axes: str | None = None) -> str:
    """Fail before a long run, not after it, if ``path`` cannot be written or, given the
    result's ``dtype``, ``shape`` and ``axes``, its format cannot hold the result."""
    path = Path(path)
    suffix = _check_suffix(path, "output")
    if not path.parent.exists():
        raise FileNotFoundError(f"the output folder {str(path.parent)!r} does not exist")
    if dtype is not None and suffix in PIL_SUFFIXES:
        ok = formats_that_hold(dtype, shape, axes)
        if suffix not in ok:
            what = f"a {np.dtype(dtype)} image of shape {tuple(shape)} (axes {axes})"
            raise ValueError(
                f"output {str(path)!r}: {suffix} cannot hold {what}; use "
                f"{' or '.join(ok)} instead (see --help for what each format holds)"
            )
    return suffix


def write_image(path: str | Path, image: ImageFile, record: dict | None = None) -> None:
    path = Path(path)
    data = image.data
    suffix = check_output_path(path, data.dtype, data.shape, image.axes)
    if suffix in TIFF_SUFFIXES:
        import tifffile

        tifffile.imwrite(path, data, **tiff_options(image.axes, data.shape, data.dtype,
                                                    record=record, **image.calibration()))
        return
    from PIL import Image

    Image.fromarray(data).save(path)


def tiff_options(axes: str, shape: tuple[int, ...], dtype, *,
                 resolution: tuple[float, float] | None = None, unit: str | None = None,
                 z_spacing: float | None = None, frame_interval: float | None = None,
                 record: dict | None = None) -> dict:
    """tifffile's write arguments for an image of ``axes``, ``shape`` and ``dtype``: an ImageJ
    hyperstack where ImageJ can hold the image (:func:`_imagej_holds`), else tifffile's own
    format; either way with the axes, unit, Z spacing, frame interval and run record as
    metadata, the pixel size as resolution tags. The one place that says what our TIFFs hold,
    whether written at once (:func:`write_image`) or laid out first and filled slice by slice
    (``_lazy_io``)."""
    imagej = _imagej_holds(axes, shape, dtype)
    metadata = {"axes": axes}
    if unit is not None:
        metadata["unit"] = _escape(unit) if imagej else unit
    if z_spacing is not None:
        metadata["spacing"] = z_spacing
    if frame_interval is not None:
        metadata["finterval"] = frame_interval
    if record is not None:
        metadata[RECORD_KEY] = _record_text(record)
    options = {"imagej": imagej, "bigtiff": _nbytes(shape, dtype) > _CLASSIC_TIFF_BYTES,
               "metadata": metadata, "photometric": (
                   "rgb" if axes.endswith("S") and shape[-1] in (3, 4) else "minisblack")}
    if resolution is not None:
        options.update(_resolution_tags(resolution, unit, imagej))
    return options


def _nbytes(shape: tuple[int, ...], dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _imagej_holds(axes: str, shape: tuple[int, ...], dtype) -> bool:
    """Whether an ImageJ hyperstack can hold the image: one of ImageJ's 8-bit, 16-bit and
    32-bit float types (or 8-bit RGB), axes among T, Z, C, Y, X in that order, none of them
    of length 1 (ImageJ would drop it), and small enough for a classic TIFF (ImageJ opens no
    BigTIFF)."""
    order = ["TZCYXS".find(a) for a in axes.upper()]
    if -1 in order or order != sorted(set(order)) or "YX" not in axes.upper() or any(
            n == 1 for a, n in zip(axes.upper(), shape) if a in "TZC"):
        return False
    dtype = np.dtype(dtype)
    if axes.upper().endswith("S") and (dtype != np.uint8 or shape[-1] != 3):
        return False
    return dtype.name in _IMAGEJ_DTYPES and _nbytes(shape, dtype) <= _CLASSIC_TIFF_BYTES


def _resolution_tags(resolution: tuple[float, float], unit: str | None, imagej: bool) -> dict:
    """TIFF tags for a pixel size. In an ImageJ file as ImageJ writes them: pixels per unit,
    the tag naming the unit only for inch and cm (the description names the others). Else in
    pixels per centimetre, a standard TIFF unit understood by every reader."""
    name = _unescape(unit).strip().lower() if unit is not None else None
    if name in ("inch", "cm"):
        return {"resolution": resolution,
                "resolutionunit": "INCH" if name == "inch" else "CENTIMETER"}
    cm = _length_cm(unit)
    if imagej or cm is None:
        return {"resolution": resolution, "resolutionunit": "NONE"}
    return {"resolution": (resolution[0] / cm, resolution[1] / cm),
            "resolutionunit": "CENTIMETER"}


def _record_text(record: dict) -> str:
    return json.dumps(record, default=str)  # ASCII, as a TIFF description must be


def read_record(path: str | Path) -> dict | None:
    """The run's record in a TIFF we wrote (its ImageJ or tifffile description), or None."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        text = _tiff_metadata(tif).get(RECORD_KEY)
    return json.loads(text) if isinstance(text, str) else None


def add_record(path: str | Path, record: dict) -> None:
    """Put the run's record into a TIFF written before the run ended (a slice-by-slice
    output), in place of any earlier one."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        imagej = tif.pages[0].imagej_description
        if imagej is not None:
            lines = [line for line in imagej.splitlines()
                     if not line.startswith(f"{RECORD_KEY}=")]
            text = "\n".join([*lines, f"{RECORD_KEY}={_record_text(record)}", ""])
        else:
            described = dict(tif.shaped_metadata[0]) if tif.shaped_metadata else {}
            described[RECORD_KEY] = _record_text(record)
            text = json.dumps(described)
    tifffile.tiffcomment(path, text)
