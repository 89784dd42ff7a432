"""Reproducible quality and speed benchmarks for napari-dip (see benchmarks/README.md)."""
