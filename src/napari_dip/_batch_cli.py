"""`napari-dip restore` for large and many images: unit by unit, resumable, on a dask cluster.

Used when the input or output is OME-Zarr, the input is a stack, several inputs (or a folder or
a glob) are given, or ``--tile``, ``--workers`` or ``--scheduler`` is. Each file is cut into
units (slices, or tiles of slices: :mod:`napari_dip.engine.units`); the pixels of each unit are
read only when it is sent, and each finished unit is written straight into the output with a
record of it (:mod:`._ledger`), so an interrupted run keeps what it finished and the same
command resumes it. Units run in this process one after the other, or on dask.distributed
workers (``--workers N``: a local cluster; ``--scheduler ADDRESS``: an existing one).
"""

from __future__ import annotations

import argparse
import glob
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from . import _io
from ._lazy_io import is_zarr

_IMAGE_SUFFIXES = _io.TIFF_SUFFIXES + _io.PIL_SUFFIXES


def add_arguments(r: argparse.ArgumentParser) -> None:
    g = r.add_argument_group("large images, many files and clusters")
    g.add_argument("--tile", type=int, metavar="SIZE", help="restore in overlapping tiles of "
                   "SIZE pixels a side, blended without seams (default: only when one fit of "
                   "the whole image would not fit the device's memory)")
    g.add_argument("--workers", type=int, metavar="N", help="run the slices/tiles on a local "
                   "dask cluster of N worker processes (default: one after the other in this "
                   "process)")
    g.add_argument("--scheduler", metavar="ADDRESS", help="run them on an existing dask "
                   "scheduler instead, e.g. tcp://10.0.0.5:8786 (see the README)")
    g.add_argument("--restart", action="store_true", help="discard what an earlier, "
                   "interrupted run of this output finished and start again (default: resume "
                   "it, if its settings match)")


# ---------------------------------------------------------------------------------- inputs
def _expand(pattern: str) -> list[Path]:
    path = Path(pattern)
    if path.is_dir() and not is_zarr(path):
        found = [p for p in sorted(path.iterdir())
                 if p.suffix.lower() in _IMAGE_SUFFIXES or is_zarr(p)]
        if not found:
            raise FileNotFoundError(f"folder {pattern!r} holds no image files "
                                    f"({', '.join(_IMAGE_SUFFIXES)}, .zarr)")
        return found
    if not path.exists() and any(c in pattern for c in "*?["):
        found = [Path(p) for p in sorted(glob.glob(pattern))]
        if not found:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        return found
    return [path]


def _is_batch(args) -> bool:
    return len(args.input) > 1 or any(
        (Path(p).is_dir() and not is_zarr(p)) or (not Path(p).exists() and any(
            c in p for c in "*?[")) for p in args.input)


def pairs(args) -> list[tuple[Path, Path]]:
    """(input, output) for every file: one pair, or each input into the output folder."""
    if not _is_batch(args):
        return [(Path(args.input[0]), Path(args.output))]
    inputs = [p for pattern in args.input for p in _expand(pattern)]
    folder = Path(args.output)
    if is_zarr(folder) or folder.suffix.lower() in _IMAGE_SUFFIXES:
        raise ValueError(f"several inputs need an output folder, not {args.output!r}")
    if not folder.parent.exists():
        raise FileNotFoundError(f"the output folder's parent {str(folder.parent)!r} does not "
                                "exist")
    out = [(p, folder / p.name) for p in inputs]
    if any(o.resolve() == p.resolve() for p, o in out):
        raise ValueError(f"the output folder {args.output!r} is the input's; choose another, "
                         "so that no input is overwritten")
    return out


def _ledger_folder(output: Path) -> Path:
    return output / "napari_dip" if is_zarr(output) else output.with_name(
        output.name + ".napari-dip")


