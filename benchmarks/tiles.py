"""Tiles: peak memory per pixel and time of a tiled run against an untiled run of one image.

``python -m benchmarks.tiles [--size 256] [--tile 128] [--iters 200] [--threads 1]``

The image is the centre of StarDist's real 2-D nuclei image (``stardist/img2d.tif`` in the shared
data folder, read in place) with simulated Poisson-Gaussian noise. Each configuration runs in a
fresh process (so one run's allocations cannot hide the next one's peak) for a fixed number of
iterations without the automatic stop, so both do the same work per pixel fitted. Peak memory is
the growth of the process's peak resident set over what the set-up left; CPU seconds count every
thread. Appends a dated section to ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import resource
import subprocess
import time
from pathlib import Path

import numpy as np

from .datasets import DEFAULT_DATA

HERE = Path(__file__).resolve().parent


def noisy_pair(data: Path, size: int):
    import tifffile

    clean = tifffile.imread(data / "stardist" / "img2d.tif").astype(np.float64)
    y0, x0 = (clean.shape[0] - size) // 2, (clean.shape[1] - size) // 2
    clean = clean[y0:y0 + size, x0:x0 + size]
    rng = np.random.default_rng(2026)
    # Poisson at a peak of 30 photons plus Gaussian read noise, back in the image's units.
    photons = rng.poisson(clean / clean.max() * 30) * clean.max() / 30
    noisy = np.clip(photons + rng.normal(0, 0.04 * clean.max(), clean.shape), 0, 65535)
    return np.rint(noisy).astype(np.uint16), clean


def _one(args: dict, queue) -> None:
    """One configuration, in a fresh process; puts its figures on ``queue``."""
    import torch

    from napari_dip.engine import restore
    from napari_dip.engine.devices import estimate_memory
    from napari_dip.engine.generators import LIGHT_SKIP

    torch.set_num_threads(args["threads"])
    os.environ["NAPARI_DIP_THREADS"] = str(args["threads"])
    noisy, clean = noisy_pair(Path(args["data"]), args["size"])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0, c0 = time.perf_counter(), time.process_time()
    result = restore(noisy, "denoise", preset="light", device="cpu", seed=0,
                     max_iters=args["iters"], stopping="none", tile=args["tile"] or False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    out = result.image.astype(np.float64)
    psnr = 10 * np.log10(clean.max() ** 2 / np.mean((out - clean) ** 2))
    psnr_in = 10 * np.log10(clean.max() ** 2 / np.mean((noisy - clean) ** 2))
    fit_side = args["tile"] or args["size"]
    tiling = result.record.get("tiling")
    queue.put({
        "tile": args["tile"], "wall_s": wall, "cpu_s": cpu, "peak_bytes": peak,
        "bytes_per_px": peak / args["size"] ** 2, "psnr": psnr, "psnr_input": psnr_in,
        "tiles": tiling["count"] if tiling else 1,
        "overlap": tiling["overlap"] if tiling else None,
        "estimate_bytes": estimate_memory(fit_side, fit_side, LIGHT_SKIP),
        "iterations": result.record["iterations"],
    })


def run(size: int, tile: int, iters: int, threads: int, data: Path) -> list[dict]:
    ctx = mp.get_context("spawn")
    rows = []
    for t in (None, tile):
        queue = ctx.Queue()
        proc = ctx.Process(target=_one, args=({"size": size, "tile": t, "iters": iters,
                                               "threads": threads, "data": str(data)}, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
    return rows


def _machine(threads: int) -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=HERE).stdout.strip()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
            f"{threads} torch thread(s), device `cpu`, load average {load}; napari-dip at "
            f"{commit}")


def report(rows: list[dict], size: int, iters: int, threads: int) -> str:
    untiled = rows[0]
    lines = [
        f"## {dt.date.today().isoformat()} — tiles: a tiled run against an untiled one, CPU",
        "",
        f"- Machine: {_machine(threads)}.",
        f"- `python -m benchmarks.tiles --size {size} --tile {rows[1]['tile']} --iters {iters} "
        f"--threads {threads}`: the centre {size}×{size} of StarDist's real nuclei image "
        "(`stardist/img2d.tif`) with Poisson (peak 30 photons) and Gaussian noise, `light` "
        f"preset, {iters} iterations per fit without the automatic stop, seed 0; each run in "
        "a fresh process. Peak memory = growth of the peak resident set over the set-up.",
        "",
        "| run | fits | overlap px | wall s | CPU-s | peak MiB | peak B/px | estimate MiB "
        "per fit | PSNR dB (input) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = "untiled" if r["tile"] is None else f"tiles of {r['tile']}"
        lines.append(
            f"| {name} | {r['tiles']} | {r['overlap'] or '–'} | {r['wall_s']:.0f} | "
            f"{r['cpu_s']:.0f} | {r['peak_bytes'] / 2**20:.0f} | {r['bytes_per_px']:.0f} | "
            f"{r['estimate_bytes'] / 2**20:.0f} | {r['psnr']:.2f} ({r['psnr_input']:.2f}) |")
    tiled = rows[1]
    ratio = tiled["peak_bytes"] / untiled["peak_bytes"]
    lines += ["", f"Tiled / untiled: peak memory ×{ratio:.2f},"
              f" CPU time ×{tiled['cpu_s'] / untiled['cpu_s']:.2f}, wall time "
              f"×{tiled['wall_s'] / untiled['wall_s']:.2f}; PSNR "
              f"{tiled['psnr'] - untiled['psnr']:+.2f} dB. The tiles fit "
              f"{tiled['tiles']} × {tiled['tile']}² = "
              f"{tiled['tiles'] * tiled['tile'] ** 2 / size ** 2:.2f}× the image's pixels "
              "(overlaps), which is where the extra time goes; memory follows the tile, not "
              "the image. PSNR is taken after a fixed number of iterations, not at the "
              "automatic stop: smaller fits move faster per iteration, so it is no quality "
              "comparison; the seam itself is checked by tests/test_tiles.py.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--no-write", action="store_true", help="print, do not append to RESULTS.md")
    a = p.parse_args(argv)
    rows = run(a.size, a.tile, a.iters, a.threads, a.data)
    text = report(rows, a.size, a.iters, a.threads)
    print(text)
    if not a.no_write:
        with open(HERE / "RESULTS.md", "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
