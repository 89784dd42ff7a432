"""Image files for the command line: TIFF (with its axes, pixel size and unit) and PNG/JPEG/BMP.

Kept apart from the CLI so scripts can reuse it; it imports neither torch nor napari.
"""

from __future__ import annotations

import json
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
    "stack's Z spacing and their unit, and embeds the run's record as JSON. PNG: 8-bit grey, "
    "RGB or RGBA, or 16-bit grey. JPEG (.jpg, .jpeg; lossy) and BMP: 8-bit grey or RGB."
)

#: Lengths in centimetres, to write pixel sizes as TIFF's standard pixels per centimetre.
_CM = {"cm": 1.0, "centimeter": 1.0, "mm": 0.1, "millimeter": 0.1, "um": 1e-4, "µm": 1e-4,
       "μm": 1e-4, "micron": 1e-4, "micrometer": 1e-4, "nm": 1e-7, "nanometer": 1e-7,
       "m": 100.0, "meter": 100.0, "inch": 2.54}
#: TIFF ResolutionUnit tag values (tifffile.RESUNIT) and the unit names they stand for.
_TAG_UNITS = {2: "inch", 3: "cm", 4: "mm", 5: "um"}


@dataclass
class ImageFile:
    data: np.ndarray
    axes: str  # one letter per axis; Y and X spatial, C or S channels, anything else a stack
    resolution: tuple[float, float] | None = None  # pixels per unit along X, Y
    unit: str | None = None  # the length unit of ``resolution`` (e.g. 'um'), if known
    z_spacing: float | None = None  # distance between Z planes, in ``unit``, if known


def _length_cm(unit: str | None) -> float | None:
    if unit is None:
        return None
    name = unit.strip().lower().replace("\\u00b5", "µ")
    return _CM.get(name)


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
            data = series.asarray()
            resolution, unit = _tiff_resolution(tif)
            return ImageFile(data, series.axes, resolution, unit, _tiff_z_spacing(tif))
    except tifffile.TiffFileError as exc:
        raise ValueError(f"{role} file {str(path)!r} is not a readable TIFF file ({exc})") from exc


def _tiff_z_spacing(tif) -> float | None:
    """The distance between Z planes (in the unit of :func:`_tiff_resolution`), if the file
    says: ImageJ's or our own metadata's 'spacing'."""
    meta = {**(tif.shaped_metadata[0] if tif.shaped_metadata else {}),
            **(tif.imagej_metadata or {})}
    spacing = meta.get("spacing")
    return float(spacing) if isinstance(spacing, (int, float)) and spacing > 0 else None


def _tiff_resolution(tif) -> tuple[tuple[float, float] | None, str | None]:
    """Pixels per unit along X and Y, and the unit: ImageJ's or our own metadata names it,
    else the ResolutionUnit tag does (inch, cm)."""
    page = tif.pages[0]
    try:
        xr, yr = (float(v) for v in page.get_resolution())
        tag_unit = _TAG_UNITS.get(int(page.resolutionunit))
    except Exception:  # tags absent or malformed: the pixel size is simply unknown
        return None, None
    if not xr or not yr or (xr, yr) == (1.0, 1.0):
        return None, None
    shaped = tif.shaped_metadata[0] if tif.shaped_metadata else {}
    named = (tif.imagej_metadata or {}).get("unit") or shaped.get("unit")
    if named is None:
        return (xr, yr), tag_unit
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

        tifffile.imwrite(path, data, **tiff_options(image.axes, data.shape, image.resolution,
                                                    image.unit, image.z_spacing, record))
        return
    from PIL import Image

    Image.fromarray(data).save(path)


def tiff_options(axes: str, shape: tuple[int, ...], resolution: tuple[float, float] | None = None,
                 unit: str | None = None, z_spacing: float | None = None,
                 record: dict | None = None) -> dict:
    """tifffile's write arguments for an image of ``axes`` and ``shape``: the axes, unit, Z
    spacing and run record as metadata, the pixel size as resolution tags, the photometric
    interpretation. The one place that says what our TIFFs hold, whether written at once
    (:func:`write_image`) or laid out first and filled slice by slice (``_lazy_io``)."""
    metadata = {"axes": axes}
    if unit is not None:
        metadata["unit"] = unit
    if z_spacing is not None:
        metadata["spacing"] = z_spacing
    if record is not None:
        metadata["napari_dip"] = json.dumps(record, default=str)
    options = {"metadata": metadata, "photometric": (
        "rgb" if axes.endswith("S") and shape[-1] in (3, 4) else "minisblack")}
    if resolution is not None:
        options.update(_resolution_tags(resolution, unit))
    return options


def _resolution_tags(resolution: tuple[float, float], unit: str | None) -> dict:
    """TIFF tags for a pixel size: lengths as pixels per centimetre (a standard TIFF unit,
    understood by every reader), the unit itself in the metadata."""
    cm = _length_cm(unit)
    if unit is not None and unit.strip().lower() == "inch":
        return {"resolution": resolution, "resolutionunit": "INCH"}
    if cm is not None:
        return {"resolution": (resolution[0] / cm, resolution[1] / cm),
                "resolutionunit": "CENTIMETER"}
    return {"resolution": resolution, "resolutionunit": "NONE"}
