"""napari-dip: Deep Image Prior restoration for napari.

Importing this package is cheap: torch is only imported with :mod:`napari_dip.engine`.
"""

try:
    from importlib.metadata import version as _version

    __version__ = _version("napari-dip")
except Exception:  # pragma: no cover - running from a source tree
    __version__ = "unknown"

__all__ = ["__version__"]
