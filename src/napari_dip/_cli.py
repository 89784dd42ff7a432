"""`napari-dip restore INPUT OUTPUT ...`: restore an image file from the command line.

Argument parsing, file I/O and a progress bar; the maths is in :mod:`napari_dip.engine`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import replace

from ._io import (FORMATS_HELP, ImageFile, calibration_record, check_output_path,
                  read_image, write_image)
from .choices import (CHANNELS, NOISE_MODEL, OUTPUT_DTYPE, PRESET, REFINE, SR_FACTOR, STACK_MODE,
                      STOPPING, TASK, result_is_float, result_type_record)
from .formatting import choice_notes
from .engine.axes import from_letters


EXIT_CODES = (
    "exit codes: 0 restored; 1 written, but some slices of a stack failed (the message names "
    "them); 2 bad input or options, nothing written; 130 stopped by Ctrl-C: pressed once, the "
    "best result so far is written; pressed twice, nothing is."
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="napari-dip", description="Deep Image Prior restoration of microscopy and other images."
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "restore",
        help="restore an image file",
        description="Restore INPUT (TIFF, PNG, JPEG or BMP) and write OUTPUT, in the input's "
        "dtype and axes. Without --max-iters the automatic stopping rule decides when to stop. "
        "Press Ctrl-C once to stop early and still write the best result so far. "
        f"Output formats: {FORMATS_HELP}",
        epilog=EXIT_CODES,
    )
    r.add_argument("input", nargs="+", help="image file(s): TIFF, PNG, JPEG, BMP or OME-Zarr "
                   "(.zarr); several files, a folder or a quoted glob restore each into OUTPUT, "
                   "a folder")
    r.add_argument("output", help="output file (its extension picks the format; .zarr is "
                   "OME-Zarr), or a folder for several inputs")
    r.add_argument("--task", choices=TASK.values, default=TASK.default,
                   help=f"{TASK.describe()} (default: %(default)s)")
    r.add_argument("--mask", help="for --task inpaint: image of the input's height and width "
                   "(or one per slice) whose non-zero pixels are the ones to fill")
    r.add_argument("--invert-mask", action="store_true",
                   help="for --task inpaint: the mask's non-zero pixels are the ones to keep "
                   "(as in the DIP repository's masks); the others are filled")
    r.add_argument("--no-composite", dest="composite", action="store_false",
                   help="for --task inpaint: return the network's output everywhere (default: "
                   "known pixels are kept exactly, only masked ones are filled)")
    r.add_argument("--factor", type=int, choices=SR_FACTOR.values, default=SR_FACTOR.default,
                   help="super-resolution factor (default: %(default)s)")
    r.add_argument("--max-iters", type=int, help="iteration cap (default: the task's preset)")
    r.add_argument("--preset", choices=PRESET.values, default=PRESET.default,
                   help=f"network preset: {PRESET.describe()} (default: %(default)s)")
    r.add_argument("--device", default="auto",
                   help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    r.add_argument("--seed", type=int, help="random seed (default: a random one; the seed used "
                   "is printed and recorded in the output either way)")
    r.add_argument("--stopping", choices=STOPPING.values,
                   help=f"automatic stopping rule: {STOPPING.describe()} (default: the task's: "
                   f"{STOPPING.default} to denoise or deconvolve, none for inpaint, sr and jpeg, "
                   "which run the paper's iteration counts)")
    r.add_argument("--refine", choices=REFINE.values,
                   help=f"second stage on the fit's estimate: {REFINE.describe()} (default: the "
                   "task's: auto to denoise without a guide, none otherwise)")
    r.add_argument("--patience", type=int, help="iterations without improvement before stopping "
                   "(default: the task's preset)")
    r.add_argument("--channels", choices=CHANNELS.values, default=CHANNELS.default,
                   help="restore channels with one network (joint) or one run each (separate) "
                   "(default: %(default)s)")
    r.add_argument("--noise-model", choices=NOISE_MODEL.values, default=NOISE_MODEL.default,
                   help=f"data term: {NOISE_MODEL.describe()}; auto picks Poisson-Gaussian when "
                   "the noise fitted to the image grows with intensity (default: %(default)s; the "
                   "choice and the fitted gain and read noise are recorded)")
    r.add_argument("--output-dtype", choices=OUTPUT_DTYPE.values, default=OUTPUT_DTYPE.default,
                   help=f"the result's type: {OUTPUT_DTYPE.describe()}; auto keeps the input's "
                   "type where the output's format cannot hold float32 (PNG) "
                   "(default: %(default)s)")
    r.add_argument("--psf", metavar="FILE", help="PSF image (2-D or 3-D TIFF/PNG; normalised and "
                   "re-centred): makes the task a deconvolution (joint denoising and deblurring)")
    r.add_argument("--psf-sigma", metavar="S[,S,S]", help="Gaussian PSF instead of a file: sigma "
                   "in pixels, one value or Z,Y,X (also makes the task a deconvolution)")
    r.add_argument("--guide", metavar="FILE", help="guide image of the output's height and width "
                   "(e.g. a cleaner channel or a flash photo): the network's input instead of "
                   "noise")
    r.add_argument("--stack-mode", choices=STACK_MODE.values, default=None,
                   help=f"stacks: {STACK_MODE.describe()} (default: warm when neighbouring "
                   "slices are alike, else slices; tiled stacks, --batch N and stacks sent to "
                   "workers go slice by slice)")
    r.add_argument("--axes", help="axes of the input, e.g. ZYX, TCYX or YXS; overrides the "
                   "file's (letters other than Y, X, C and S are stacked and done slice by slice)")
    r.add_argument("--threads", type=int, help="CPU threads (default: the cores other processes "
                   "leave free; NAPARI_DIP_THREADS also sets it)")
    r.add_argument("--batch", type=_positive, metavar="N",
                   help="fit N slices or tiles of a stack (or, with --channels separate, N "
                   "channels) at once as independent networks in one pass; 1: one at a time "
                   "(default: several on CUDA as memory allows, 1 elsewhere; --workers and "
                   "--scheduler send one unit at a time)")
    r.add_argument("--dry-run", action="store_true", help="check the input and print the planned "
                   "work, its memory need and a fit step's time measured here (with the bound "
                   "the iteration cap sets), then exit without restoring")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    from ._batch_cli import add_arguments

    add_arguments(r)
    return p


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


#: A mask that marks more than this share of the pixels to fill is probably inverted: the run
#: says how to read it the other way round (--invert-mask).
MOST_FILLED = 0.75


def mask_to_fill(raw, args: argparse.Namespace):
    """The mask as the engine takes it (non-zero = fill): as read, or inverted with
    --invert-mask. A mask that leaves little known gets a note on --invert-mask."""
    from .engine.arrays import fill_of

    fill = fill_of(raw)
    if args.invert_mask:
        fill = ~fill
    share = float(fill.mean()) if fill.size else 0.0
    if args.invert_mask and fill.size and not fill.any():
        raise ValueError(f"mask {args.mask!r}, inverted (--invert-mask), leaves no pixel to fill: "
                         "every pixel of it is non-zero. Leave out --invert-mask if its non-zero "
                         "pixels are the ones to fill")
    if share > MOST_FILLED and args.invert_mask:
        print(f"note: mask {args.mask!r}, inverted, leaves {100 * share:.0f} % of the pixels to "
              "fill; if its non-zero pixels are the ones to fill, leave out --invert-mask",
              file=sys.stderr)
    elif share > MOST_FILLED:
        print(f"note: mask {args.mask!r} marks {100 * share:.0f} % of the pixels to fill "
              "(non-zero = fill); if its non-zero pixels are the ones to keep, as in the DIP "
              "repository's masks, add --invert-mask", file=sys.stderr)
    return fill if args.invert_mask else raw


def _layout(src: ImageFile, axes: str | None, path: str):
    """The input's axis roles; a file that does not name its axes is sent to --axes."""
    letters = (axes or src.axes).upper()
    if axes is None and len(set(letters)) < len(letters):
        unknown = sorted({a for a in letters if letters.count(a) > 1})
        example = "TZCYX"[-len(letters):] if len(letters) <= 5 else None
        raise ValueError(
            f"input {path!r} does not say what its axes {src.data.shape} are (read as "
            f"{letters!r}: the repeated {', '.join(map(repr, unknown))} marks axes of unknown "
            f"meaning); name them with --axes" + (f", e.g. --axes {example}" if example else "")
        )
    layout = from_letters(letters, src.data.shape)
    generic = [a for a in letters if a in "QI"]  # tifffile's axes of unknown meaning
    if axes is None and len(generic) == 1:  # stacked, and said so
        n = src.data.shape[letters.index(generic[0])]
        named = letters.replace(generic[0], "C")
        print(f"note: input {path!r} does not say what its axis of length {n} is (read as "
              f"{letters!r}); it is restored as a stack of {n} slices. If it holds channels, "
              f"add --axes {named}", file=sys.stderr)
    return letters, layout