def wants_units(args) -> bool:
    """Whether this run goes unit by unit (else the in-memory path of :mod:`._cli` runs)."""
    if args.tile or args.workers or args.scheduler or _is_batch(args):
        return True
    inp, out = Path(args.input[0]), Path(args.output)
    if is_zarr(inp) or is_zarr(out) or _ledger_folder(out).exists():
        return True
    if inp.suffix.lower() in _io.TIFF_SUFFIXES and inp.is_file() and _lazy_tiff_possible():
        import tifffile

        from .engine.axes import from_letters

        try:  # a stack goes slice by slice into a resumable output
            with tifffile.TiffFile(inp) as tif:
                series = tif.series[0]
                return from_letters(args.axes or series.axes, series.shape).is_stack
        except Exception:  # unreadable or unnamed axes: the in-memory path says why
            return False
    return False


def _lazy_tiff_possible() -> bool:
    """dask and zarr are there (the "big" extra): TIFF stacks can be read lazily."""
    from importlib.util import find_spec

    return find_spec("dask") is not None and find_spec("zarr") is not None


# ---------------------------------------------------------------------------------- a file
def _plane_letters(letters: str, layout) -> str:
    """The axis letters of a folded plane: YX, CYX or YXS."""
    if layout.channel is None:
        return "YX"
    c = letters[layout.channel]
    return "YX" + c if layout.colour else c + "YX"


def _unit_entry(unit, out: dict, fingerprint: str) -> dict:
    """The store's record of a finished unit."""
    entry = {"unit": unit.key, "slice": unit.slice, "status": out["status"],
             "settings": fingerprint}
    if unit.tile is not None:
        entry.update(unit.tile.to_dict())
    if out["status"] == "error":
        entry.update(error=out["error"], iterations=0, seconds=0.0)
    elif out["status"] == "skipped":
        entry.update(skipped=out["skipped"], iterations=0, seconds=0.0)
    else:
        rec = out["record"]
        entry.update({k: rec.get(k) for k in ("iterations", "best_iteration", "stop_reason",
                                              "seconds", "planes", "device", "threads",
                                              "batch")})
    return entry


def _slice_entry(i: int, entries: list[dict]) -> dict:
    """What the output's record says about a slice: its one unit, or its tiles together."""
    from .engine.stopping import combine_stop_reasons

    hidden = ("unit", "slice", "status", "settings")
    if len(entries) == 1 and "tile" not in entries[0]:
        return {"slice": i, **{k: v for k, v in entries[0].items() if k not in hidden}}
    fitted = [e for e in entries if e.get("stop_reason")]
    errors = [e for e in entries if "error" in e]
    entry = {"slice": i, "tiles": [{k: v for k, v in e.items() if k not in hidden}
                                   for e in entries],
             "iterations": sum(e["iterations"] for e in entries),
             "seconds": round(sum(e["seconds"] for e in entries), 3)}
    if fitted:
        entry["stop_reason"] = combine_stop_reasons([e["stop_reason"] for e in fitted])
        entry["best_iteration"] = [e.get("best_iteration") for e in entries]
        if errors:
            entry["error"] = f"{len(errors)} tile(s) not restored: {errors[0]['error']}"
    elif errors:
        entry["error"] = errors[0]["error"]
    else:
        entry["skipped"] = entries[0].get("skipped")
    return entry


