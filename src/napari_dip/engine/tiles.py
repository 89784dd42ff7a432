"""Planes too large for one fit: overlapping tiles, each an independent fit, blended smoothly.

Every tile is fitted with the *whole* plane's intensity map (a tile never stretches its own
range, or neighbouring tiles would disagree in brightness), and the tiles' outputs are averaged
with a smooth window that falls from 1 to 0 across each overlap shared with a neighbour, so the
weights of two neighbours add up to one and no seam is left. The overlap comes from the network's
receptive field (:func:`default_overlap`).

Whether a plane is tiled, and how, is decided in one place, :func:`choose_tiling`, for every
caller: a run, its estimate and the CLI's plans. The pieces (:class:`Tiling`, :class:`Blender`,
:func:`fit_map`) are also what the CLI's unit runner uses to send tiles to a cluster;
:func:`restore_tiled_iter` runs them in-process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from . import arrays
from .intensity import IntensityMap

#: Tile sides are multiples of this (the networks' 2**depth), so no fit pads.
TILE_STEP = 32
#: The smallest tile worth fitting: smaller ones leave the deepest scale nearly empty.
MIN_TILE = 64
#: Share of the device's memory a tile's fit may use (room for the optimiser, the rest).
MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class Tile:
    """One tile of a plane: rows ``y0:y1`` and columns ``x0:x1`` of the input."""

    index: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    def yx(self, factor: int = 1) -> tuple[slice, slice]:
        """The tile's rows and columns, in output pixels when the output is ``factor`` larger."""
        return (slice(self.y0 * factor, self.y1 * factor), slice(self.x0 * factor,
                                                                 self.x1 * factor))

    def to_dict(self) -> dict:
        return {"tile": self.index, "y": [self.y0, self.y1], "x": [self.x0, self.x1]}


def receptive_field(spec) -> int:
    """Side in pixels of the input region one output pixel of a skip net can see.

    Per scale ``i`` (pixels 2**i apart): the strided and the plain down convolutions, the merge
    convolution after upsampling, and the bilinear upsampling itself each widen it.
    """
    rf = 1
    for i in range(spec.depth):
        step = 2**i
        rf += (spec.kernel_down - 1) * step + (spec.kernel_down - 1) * 2 * step
        rf += (spec.kernel_up - 1) * step + 2 * step
    return rf