def run_restore(args: argparse.Namespace) -> int:
    check_output_path(args.output)
    src = read_image(args.input)
    mask = None
    if args.mask:
        if args.task != "inpaint":
            raise ValueError("--mask is only used with --task inpaint")
        mask = read_image(args.mask, role="mask").data
    elif args.task == "inpaint":
        raise ValueError("--task inpaint needs --mask (non-zero pixels = pixels to fill)")
    options = engine_options(args)  # checks the PSF options before the run
    axes, layout = _layout(src, args.axes, args.input)
    if mask is not None:
        mask = mask_to_fill(mask, args)
    guide = _read_guide(args, layout) if args.guide else None
    out_shape = list(src.data.shape)
    if args.task == "sr":
        out_shape[layout.y] *= args.factor
        out_shape[layout.x] *= args.factor
    check_output_path(args.output, result_dtype(args, src.data.dtype), tuple(out_shape), axes)
    planes = layout.fold(src.data)
    if mask is not None:
        mask = layout.fold_mask(mask, f"mask {args.mask!r}", f"input {args.input!r}")
    levels = None
    if levels_decide(args, src.data.dtype):
        from .engine.units import folded_levels

        levels = folded_levels(planes, layout, mask, options["task"], f"input {args.input!r}")
    out_dtype = result_dtype(args, src.data.dtype, levels)

    stack = _stack_options(args, src, layout, axes)
    if args.dry_run:
        print(_plan_summary(args, planes, layout, options["task"], stack.get("voxel_size")))
        print(result_type_line(args, options["task"], out_dtype, levels))
        return 0
    from .engine import restore, restore_stack

    cancel = threading.Event()
    bar = _ProgressBar(disabled=args.quiet)
    kwargs = dict(**options, mask=mask, seed=args.seed, cancel=cancel,
                  callback=bar.update, name=f"input {args.input!r}", guide=guide,
                  guide_name=f"guide {args.guide!r}",
                  as_float=out_dtype == "float32")
    kwargs.update(stack)
    previous = signal.signal(signal.SIGINT, lambda *_: _interrupt(cancel))
    try:
        restore_fn = restore_stack if layout.is_stack else restore
        result = restore_fn(planes, channel_axis=layout.plane_channel_axis, **kwargs)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()

    out = layout.unfold(result.image)
    resolution = src.resolution
    if resolution is not None and args.task == "sr":
        resolution = (resolution[0] * args.factor, resolution[1] * args.factor)
    rec = {**result.record, "calibration": calibration_record(src.calibration()),
           "result_type": result_type_record(args.output_dtype, options["task"], out_dtype,
                                             levels)}
    write_image(args.output, replace(src, data=out, axes=axes, resolution=resolution), rec)
    threads = "" if rec.get("threads") is None else f" with {rec['threads']} thread(s)"
    print(
        f"wrote {args.output}: {out.shape} {out.dtype}; {rec['iterations']} iterations, "
        f"kept iteration {rec['best_iteration']} ({rec['stop_reason']}), {rec['seconds']:.0f} s "
        f"({_cpu_seconds(rec):.0f} CPU-s) on {rec.get('device')}{threads}, seed {rec['seed']}",
        file=sys.stderr,
    )
    for line in choice_notes(rec).split("\n")[1:] + psf_note(rec, layout.is_stack):
        print(f"  {line}", file=sys.stderr)
    for entry in rec.get("slices", []):
        where = layout.slice_position(entry["slice"])
        if "skipped" in entry:
            print(f"  slice {where}: passed through unchanged ({entry['skipped']})",
                  file=sys.stderr)
        elif "error" in entry:
            print(f"napari-dip: error: slice {where} was not restored (written unchanged): "
                  f"{entry['error']}", file=sys.stderr)
    if rec["stop_reason"] == "user":
        return 130
    return 1 if rec.get("errors") else 0