class _FileRun:
    """One input file restored unit by unit into its output, resuming what a run left."""

    def __init__(self, args, inp: Path, out: Path):
        from ._lazy_io import open_input

        self.args, self.inp, self.out = args, inp, out
        self.src = open_input(inp)
        try:
            self._check()
        except BaseException:
            self.src.close()
            raise

    def _check(self) -> None:
        from ._cli import _layout, result_dtype
        from ._lazy_io import check_output
        from .engine import axes

        args, inp, out = self.args, self.inp, self.out
        self.letters, self.layout = _layout(self.src, args.axes, str(inp))
        self.factor = args.factor if args.task == "sr" else 1
        out_shape = list(self.src.shape)
        out_shape[self.layout.y] *= self.factor
        out_shape[self.layout.x] *= self.factor
        self.out_shape = out_shape
        self.out_dtype = result_dtype(args, self.src.dtype)
        check_output(out, self.out_dtype, out_shape, self.letters)
        self.mask_info, mask = self._mask()
        self.masks = axes.slice_masks(mask, self.layout.n_slices, self.layout.yx_shape)
        self.plane_letters = _plane_letters(self.letters, self.layout)
        self.cax = self.layout.plane_channel_axis
        self.stack_letters = [self.letters[a] for a in self.layout.stack]
        self._cached = (None, None)

    def close(self) -> None:
        self.src.close()

    def _mask(self):
        args = self.args
        if args.task == "inpaint" and not args.mask:
            raise ValueError("--task inpaint needs --mask (non-zero pixels = pixels to fill)")
        if args.mask and args.task != "inpaint":
            raise ValueError("--mask is only used with --task inpaint")
        if not args.mask:
            return None, None
        import hashlib

        from ._cli import mask_to_fill

        raw = _io.read_image(args.mask, role="mask").data
        mask = self.layout.fold_mask(mask_to_fill(raw, args), f"mask {args.mask!r}",
                                     f"input {str(self.inp)!r}")
        info = {"path": str(args.mask), "shape": list(raw.shape),
                "sha1": hashlib.sha1(np.ascontiguousarray(raw)).hexdigest()[:12],
                **({"inverted": True} if args.invert_mask else {})}
        return info, mask

    # -- pixels -----------------------------------------------------------------------
    def where(self, i: int) -> tuple:
        return self.layout.slice_position(i) if self.layout.stack else ()

    def read(self, i: int) -> np.ndarray:
        """Folded plane ``i``, read from disk now (the latest one is kept for its tiles)."""
        if self._cached[0] != i:
            letters, layout = self.letters, self.layout
            coords = dict(zip(layout.stack, self.where(i)))
            index = tuple(coords.get(a, slice(None)) for a in range(len(letters)))
            kept = [letters[a] for a in range(len(letters)) if a not in coords]
            # Read here, whatever cluster is about: the file is open in this process only.
            plane = np.asarray(self.src.data[index].compute(scheduler="synchronous"))
            self._cached = (i, np.transpose(plane, [kept.index(a) for a in self.plane_letters]))
        return self._cached[1]

    def write(self, i: int, plane: np.ndarray) -> None:
        from .engine.tiles import cast_to

        coords = dict(zip(self.stack_letters, self.where(i)))
        self.sink.write(coords, self.plane_letters, cast_to(plane, self.out_dtype))

    # -- planning -----------------------------------------------------------------------
    def plan(self) -> None:
        from .choices import resolve_preset
        from .engine.devices import resolve_device
        from .engine.presets import make_config
        from .engine.tiles import choose_tiling
        from .engine.units import plan_units

        args = self.args
        device = resolve_device(args.device)
        self.preset = resolve_preset(args.preset, device.type)
        spec = make_config(args.task, self.preset,
                           self.factor if args.task == "sr" else None).net
        self.tiling = choose_tiling(self.layout.yx_shape, spec, device, self.factor,
                                    tile=args.tile or None)
        self.tile = self.tiling.tile
        self.overlap = self.tiling.overlap if self.tiling.tiled else None
        self.units = plan_units(self.layout.n_slices, self.tiling)

    def fixed_stack_mode(self, remote: bool) -> dict | None:
        """The stack mode where the slices do not decide it: as asked, or 'slices' where units
        cannot start from the one before (tiles, dask workers, a batch); None: chosen from how
        alike neighbouring slices are (:class:`~.engine.stacks.NeighbourCorrelation`), as a
        stack in memory is. ValueError for a warm start these units cannot have."""
        args = self.args
        why = ("its slices are restored in tiles" if self.tiling.tiled else
               "dask workers restore units independently" if remote else
               f"a batch of {args.batch} units fitted together was asked for"
               if (args.batch or 1) > 1 else None)
        if args.stack_mode == "warm" and why:
            raise ValueError(f"--stack-mode warm starts each slice from the one before, in order; "
                             f"input {str(self.inp)!r} cannot have it: {why} (--tile, "
                             "--workers, --scheduler and --batch fit units independently). "
                             "Use --stack-mode slices, or leave those options out")
        from .engine.stacks import fixed_stack_mode

        return fixed_stack_mode(args.stack_mode, self.layout.n_slices, why)

    def settings(self, seed: int) -> dict:
        from . import __version__

        a = self.args
        return {
            "napari_dip": __version__, "task": a.task, "preset": self.preset,
            "factor": a.factor if a.task == "sr" else None, "seed": seed,
            "max_iters": a.max_iters, "stopping": a.stopping, "patience": a.patience,
            **({"refine": a.refine} if a.refine is not None else {}),
            "channels": a.channels, "composite": a.composite, "mask": self.mask_info,
            "axes": self.letters, "input_shape": list(self.src.shape),
            "input_dtype": str(self.src.dtype), "output_dtype": str(self.out_dtype),
            "tile": self.tile, "overlap": self.overlap,
            **({"stack_mode": a.stack_mode} if a.stack_mode is not None else {}),
        }

    def fit_map(self, on_plane=None):
        """One intensity map over every slice that is restored (one slice read at a time);
        ``on_plane`` sees each slice that counts (:func:`~.engine.units.shared_map`)."""
        from .engine.units import shared_map

        return shared_map(self.read, range(self.layout.n_slices), self.masks, self.cax,
                          self.args.task, self.layout.colour, f"input {str(self.inp)!r}",
                          tiling=self.tiling, on_plane=on_plane,
                          slice_name=lambda i: f"input {str(self.inp)!r} slice {self.where(i)}")

    def shared_choices(self, options: dict) -> dict:
        """``options`` with the choices every unit shares (the noise model, a deconvolution's
        headroom: :mod:`.engine.shared`), as :meth:`open` made or found them."""
        from .engine.shared import CHOICE_KEYS

        return {**{k: v for k, v in options.items() if k not in CHOICE_KEYS}, **self.choices}

    def make_choices(self, sample, saved: dict | None) -> dict:
        """The shared choices: from the slices of ``sample``, or as a run being resumed
        ``saved`` them (then ``sample`` saw nothing; the PSF is prepared again)."""
        from ._cli import engine_options
        from .engine.operators import Headroom
        from .engine.shared import CHOICE_KEYS
        from .engine.vst import NoiseModelChoice

        options = engine_options(self.args)
        given = {k: options[k] for k in CHOICE_KEYS if k in options}
        if saved is not None:
            given["noise_model"] = NoiseModelChoice.from_dict(saved["noise_model"])
            if saved.get("headroom") is not None:
                given["headroom"] = Headroom.from_dict(saved["headroom"])
        return sample.choices(options["task"], self.norm, f"input {str(self.inp)!r}", **given)

    def print_plan(self, finished: int, mode: dict | None = None) -> None:
        """The dry run's plan: the units, the stack mode (``mode``; None: chosen when the run
        reads the slices), then what one fit needs (as a run in memory says)."""
        from ._cli import fit_summary, levels_decide, psf_plan_line, time_line
        from .engine.devices import choose_threads, resolve_device
        from .engine.intensity import FEW_LEVELS
        from .engine.presets import make_config

        args, (h, w), tile, f = self.args, self.layout.yx_shape, self.tile, self.factor
        device = resolve_device(args.device)
        config = make_config(args.task, self.preset, f if args.task == "sr" else None,
                             max_iters=args.max_iters, stopping=args.stopping,
                             refine=args.refine)
        threads = args.threads or choose_threads() if device.type == "cpu" else None
        fit_hw = (min(tile or h, h) * f, min(tile or w, w) * f)
        lay = self.layout
        channels = 1 if lay.channel is None else self.src.shape[lay.channel]
        separate = args.channels == "separate"
        print("\n".join([
            f"input {str(self.inp)!r}: {self.layout.n_slices} slice(s) of {h}x{w}, "
            f"{len(self.units)} unit(s)"
            + (f" in tiles of {tile} px (overlap {self.overlap})" if tile else "")
            + (f"; {finished} finished before" if finished else ""),
            *([] if not self.layout.stack else [
                "stack mode: warm when neighbouring slices are alike, else slices (decided "
                "when the run reads them)" if mode is None else
                f"stack mode: {mode['mode']} ({mode['reason']})"]),
            *psf_plan_line(args, bool(self.layout.stack)),
            *([f"result type: {self.out_dtype}, or float32 if the input spans fewer than "
               f"{FEW_LEVELS} integer levels (decided when the run reads it)"]
              if levels_decide(args, self.src.dtype) else [f"result type: {self.out_dtype}"]),
            *fit_summary(config, self.preset, device, threads, fit_hw),
            time_line(args, args.task, (h, w), 1 if separate else channels,
                      self.layout.n_slices * (channels if separate else 1), self.preset,
                      device, threads)]))

    def open(self, remote: bool = False) -> bool:
        """Plan, check against what an earlier run left, open the output; False: dry run.
        ``remote``: dask workers run the units."""
        from ._cli import levels_decide, result_dtype
        from ._lazy_io import check_output
        from ._ledger import Ledger, fingerprint
        from .engine.intensity import IntensityMap
        from .engine.shared import PlaneSample

        args, out = self.args, self.out
        self.plan()
        mode = self.fixed_stack_mode(remote) if self.layout.stack else None
        self.ledger = Ledger(_ledger_folder(out))
        old = self.ledger.settings()
        if old is not None and args.restart:
            self.ledger.remove()
            old = None
        seed = args.seed if args.seed is not None else (
            old["seed"] if old else int(np.random.default_rng().integers(2**31 - 1)))
        settings = self.settings(seed)
        if old is not None:
            changed = Ledger.changes(old, settings)
            if changed:
                raise ValueError(
                    f"output {str(out)!r} holds part of a run with other settings "
                    f"({'; '.join(changed)}); run the same command as before to resume it, "
                    "add --restart to start again with these settings, or choose another "
                    "output")
        if args.dry_run:
            self.print_plan(finished=len(self.ledger.entries()) if old else 0, mode=mode)
            return False
        saved_choices = None if old is None else old.get("shared_choices")
        if saved_choices is None:
            sample, mode, levels = self._first_pass(mode)
        else:  # a resume: what the pass gave is in the ledger, so no slice is read for it
            sample = PlaneSample([])
            if self.layout.stack and mode is None:
                # Ledgers before warm starts unit by unit: their units were fitted cold.
                mode = saved_choices.get("stack_mode") or {
                    "mode": "slices", "requested": None, "reason": "resumed a run begun so"}
            levels = saved_choices.get("input_levels")  # none saved by older versions
        self.mode, self.levels = mode, levels
        if levels_decide(args, self.src.dtype):  # the result's type, known only now
            self.out_dtype = result_dtype(args, self.src.dtype, levels)
            check_output(out, self.out_dtype, self.out_shape, self.letters)
        if old is not None:
            saved = old["normalisation"]
            self.norm = IntensityMap(tuple(saved["data_low"]), tuple(saved["data_high"]),
                                     saved["dtype"], saved["outliers"])
        self.choices = self.make_choices(sample, saved_choices)
        settings["normalisation"] = {"data_low": list(self.norm.data_low),
                                     "data_high": list(self.norm.data_high),
                                     "dtype": self.norm.dtype, "outliers": self.norm.outliers}
        settings["shared_choices"] = {
            "noise_model": self.choices["noise_model"].to_dict(),
            "headroom": None if self.choices.get("headroom") is None
            else self.choices["headroom"].to_dict(),
            "stack_mode": mode, "input_levels": levels}
        self.seed, self.settings_, self.fp = seed, settings, fingerprint(settings)
        self.sink = self._sink(resume=old is not None)
        if old is None:
            self.ledger.start(settings)
        # Each warm slice starts from the network the slice before it ended with; a resumed
        # run, from the one the ledger kept.
        self.warm_states = None
        if mode is not None and mode["mode"] == "warm":
            self.warm_states = (self.ledger.load_states() if old is not None else None) or {}
        return True

    def _first_pass(self, mode: dict | None):
        """One pass over the input, a slice at a time: the intensity map, the slices the
        shared choices are made from, how alike neighbours are (the stack ``mode``, where not
        fixed) and the integer levels the input spans. Returns (sample, mode, levels)."""
        from ._cli import resolve_task
        from .engine.shared import PlaneSample
        from .engine.stacks import NeighbourCorrelation
        from .engine.units import LevelSample

        n = self.layout.n_slices
        sample = PlaneSample(range(n), brightest=resolve_task(self.args) == "deconvolve")
        neighbours, levels = NeighbourCorrelation(), LevelSample(range(n))

        def see(i, colour, known):
            sample.see(i, colour, known)
            neighbours.see(colour)
            levels.see(i, colour, known)

        self.norm = self.fit_map(on_plane=see)
        if self.layout.stack and mode is None:
            mode = neighbours.choice()
        return sample, mode, levels.levels

    def _sink(self, resume: bool):
        from ._lazy_io import MemorySink, TiffSink

        src, out, f = self.src, self.out, self.factor
        if is_zarr(out):
            from ._zarr_io import ZarrSink

            scale = {a: (v / f if a in "YX" else v) for a, v in src.scale.items()}
            sink = ZarrSink(out, dict(zip(self.letters, self.out_shape)), self.out_dtype,
                            self.letters, scale, src.units, src.omero, src.channel_names,
                            resume=resume)
            sink.group.require_group("napari_dip")  # the ledger's folder, a zarr group
            return sink
        calibration = src.calibration(f)
        if out.suffix.lower() in _io.TIFF_SUFFIXES:
            return TiffSink(out, self.out_shape, self.out_dtype, self.letters, calibration,
                            resume=resume)
        return MemorySink(out, self.out_shape, self.out_dtype, self.letters, calibration)

    # -- running ----------------------------------------------------------------------
    def run(self, executor, cancel) -> int:
        from ._cli import engine_options

        if not self.open(remote=executor.remote):
            return 0
        self.entries = self.ledger.entries()
        done = {k for k, e in self.entries.items() if e["status"] in ("done", "skipped")}
        self.by_slice: dict[int, list] = {}
        for u in self.units:
            self.by_slice.setdefault(u.slice, []).append(u)
        self.options = self.shared_choices({**engine_options(self.args),
                                            "threads": executor.threads})
        self.bar = _UnitBar(len(self.units), sum(u.key in done for u in self.units),
                            disabled=self.args.quiet, name=self.out.name)
        try:
            executor.run(self.jobs(done, cancel), self.handle, cancel, self.bar.progress)
            # Tiles finished before an interruption that came before their slice was blended.
            for i, group in self.by_slice.items():
                if group[0].tile is not None and all(u.key in done for u in group) and \
                        self.entries.get(f"s{i:06d}", {}).get("status") != "done":
                    self.blend(i)
        finally:
            self.bar.close()
        return self.finish(cancel)

    def jobs(self, done: set, cancel):
        """The units still to do, with their pixels (read now); skipped ones handled here."""
        from .engine.units import skip_reason, unit_input, unit_mask

        for u in self.units:
            if cancel.is_set():
                return
            if u.key in done:
                continue
            data = unit_input(self.read(u.slice), u, self.cax)
            mask = unit_mask(self.masks[u.slice], u)
            reason = skip_reason(data, mask, self.cax, self.args.task)
            if reason is not None:
                self.handle(u, {"status": "skipped", "skipped": reason})
                continue
            name = f"input {str(self.inp)!r}"
            if self.layout.stack:
                name += f" slice {self.where(u.slice)}"
            if u.tile is not None:
                name += f" tile {u.tile.index}"
            yield u, dict(data=data, mask=mask, options=self.unit_options(),
                          normalisation=self.norm, seed=self.seed, channel_axis=self.cax,
                          name=name)

    def unit_options(self) -> dict:
        """The engine's keywords for the next unit: a warm one starts from the weights the
        last restored slice ended with (updated in place by the fit), with the smaller steps
        of a warm start (:data:`~.engine.stacks.WARM_SETTINGS`), as a stack in memory does.
        Called when the unit is sent, after the one before it has finished."""
        if self.warm_states is None:
            return self.options
        from .engine.stacks import _warm_settings

        return {**self.options, **_warm_settings(self.warm_states, self.options),
                "warm_states": self.warm_states, "batch": 1}

    def handle(self, unit, result: dict) -> None:
        """Write a finished unit (a restored, skipped or failed one) and record it."""
        from .engine.units import passthrough, unit_input

        self.entries[unit.key] = entry = _unit_entry(unit, result, self.fp)
        if result["status"] in ("done", "partial"):
            image = result["image"]
        else:
            image = passthrough(unit_input(self.read(unit.slice), unit, self.cax), self.cax,
                                self.factor)
        if unit.tile is None:
            self.write(unit.slice, image)
            if self.warm_states and result["status"] == "done":
                self.ledger.save_states(self.warm_states)  # before the unit counts as done
            self.ledger.record(unit.key, entry)
        else:
            self.ledger.save_tile(unit.key, image)
            self.ledger.record(unit.key, entry)
            if all(u.key in self.entries for u in self.by_slice[unit.slice]):
                self.blend(unit.slice)
        self.bar.advance(unit, entry)

    def blend(self, i: int) -> None:
        """Blend a slice's tiles into it and write it."""
        from .engine import arrays
        from .engine.tiles import Blender
        from .engine.units import passthrough, unit_input

        group, plane = self.by_slice[i], self.read(i)
        lay = arrays.infer_layout(plane, self.cax)
        cyx = lay.to_cyx(plane)
        h, w = cyx.shape[1:]
        blender = Blender((cyx.shape[0], h * self.factor, w * self.factor),
                          [u.tile for u in group], self.factor)
        for u in group:
            tile_out = self.ledger.load_tile(u.key)
            if tile_out is None:
                tile_out = passthrough(unit_input(plane, u, self.cax), self.cax, self.factor)
            blender.add(u.tile, lay.to_cyx(tile_out))
        self.write(i, lay.from_cyx(blender.result()))
        statuses = {self.entries[u.key]["status"] for u in group}
        if statuses <= {"done", "skipped"}:
            key = f"s{i:06d}"
            self.ledger.record(key, {"unit": key, "slice": i, "status": "done",
                                     "settings": self.fp})
            self.entries[key] = {"status": "done"}
            self.ledger.drop_tiles(u.key for u in group)

    def finish(self, cancel) -> int:
        """The output's record, the summary and the exit code."""
        from .choices import result_type_record
        from .engine.shared import choices_record
        from .engine.stopping import combine_stop_reasons

        entries, n = self.entries, self.layout.n_slices
        slices = []
        for i in range(n):
            group = [entries[u.key] for u in self.by_slice[i] if u.key in entries]
            if group:
                slices.append(_slice_entry(i, group))
        statuses = [entries.get(u.key, {}).get("status") for u in self.units]
        interrupted = cancel.is_set() or any(s in (None, "partial") for s in statuses)
        errors = [{"slice": e["slice"], "error": e["error"]} for e in slices if "error" in e]
        fitted = [e for e in slices if e.get("stop_reason")]
        record = {
            **{k: v for k, v in self.settings_.items() if k != "shared_choices"},
            **choices_record(self.options),
            **({"stack_mode": self.mode} if self.mode is not None else {}),
            "output_dtype": str(self.out_dtype),
            "result_type": result_type_record(self.args.output_dtype, self.args.task,
                                              self.out_dtype, self.levels),
            "calibration": _io.calibration_record(self.src.calibration()),
            "slices": slices,
            "slices_done": [e["slice"] for e in slices if e.get("stop_reason") not in (
                None, "user") and "error" not in e],
            "stop_reason": "user" if interrupted else combine_stop_reasons(
                [e["stop_reason"] for e in fitted]) if fitted else "cap",
            "iterations": sum(e["iterations"] for e in slices),
            "best_iteration": [e.get("best_iteration") for e in slices],
            "seconds": round(sum(e["seconds"] for e in slices), 3),
        }
        if errors:
            record["errors"] = errors
        self.sink.finish(record, not interrupted)
        if not interrupted and not errors and not is_zarr(self.out):
            self.ledger.remove()  # the file holds the record now; nothing is left to resume
        self._report(record, slices, interrupted)
        if interrupted:
            return 130
        return 1 if errors else 0

    def _report(self, record, slices, interrupted) -> None:
        from ._cli import psf_note
        from .formatting import choice_notes

        units = self.entries.values()
        cpu = sum(p.get("cpu_seconds", 0.0) for e in units for p in (e.get("planes") or []))
        devices = sorted({str(e["device"]) for e in units if e.get("device")})
        print(f"wrote {self.out}: {len(slices)}/{self.layout.n_slices} slice(s) in "
              f"{len(self.units)} unit(s); {record['iterations']} iterations, "
              f"{record['seconds']:.0f} s fitting ({cpu:.0f} CPU-s) on "
              f"{', '.join(devices) or 'no device'}, seed {self.seed}", file=sys.stderr)
        for line in choice_notes(record).split("\n")[1:] + psf_note(record, bool(self.layout.stack)):
            print(f"  {line}", file=sys.stderr)
        for e in slices:
            at = self.where(e["slice"])
            if e.get("skipped"):
                print(f"  slice {at}: passed through unchanged ({e['skipped']})",
                      file=sys.stderr)
            elif "error" in e:
                print(f"napari-dip: error: slice {at} was not restored (written unchanged): "
                      f"{e['error']}", file=sys.stderr)
        if interrupted:
            print(f"  {self.out}: interrupted; what was finished is kept, run the same command "
                  "to resume", file=sys.stderr)
        elif record.get("errors"):
            print("  rerunning the same command tries the failed units again",
                  file=sys.stderr)


