"""The parts of the napari dock widget (:class:`napari_dip._widget.DIPWidget`), one concern each.

- :mod:`.plan` and :mod:`.results`: layers to engine work and back (pure; no Qt, no torch)
- :mod:`.controls`: the settings and which of them apply
- :mod:`.run`: the run controller, its typed state and the worker
- :mod:`.compare`: side-by-side comparison and metrics
"""