def engine_options(args: argparse.Namespace) -> dict:
    """The engine's keywords from the command line (every path through the CLI uses them)."""
    task, psf = _psf_options(args)
    return dict(task=task, factor=args.factor, max_iters=args.max_iters,
                preset=args.preset, device=args.device, stopping=args.stopping,
                refine=args.refine, patience=args.patience, channels=args.channels, composite=args.composite,
                threads=args.threads, batch=args.batch, mask_name=f"mask {args.mask!r}",
                noise_model=args.noise_model, **psf)


def needs_whole_stack(args: argparse.Namespace) -> bool:
    """Whether the run must hold the stack in memory (--stack-mode 3d, --guide), instead of
    going unit by unit where it would (a warm start goes either way: each slice starts from
    the one before)."""
    if args.stack_mode != "3d" and not args.guide:
        return False
    what = "--stack-mode 3d" if args.stack_mode == "3d" else "--guide"
    if len(args.input) > 1 or args.tile or args.workers or args.scheduler:
        raise ValueError(f"{what} restores one image in memory, in order; it cannot be combined "
                         "with several inputs, --tile, --workers or --scheduler")
    return True


def resolve_task(args: argparse.Namespace) -> str:
    """The task: a PSF (file or sigmas) makes 'denoise' a deconvolution."""
    has_psf = bool(args.psf or args.psf_sigma)
    if args.psf and args.psf_sigma:
        raise ValueError("give either --psf or --psf-sigma, not both")
    if args.task == "deconvolve" and not has_psf:
        raise ValueError("--task deconvolve needs a PSF: --psf FILE or --psf-sigma S[,S,S]")
    if has_psf and args.task not in ("denoise", "deconvolve"):
        raise ValueError(f"--psf and --psf-sigma make the task a deconvolution; they cannot be "
                         f"combined with --task {args.task}")
    return "deconvolve" if has_psf else args.task