def default_overlap(spec, tile: int) -> int:
    """Overlap between neighbouring tiles: a quarter of the receptive field, at most a quarter
    of the tile (a multiple of 8).

    A convolutional net's *effective* receptive field is a small central part of the
    theoretical one (its weight falls off like a Gaussian), so a tile's border pixels, which
    see reflected padding instead of their true neighbours, differ only within about that
    distance of the edge; the blending window hides what is left.
    """
    overlap = min(receptive_field(spec) // 4, tile // 4)
    return max(8, overlap - overlap % 8)


def _starts(n: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along an axis of ``n`` pixels: ``overlap`` apart at least, the last one
    flush with the end (so it may overlap its neighbour more)."""
    if n <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, n - tile, stride))
    starts.append(n - tile)
    return starts


def plan_tiles(shape_yx: tuple[int, int], tile: int, overlap: int) -> list[Tile]:
    """Tiles of side ``tile`` (smaller where the plane is) covering a plane of ``shape_yx``."""
    h, w = (int(s) for s in shape_yx)
    if tile < arrays.MIN_SIDE:
        raise ValueError(f"tiles of {tile} px are too small; use at least {MIN_TILE}")
    if not 0 <= overlap < tile // 2:
        raise ValueError(f"an overlap of {overlap} px does not fit tiles of {tile} px")
    boxes = [(y, x) for y in _starts(h, tile, overlap) for x in _starts(w, tile, overlap)]
    return [Tile(i, y, min(y + tile, h), x, min(x + tile, w)) for i, (y, x) in enumerate(boxes)]


def _ramp(n: int, before: int, after: int) -> np.ndarray:
    """1-D window of length ``n``: rises over ``before`` pixels (sin**2), falls over ``after``
    (cos**2). Two neighbours overlapping by exactly that length add up to one everywhere."""
    w = np.ones(n, np.float64)
    if before:
        t = (np.arange(before) + 0.5) / before
        w[:before] = np.sin(t * np.pi / 2) ** 2
    if after:
        t = (np.arange(after) + 0.5) / after
        w[n - after:] = np.cos(t * np.pi / 2) ** 2
    return w


def tile_window(tile: Tile, tiles: list[Tile], factor: int = 1) -> np.ndarray:
    """Blending weights (Y, X) of ``tile``'s output: ramps only across overlaps with its
    neighbours, 1 at the plane's own borders. Never zero, so every pixel has weight."""
    before_y = after_y = before_x = after_x = 0
    for o in tiles:
        if o.index == tile.index:
            continue
        same_cols = o.x0 < tile.x1 and tile.x0 < o.x1
        same_rows = o.y0 < tile.y1 and tile.y0 < o.y1
        if same_cols and o.y0 < tile.y0 < o.y1:
            before_y = max(before_y, o.y1 - tile.y0)
        if same_cols and o.y0 < tile.y1 < o.y1:
            after_y = max(after_y, tile.y1 - o.y0)
        if same_rows and o.x0 < tile.x0 < o.x1:
            before_x = max(before_x, o.x1 - tile.x0)
        if same_rows and o.x0 < tile.x1 < o.x1:
            after_x = max(after_x, tile.x1 - o.x0)
    h, w = tile.shape
    wy = _ramp(h * factor, before_y * factor, after_y * factor)
    wx = _ramp(w * factor, before_x * factor, after_x * factor)
    # A pixel's weights come from both windows; floor them so no product is exactly zero.
    return np.maximum(np.outer(wy, wx), 1e-6)


class Blender:
    """Weighted average of tile outputs (C, Y, X) into one plane of ``shape`` (C, Y', X')."""

    def __init__(self, shape: tuple[int, int, int], tiles: list[Tile], factor: int = 1):
        self.tiles, self.factor = tiles, factor
        self.total = np.zeros(shape, np.float64)
        self.weight = np.zeros(shape[1:], np.float64)

    def add(self, tile: Tile, cyx: np.ndarray) -> None:
        w = tile_window(tile, self.tiles, self.factor)
        ys, xs = tile.yx(self.factor)
        self.total[:, ys, xs] += np.asarray(cyx, np.float64) * w
        self.weight[ys, xs] += w

    def result(self) -> np.ndarray:
        """The blended plane, float64; pixels no tile covered are NaN."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.total / self.weight


def cast_to(values: np.ndarray, dtype) -> np.ndarray:
    """Float values in the data's units to ``dtype``: integers rounded and clipped."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def fit_map(cyx: np.ndarray, tiles: list[Tile], joint: bool, known: np.ndarray | None = None,
            ) -> IntensityMap:
    """One intensity map for the whole plane, computed tile by tile (bounded memory)."""
    maps = []
    for t in tiles:
        ys, xs = t.yx()
        k = None if known is None else known[ys, xs]
        if k is not None and not k.any():
            continue
        maps.append(IntensityMap.fit(cyx[:, ys, xs], joint, k))
    return IntensityMap.combine(maps) if maps else IntensityMap.fit(cyx, joint, known)


def tile_size_for(height: int, width: int, spec, device, factor: int = 1) -> int | None:
    """The tile side to use when a fit of the whole plane would not fit ``device``'s memory
    (None when it fits): the largest multiple of :data:`TILE_STEP` whose fit needs at most
    :data:`MEMORY_SHARE` of the device's memory."""
    from .devices import device_memory, estimate_memory

    total = device_memory(device)
    if total is None or estimate_memory(height * factor, width * factor, spec) <= 0.9 * total:
        return None
    side = max(height, width)
    side -= side % TILE_STEP
    while side > MIN_TILE and estimate_memory(side * factor, side * factor,
                                              spec) > MEMORY_SHARE * total:
        side -= TILE_STEP
    return max(side, MIN_TILE)


@dataclass(frozen=True)
class Tiling:
    """How a plane of ``shape`` (Y, X) is cut for its fits: tiles of side ``side`` overlapping
    by ``overlap`` pixels. A side as long as the plane's or longer is one fit of the whole."""

    shape: tuple[int, int]
    side: int
    overlap: int

    @property
    def tiled(self) -> bool:
        return self.side < max(self.shape)

    @property
    def tile(self) -> int | None:
        """The tile side, None when the plane is fitted whole."""
        return self.side if self.tiled else None

    @property
    def fit_shape(self) -> tuple[int, int]:
        """(Y, X) of the largest fit: a tile, or the plane."""
        return min(self.side, self.shape[0]), min(self.side, self.shape[1])

    def tiles(self) -> list[Tile]:
        return plan_tiles(self.shape, self.side, self.overlap)


def choose_tiling(shape_yx: tuple[int, int], spec, device, factor: int = 1, *,
                  tile: int | None = None, overlap: int | None = None) -> Tiling:
    """How a plane of ``shape_yx`` input pixels (the output ``factor`` times larger) is fitted
    by a net of ``spec`` on ``device``: in tiles of side ``tile`` if given, else of the largest
    side that fits the device's memory (:func:`tile_size_for`), else whole; overlapping by
    ``overlap`` (None: :func:`default_overlap`)."""
    h, w = (int(s) for s in shape_yx)
    if tile is None:
        tile = tile_size_for(h, w, spec, device, factor) or max(h, w)
    tile = int(tile)
    overlap = default_overlap(spec, tile) if overlap is None else int(overlap)
    return Tiling((h, w), tile, overlap)


def skip_reason(cyx: np.ndarray, mask, task: str) -> str | None:
    """Why a tile or slice is passed through unrestored (constant, nothing to fill), or None."""
    if cyx.size and cyx.min() == cyx.max():
        return "constant"
    if task == "inpaint" and mask is not None and not arrays.fill_of(mask).any():
        return "nothing to fill"
    return None


def _shared_choices(colour, known, tiles, task, norm, name, kwargs) -> dict:
    """The noise model and a deconvolution's headroom, decided once for every tile of the plane
    from a sample of its tiles (:mod:`.shared`)."""
    from .shared import PlaneSample, deconvolves

    sample = PlaneSample([t.index for t in tiles], brightest=deconvolves(task, kwargs))
    for t in tiles:
        ys, xs = t.yx()
        sub_known = None if known is None else known[ys, xs]
        if skip_reason(colour[:, ys, xs], None if known is None else ~sub_known, task) is None:
            sample.see(t.index, colour[:, ys, xs],
                       sub_known if sub_known is not None and sub_known.any() else None)
    if not sample.colour:
        return {}  # every tile is passed through: nothing to choose
    return sample.take_choices(task, norm, name, kwargs)


def restore_tiled_iter(
    image: np.ndarray,
    task: str = "denoise",
    *,
    tile: int | None = None,
    overlap: int | None = None,
    mask: np.ndarray | None = None,
    factor: int = 4,
    preset: str = "auto",
    device="auto",
    seed: int | None = None,
    channel_axis: int | None = None,
    normalisation: IntensityMap | None = None,
    cancel=None,
    name: str = "image",
    as_float: bool = False,
    **kwargs,
) -> Iterator:
    """Restore one plane in overlapping tiles; yields :class:`Progress`, then one Result.

    ``tile`` is the tile side (None: the largest that fits the device's memory); ``overlap``
    the overlap in input pixels (None: :func:`default_overlap`). Every tile uses the same seed
    and one intensity map (``normalisation``, or one fitted to the whole plane). Other keywords
    as for :func:`~napari_dip.engine.restore_iter`, which this calls once per tile.

    The record has the run's settings, ``"tiling"`` (side, overlap) and ``"tiles"`` (one entry
    per tile: its box and its fit, or why it was skipped or failed).
    """
    from ..choices import SR_FACTOR, resolve_preset
    from .devices import resolve_device
    from .presets import make_config
    from .restoration import Result, as_cancel_check, draw_seed, overall_stop_reason, restore_iter

    image = np.asarray(image)
    arrays.check_dtype(image, name)
    layout = arrays.infer_layout(image, channel_axis, name)
    cyx = layout.to_cyx(image)
    colour, _ = arrays.split_alpha(cyx, layout)
    arrays.check_spatial(colour.shape[1:], name)
    arrays.check_values(colour, name)
    f = SR_FACTOR.check(factor) if task == "sr" else 1
    dev = resolve_device(device)
    spec = make_config(task, resolve_preset(preset, dev.type), f if task == "sr" else None).net
    h, w = colour.shape[1:]
    tiling = choose_tiling((h, w), spec, dev, f, tile=tile, overlap=overlap)
    tile, overlap, tiles = tiling.side, tiling.overlap, tiling.tiles()
    known = None
    if mask is not None:
        known = ~arrays.fill_of(mask)
        if known.shape != (h, w):
            raise ValueError(f"the mask has shape {np.shape(mask)}, but {name} needs "
                             f"{(h, w)}")
    norm = normalisation or fit_map(colour, tiles, layout.kind == "channels_last", known)
    kwargs.update(_shared_choices(colour, known, tiles, task, norm, name, kwargs))
    seed = draw_seed() if seed is None else seed
    check = as_cancel_check(cancel)

    blender = Blender((cyx.shape[0], h * f, w * f), tiles, f)
    entries, history, errors, settings, cancelled = [], [], [], None, False
    for t in tiles:
        ys, xs = t.yx()
        sub = layout.from_cyx(cyx[:, ys, xs])
        sub_mask = None if mask is None else np.asarray(mask)[ys, xs]
        out = None
        reason = skip_reason(colour[:, ys, xs], sub_mask, task)
        if reason is None and not cancelled and not (check is not None and check()):
            try:
                result = None
                for event in restore_iter(sub, task, mask=sub_mask, factor=factor,
                                          preset=preset, device=dev, seed=seed,
                                          channel_axis=layout.channel_axis, cancel=check,
                                          normalisation=norm, name=f"{name} tile {t.index}",
                                          as_float=True, tile=False, **kwargs):
                    if isinstance(event, Result):
                        result = event
                    else:
                        yield replace(event, tile_index=t.index, n_tiles=len(tiles))
                out = layout.to_cyx(result.image)
                entries.append({**t.to_dict(), **{k: result.record[k] for k in (
                    "iterations", "best_iteration", "stop_reason", "seconds", "planes")}})
                history.append(result.history)
                settings = settings or result.record
                cancelled = result.stop_reason == "user"
            except Exception as exc:  # noqa: BLE001 - recorded; the other tiles go on
                if isinstance(exc, MemoryError):
                    raise
                errors.append({**t.to_dict(), "error": f"{type(exc).__name__}: {exc}"})
                entries.append({**errors[-1], "iterations": 0, "seconds": 0.0})
        elif reason is None:
            cancelled = True
            entries.append({**t.to_dict(), "skipped": "stopped by the user", "iterations": 0,
                            "seconds": 0.0})
        else:
            entries.append({**t.to_dict(), "skipped": reason, "iterations": 0, "seconds": 0.0})
        if out is None:  # passed through: the input itself (nearest-neighbour for SR)
            out = arrays.repeat_yx(cyx[:, ys, xs], f, 1) if f > 1 else cyx[:, ys, xs]
        blender.add(t, out)
    fitted = [e for e in entries if "stop_reason" in e]
    if not fitted:
        if errors:
            raise ValueError(f"{name}: no tile could be restored; the first said: "
                             f"{errors[0]['error']}")
        raise ValueError(f"{name}: every tile is {entries[0]['skipped']}; there is nothing "
                         "to restore.")
    blended = blender.result()
    out = blended.astype(np.float32) if as_float else cast_to(blended, image.dtype)
    record = {
        **{k: v for k, v in settings.items() if k != "planes"},
        "input_shape": list(image.shape),
        "input_dtype": str(image.dtype),
        "normalisation": {**norm.to_dict(),
                          "clipped_fraction": norm.clipped_fraction(colour, known)},
        "tiling": {"tile": tile, "overlap": overlap, "count": len(tiles),
                   "window": "sin^2 ramps over the overlaps"},
        "tiles": entries,
        # Every tile's fits, so that a record of tiles reads like one of a plane.
        "planes": [{**p, "tile": e["tile"]} for e in fitted for p in e["planes"]],
        "stop_reason": overall_stop_reason([e["stop_reason"] for e in fitted],
                                           complete=not cancelled),
        "iterations": sum(e["iterations"] for e in entries),
        "best_iteration": [e.get("best_iteration") for e in entries],
        "seconds": round(sum(e["seconds"] for e in entries), 3),
    }
    if errors:
        record["errors"] = errors
    yield Result(layout.from_cyx(out), record, history)