class _UnitBar:
    """A progress bar over units; in-process runs also show the running fit's iteration."""

    def __init__(self, total: int, done: int, disabled: bool, name: str):
        self.bar = None
        if not disabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="unit", desc=name,
                            file=sys.stderr, mininterval=1.0)

    def progress(self, p) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"it {p.iteration} {p.status}", refresh=False)

    def advance(self, unit, entry) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if entry.get("status") == "error":
                self.bar.write(f"unit {unit.key} failed: {entry.get('error')}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------ main
def run_units(args) -> int:
    """Restore every (input, output) pair unit by unit; the worst exit code of the files."""
    todo = pairs(args)
    if len(todo) > 1:
        Path(args.output).mkdir(exist_ok=True)
    cancel = threading.Event()
    from ._cluster import DaskUnits, SerialUnits

    executor = (DaskUnits(args.workers, args.scheduler, args.threads)
                if (args.workers or args.scheduler) and not args.dry_run
                else SerialUnits(args.threads))
    from ._cli import _interrupt

    previous = signal.signal(signal.SIGINT, lambda *_: _interrupt(cancel))
    codes = []
    try:
        for inp, out in todo:
            if cancel.is_set():
                break
            try:
                run = _FileRun(args, inp, out)
                try:
                    codes.append(run.run(executor, cancel))
                finally:
                    run.close()
            except (ValueError, FileNotFoundError, OSError, MemoryError) as exc:
                if len(todo) == 1:
                    raise
                print(f"napari-dip: error: {inp}: {exc}", file=sys.stderr)
                codes.append(2)
    except KeyboardInterrupt:
        print("napari-dip: aborted; the units finished so far are kept, run the same command "
              "to resume", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
        executor.close()
    if len(todo) > 1:
        failed = sum(c != 0 for c in codes)
        print(f"{len(codes) - failed}/{len(todo)} file(s) restored into {args.output}",
              file=sys.stderr)
    if cancel.is_set() or 130 in codes:
        return 130
    return max(codes, default=0)