def result_dtype(args: argparse.Namespace, dtype, levels: int | None = None):
    """The result's dtype: the input's ``dtype``, or float32 (--output-dtype; 'auto': for a
    deconvolution, or an integer input spanning few ``levels``
    (:func:`~napari_dip.choices.result_is_float`), where the output's format holds float32)."""
    import numpy as np
    from pathlib import Path

    from ._io import PIL_SUFFIXES

    if result_is_float(args.output_dtype, resolve_task(args), levels) and (
            args.output_dtype == "float32"
            or Path(args.output).suffix.lower() not in PIL_SUFFIXES):
        return np.dtype(np.float32)
    return np.dtype(dtype)


def result_type_line(args: argparse.Namespace, task: str, dtype, levels: int | None) -> str:
    """The dry run's line on the result's type (and why 'auto' chose float32)."""
    reason = result_type_record(args.output_dtype, task, dtype, levels).get("reason")
    return f"result type: {dtype}" + (f" ({args.output_dtype}: {reason})" if reason else "")


def levels_decide(args: argparse.Namespace, dtype) -> bool:
    """Whether the result's type depends on how many integer levels the input spans: 'auto',
    an integer input, a task other than deconvolution (always float32) and an output format
    that holds float32."""
    import numpy as np
    from pathlib import Path

    from ._io import PIL_SUFFIXES

    return (args.output_dtype == "auto" and np.issubdtype(dtype, np.integer)
            and resolve_task(args) != "deconvolve"
            and Path(args.output).suffix.lower() not in PIL_SUFFIXES)


