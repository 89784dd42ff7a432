"""Image files for the command line: TIFF (with its axes and pixel size) and PNG/JPEG.

Kept apart from the CLI so scripts can reuse it; it imports neither torch nor napari.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class ImageFile:
    data: np.ndarray
    axes: str  # one letter per axis; Y and X spatial, C or S channels, anything else a stack
    resolution: tuple[float, float] | None = None  # pixels per unit along X, Y (TIFF tags)
    unit: str | None = None


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
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes
            resolution = unit = None
            page = tif.pages[0]
            try:
                xr, yr = page.get_resolution()
                if xr and yr and (xr, yr) != (1, 1):
                    resolution = (float(xr), float(yr))
                    unit = (tif.imagej_metadata or {}).get("unit")
            except Exception:  # tags absent or malformed: the pixel size is simply unknown
                pass
        return ImageFile(data, axes, resolution, unit)
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("P", "PA"):
            im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
        elif im.mode == "LA":
            im = im.convert("L")
        data = np.asarray(im)
    return ImageFile(data, "YX" if data.ndim == 2 else "YXS")


def check_output_path(path: str | Path) -> str:
    """Fail before a long run, not after it, if ``path`` cannot be written."""
    path = Path(path)
    suffix = _check_suffix(path, "output")
    if not path.parent.exists():
        raise FileNotFoundError(f"the output folder {str(path.parent)!r} does not exist")
    return suffix


def write_image(path: str | Path, image: ImageFile, record: dict | None = None) -> None:
    path = Path(path)
    suffix = check_output_path(path)
    data = image.data
    if suffix in TIFF_SUFFIXES:
        import tifffile

        metadata = {"axes": image.axes}
        if record is not None:
            metadata["napari_dip"] = json.dumps(record, default=str)
        kwargs = {}
        if image.resolution is not None:
            kwargs["resolution"] = image.resolution
        tifffile.imwrite(path, data, metadata=metadata, photometric=(
            "rgb" if image.axes.endswith("S") and data.shape[-1] in (3, 4) else "minisblack"
        ), **kwargs)
        return
    from PIL import Image

    ok = data.dtype == np.uint8 or (data.dtype == np.uint16 and data.ndim == 2)
    if not ok or data.ndim > 3:
        raise ValueError(
            f"{suffix} cannot hold a {data.dtype} array of shape {data.shape}; write a .tif instead"
        )
    Image.fromarray(data).save(path)