def _psf_options(args: argparse.Namespace) -> tuple[str, dict]:
    """The task and the PSF keywords."""
    from .engine.psf import parse_sigma

    task = resolve_task(args)
    if args.psf:
        return task, {"psf": read_image(args.psf, role="PSF").data,
                      "psf_name": f"PSF {args.psf!r}"}
    if args.psf_sigma:
        return task, {"psf_sigma": parse_sigma(args.psf_sigma)}
    return task, {}


def _psf_use(stack: bool) -> str:
    if stack:
        return "in-focus plane, slice by slice (--stack-mode 3d deconvolves the stack " \
            "with the whole PSF)"
    return "in-focus plane (the input is one plane)"


def psf_plan_line(args: argparse.Namespace, stack: bool) -> list[str]:
    """The dry run's line on a 3-D PSF file that 2-D fits will use: only its in-focus plane
    (``stack``: the input is a stack, whose stack mode '3d' would use it whole)."""
    if not args.psf or args.stack_mode == "3d":
        return []
    import numpy as np

    if np.squeeze(read_image(args.psf, role="PSF").data).ndim != 3:
        return []
    return [f"PSF: 3-D; the fits will use its {_psf_use(stack)}"]


def psf_note(record: dict, stack: bool) -> list[str]:
    """The summary's line on a 3-D PSF that 2-D fits used: its in-focus plane, and how to use
    it whole."""
    if not ((record.get("operator") or {}).get("psf") or {}).get("note"):
        return []
    return [f"PSF: the fits used the 3-D PSF's {_psf_use(stack)}"]


def _read_guide(args: argparse.Namespace, layout):
    """The guide: one plane for every slice, or one per slice (the input's stack axes)."""
    data = read_image(args.guide, role="guide").data
    if layout.is_stack and data.shape == layout.shape:
        return layout.fold(data)
    return data


def _stack_options(args: argparse.Namespace, src: ImageFile, layout, axes: str) -> dict:
    """The engine's stack keywords (stack mode, voxel size); ValueError for a stack mode the
    input cannot take."""
    if not layout.is_stack:
        if args.stack_mode is not None:
            raise ValueError(f"--stack-mode is for stacks; input {args.input!r} is one plane")
        return {}
    if args.stack_mode == "3d" and len(layout.stack) != 1:
        raise ValueError(f"--stack-mode 3d restores one Z axis; input {args.input!r} has "
                         f"{len(layout.stack)} stack axes ({axes}): use warm or slices, or "
                         "split the file")
    return dict(stack_mode=args.stack_mode, voxel_size=_voxel_size(src, layout))


def _voxel_size(src: ImageFile, layout) -> tuple[float, float, float] | None:
    """(Z, Y, X) voxel size of a z-stack from the file, None when it is not known."""
    if src.resolution is None or src.z_spacing is None:
        return None
    return (src.z_spacing, 1 / src.resolution[1], 1 / src.resolution[0])


def _cpu_seconds(record: dict) -> float:
    """CPU time of every fit in a record (one plane, or every slice of a stack)."""
    entries = [record, *record.get("slices", [])]
    return sum(p.get("cpu_seconds", 0.0) for e in entries for p in e.get("planes", []))


def _plan_summary(args: argparse.Namespace, planes, layout, task: str,
                  voxel_size=None) -> str:
    """What a run would do and the memory one fit step needs (``--dry-run``); in stack mode
    '3d', of its one 3-D fit (:func:`_volume_summary`)."""
    from .choices import resolve_preset
    from .engine.devices import choose_threads, resolve_device
    from .engine.presets import make_config

    device = resolve_device(args.device)
    preset = resolve_preset(args.preset, device.type)
    config = make_config(task, preset, args.factor if task == "sr" else None,
                         max_iters=args.max_iters, stopping=args.stopping,
                         refine=args.refine or ("none" if args.guide else None))
    plane = planes[0] if layout.is_stack else planes
    y, x = layout.folded_yx_axes(plane.ndim)
    h, w = plane.shape[y], plane.shape[x]
    channels = plane.size // (h * w)  # per plane (an RGBA's alpha counted: an estimate)
    f = args.factor if task == "sr" else 1
    in_h, in_w = h, w
    h, w = h * f, w * f
    n = planes.shape[0] if layout.is_stack else 1
    threads = args.threads or choose_threads() if device.type == "cpu" else None
    if layout.is_stack and args.stack_mode == "3d":
        return _volume_summary(args, (planes.shape[0], in_h, in_w), channels, task, preset,
                               device, voxel_size, threads)
    separate = args.channels == "separate"
    units = n * (channels if separate else 1)
    lines = [f"input {args.input!r}: {n} plane(s) of {h}x{w} to restore ({task})",
             *psf_plan_line(args, layout.is_stack),
             *fit_summary(config, preset, device, threads, (h, w),
                          _tiling_note(in_h, in_w, f, config.net, device)),
             time_line(args, task, (in_h, in_w), 1 if separate else channels, units, preset,
                       device, threads)]
    if units > 1:
        from .engine.batched import default_batch, unit_memory

        per_unit = 1 if args.channels == "separate" else channels
        batch = min(args.batch or default_batch(device, units, (h, w), config, per_unit), units)
        lines.append(f"batch: {batch} of {units} fits at a time" + (
            f" (grouped convolutions, about {unit_memory((h, w), config, per_unit) / 2**20:.0f}"
            " MiB per fit)" if batch > 1 else " (one at a time)"))
    return "\n".join(lines)


def time_line(args: argparse.Namespace, task: str, in_hw: tuple[int, int], channels: int,
              fits: int, preset: str, device, threads: int | None, **volume) -> str:
    """The dry run's line on time: a fit step of the run's network, measured here on data of
    its size, and the bound that the iteration cap sets on ``fits`` fits of ``channels``
    channels (``volume``: stack mode '3d' keywords of
    :func:`~napari_dip.engine.cost.estimate_run`)."""
    from .engine.cost import estimate_run

    est = estimate_run(*in_hw, task, preset=preset, device=device, factor=args.factor,
                       channels=channels, fits=fits, max_iters=args.max_iters,
                       stopping=args.stopping, threads=threads, **volume)
    if est.seconds_per_iteration is None:
        return "time: not measured (the fit would not fit the device)"
    return "time: " + " · ".join(est.time_parts()) + " (a fit step measured here)"


def fit_summary(config, preset: str, device, threads: int | None, out_hw: tuple[int, int],
                note: str = "") -> list[str]:
    """The dry run's lines on one 2-D fit of ``out_hw`` (output pixels): its network, device
    and the memory of one step (``note`` follows the memory)."""
    from .engine.devices import estimate_memory
    from .engine.generators import build_generator, count_parameters

    params = count_parameters(build_generator(config.net, config.input_channels, 1))
    memory = estimate_memory(*out_hw, config.net)
    stage = {"none": "", "auto": "; then a Wiener second stage (auto: collaborative under "
             "Gaussian noise, a blend of filters under Poisson-Gaussian)"}.get(
        config.refine, f"; then the {config.refine} second stage")
    return [f"network: preset {preset!r}, about {params:,} parameters; stopping rule "
            f"{config.stopping!r}, at most {config.max_iters} iterations per plane{stage}",
            f"device {device}" + (f", {threads} thread(s)" if threads else ""),
            f"memory: about {memory / 2**20:.0f} MiB per fit step{note}"]


def _volume_summary(args: argparse.Namespace, zyx: tuple[int, int, int], channels: int,
                    task: str, preset: str, device, voxel_size, threads: int | None) -> str:
    """``--dry-run`` in stack mode '3d': one 3-D fit of the whole stack (per channel with
    ``--channels separate``), its network, iteration cap and memory."""
    from .engine.cost import estimate_run
    from .engine.generators import build_generator, count_parameters, volume_spec
    from .engine.presets import make_config

    z, h, w = zyx
    groups = channels if args.channels == "separate" else 1
    est = estimate_run(h, w, task, preset=preset, device=device, channels=channels // groups,
                       fits=groups, max_iters=args.max_iters, stopping=args.stopping,
                       stack_mode="3d", planes=z, voxel_size=voxel_size, measure=False)
    config = make_config(task, preset, None)
    spec = volume_spec(config.net, z, voxel_size)
    params = count_parameters(build_generator(spec, config.input_channels, channels // groups))
    voxel = "not in the file: taken as isotropic" if voxel_size is None else \
        " x ".join(f"{v:g}" for v in voxel_size)
    each = "" if groups == 1 else f", one per channel ({groups} fits)"
    memory = f"memory: about {est.memory_bytes / 2**20:.0f} MiB per fit step"
    if est.too_big:
        memory += (f"; too much for {device}: a 3-D fit cannot be tiled, use --stack-mode "
                   "slices or warm")
    return "\n".join([
        f"input {args.input!r}: stack mode 3d, one 3-D fit of the whole {z}x{h}x{w} stack"
        f"{each} ({task}); voxel size (Z, Y, X) {voxel}",
        f"network: preset {preset!r}, 3-D, about {params:,} parameters; stopping rule "
        f"{est.stopping!r}, at most {est.max_iterations} iterations",
        f"device {device}" + (f", {threads} thread(s)" if threads else ""),
        memory,
        *([] if est.too_big else [time_line(
            args, task, (h, w), channels // groups, groups, preset, device, threads,
            stack_mode="3d", planes=z, voxel_size=voxel_size)]),
    ])


def _tiling_note(h: int, w: int, f: int, spec, device) -> str:
    """What the run does when one fit of an ``h`` x ``w`` input (an output ``f`` times larger)
    would not fit the device's memory."""
    from .engine.devices import estimate_memory
    from .engine.tiles import choose_tiling

    tile = choose_tiling((h, w), spec, device, f).tile
    if tile is None:
        return ""
    need = estimate_memory(tile * f, tile * f, spec) / 2**20
    return (f"; too much for {device}: restored in overlapping tiles of {tile} px "
            f"(about {need:.0f} MiB per fit step)")


def _interrupt(cancel: threading.Event) -> None:
    if cancel.is_set():  # a second Ctrl-C: give up without writing
        raise KeyboardInterrupt
    print("\nstopping after this step; press Ctrl-C again to abort", file=sys.stderr)
    cancel.set()


class _ProgressBar:
    def __init__(self, disabled: bool):
        self.disabled, self.bar, self.key = disabled, None, None
        self.batched, self.done = False, 0

    def update(self, p) -> None:
        if self.disabled:
            return
        self.batched = self.batched or p.batch > 1
        if self.batched:
            self._update_batched(p)
            return
        key = (p.slice_index, p.plane)
        if key != self.key:
            from tqdm import tqdm

            self.close()
            desc = []
            if p.n_slices:
                desc.append(f"slice {p.slice_index + 1}/{p.n_slices}")
            if p.n_planes > 1:
                desc.append(f"channel {p.plane + 1}/{p.n_planes}")
            # No total: the stopping rule, not the iteration cap, decides when the run ends.
            self.bar = tqdm(desc=" ".join(desc) or "restoring", unit="it", file=sys.stderr,
                            leave=False, mininterval=1.0)
            self.key = key
        self.bar.set_postfix_str(p.status, refresh=False)
        self.bar.update(p.iteration - self.bar.n)

    def _update_batched(self, p) -> None:
        """Planes fitted together: their events interleave, so one bar for the batch."""
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc="batch", unit="it", file=sys.stderr, leave=False,
                            mininterval=1.0)
        if p.final:
            self.done += 1
        elif p.iteration < self.bar.n:  # the next batch has started
            self.bar.reset()
        slices = f", {self.done}/{p.n_slices} slices done" if p.n_slices else ""
        self.bar.set_postfix_str(f"{p.batch} fitting together{slices}", refresh=False)
        self.bar.update(max(p.iteration - self.bar.n, 0))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ._batch_cli import run_units, wants_units

    try:
        args.task = resolve_task(args)  # every path, and its record, sees the real task
        if not needs_whole_stack(args) and wants_units(args):
            return run_units(args)
        args.input = args.input[0]
        return run_restore(args)
    except (ValueError, FileNotFoundError, OSError, MemoryError, FloatingPointError) as exc:
        print(f"napari-dip: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-dip: aborted, nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
