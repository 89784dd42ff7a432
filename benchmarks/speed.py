"""Speed: napari-dip (each preset) against deepinv's ``DeepImagePrior`` on the same image and device.

For each preset, three runs of the same number of iterations on the same noisy image:
* napari-dip (``restore_iter``, fixed iteration count, no stopping, reference only observed);
* deepinv ``DeepImagePrior`` driving *the same generator* (napari-dip's skip net of that preset, same
  input-channel count): the only difference is the fit loop;
* deepinv ``DeepImagePrior`` with its recommended ``ConvDecoder`` at the nearest parameter count.
deepinv's loop has no per-step callback, so a forward hook on the generator records the time and the
PSNR of each generator output (the loop calls the generator once per step).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from napari_dip.engine import build_generator, make_config, restore_iter
from napari_dip.engine.intensity import IntensityMap

from . import deepinv_compat
from .measure import PeakMemory


def _trace_summary(trace: list[tuple[int, float, float]], n_pixels: int) -> dict:
    """trace = [(iteration, elapsed_s, psnr)] -> best PSNR, when it was reached, seconds per iteration."""
    its, times, scores = zip(*trace)
    best = int(np.argmax(scores))
    return {
        "iterations": len(trace),
        "seconds": times[-1],
        "s_per_iter": times[-1] / len(trace),
        "best_psnr": float(scores[best]),
        "best_iteration": int(its[best]),
        "time_to_best_s": float(times[best]),
        "best_at_last_iteration": best == len(trace) - 1,
        "trace": [(int(i), round(float(t), 4), round(float(s), 3)) for i, t, s in trace],
    }


def time_to(trace, target: float) -> float | None:
    for _, t, s in trace:
        if s >= target - 1e-3:  # traces are stored rounded to 1e-3 dB
            return t
    return None


def run_napari_dip(noisy, clean, preset, iters, device, seed=0) -> dict:
    c = noisy.shape[-1]
    norm = IntensityMap.identity(c)
    trace, result = [], None
    with PeakMemory(device) as mem:
        for event in restore_iter(noisy, "denoise", preset=preset, device=device, seed=seed,
                                  max_iters=iters, stopping="none", reference=clean, normalisation=norm):
            if hasattr(event, "psnr"):
                trace.append((event.iteration, event.elapsed, event.psnr))
            else:
                result = event
    out = _trace_summary(trace, noisy.shape[0] * noisy.shape[1])
    out.update(parameters=result.record["parameters"], peak_bytes=mem.peak_bytes, memory_kind=mem.kind)
    return out


def _convdecoder_channels(ConvDecoder, img_size, target_params: int) -> int:
    def count(ch):
        net = ConvDecoder(img_size=img_size, in_size=(4, 4), layers=7, channels=ch)
        return sum(p.numel() for p in net.parameters())

    lo, hi = 8, 1024
    while hi - lo > 1:  # parameter count grows monotonically with the width
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= target_params else (lo, mid)
    return lo if abs(count(lo) - target_params) <= abs(count(hi) - target_params) else hi


def run_deepinv(noisy, clean, generator_kind, preset, iters, device, seed=0) -> dict:
    loaded = deepinv_compat.load()
    if loaded is None:
        return {"skipped": deepinv_compat.STATUS["error"]}
    DeepImagePrior, ConvDecoder, physics = loaded
    dev = torch.device(device)
    h, w, c = noisy.shape
    y = torch.from_numpy(np.ascontiguousarray(noisy.transpose(2, 0, 1)))[None].to(dev)
    ref = torch.from_numpy(np.ascontiguousarray(clean.transpose(2, 0, 1)))[None].to(dev)
    config = make_config("denoise", preset)
    torch.manual_seed(seed)
    if generator_kind == "same skip net":
        net = build_generator(config.net, config.input_channels, c)
        z_shape = (config.input_channels, h, w)
        extra = {}
    else:  # ConvDecoder at napari-dip's parameter count
        target = sum(p.numel() for p in build_generator(config.net, config.input_channels, c).parameters())
        ch = _convdecoder_channels(ConvDecoder, (c, h, w), target)
        net = ConvDecoder(img_size=(c, h, w), in_size=(4, 4), layers=7, channels=ch)
        z_shape = (ch, 4, 4)
        extra = {"convdecoder_channels": ch}
    net = net.to(dev)
    model = DeepImagePrior(net, img_size=z_shape, iterations=iters, learning_rate=config.lr)
    trace: list[tuple[int, float, float]] = []
    t0 = [0.0]

    def hook(_module, _inputs, output):
        with torch.no_grad():
            mse = float(torch.mean((output.detach()[..., :h, :w].clamp(0, 1) - ref) ** 2))
        trace.append((len(trace) + 1, time.perf_counter() - t0[0], 10 * math.log10(1 / max(mse, 1e-12))))

    handle = net.register_forward_hook(hook)
    try:
        with PeakMemory(dev) as mem:
            t0[0] = time.perf_counter()
            model(y, physics.Denoising())
    finally:
        handle.remove()
    trace = trace[:iters]  # the call after the loop only returns the final image
    out = _trace_summary(trace, h * w)
    out.update(parameters=sum(p.numel() for p in net.parameters()), peak_bytes=mem.peak_bytes,
               memory_kind=mem.kind, torchvision=deepinv_compat.STATUS["torchvision"],
               deepinv=deepinv_compat.STATUS["version"], **extra)
    return out


def _child(fn_name: str, threads: int, args: tuple) -> dict:
    torch.set_num_threads(threads)
    return globals()[fn_name](*args)


def isolated(fn_name: str, *args, isolate: bool = True) -> dict:
    """Run one timing in a fresh interpreter so that its peak RSS is its own (an allocator that already
    holds pages from an earlier run would hide the growth), with the parent's thread count."""
    if not isolate:
        return globals()[fn_name](*args)
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_child, (fn_name, torch.get_num_threads(), args))


def summarise(block: dict, n_pixels: int) -> dict:
    """Add the target PSNR, times to target, memory per pixel and deepinv / napari-dip ratios to a block."""
    rows = block["runs"]
    ours = rows["napari-dip"]
    same = rows["deepinv + same skip net"]
    target = min(ours["best_psnr"], same.get("best_psnr", ours["best_psnr"]))
    for row in rows.values():
        if "trace" in row:
            row["time_to_target_s"] = time_to(row["trace"], target)
            row["bytes_per_pixel"] = row["peak_bytes"] / n_pixels
    ratios = {}
    for name, row in rows.items():
        if name == "napari-dip" or "trace" not in row:
            continue
        ratios[name] = {
            "s_per_iter (deepinv / napari-dip)": row["s_per_iter"] / ours["s_per_iter"],
            "time_to_best (deepinv / napari-dip)": row["time_to_best_s"] / max(ours["time_to_best_s"], 1e-9),
            "time_to_target (deepinv / napari-dip)": (
                None if row["time_to_target_s"] is None or not ours["time_to_target_s"]
                else row["time_to_target_s"] / ours["time_to_target_s"]),
        }
    block.update(target_psnr=target, ratios=ratios)
    return block


def speed_suite(noisy: np.ndarray, clean: np.ndarray, iters: dict, device: str, log=print,
                isolate: bool = True) -> dict:
    """``iters`` maps preset -> iteration count. Returns {preset: {runner: summary, 'ratios': ...}}."""
    results = {}
    n_pixels = noisy.shape[0] * noisy.shape[1]
    for preset, n in iters.items():
        rows = {}
        log(f"speed: napari-dip {preset}, {n} iterations")
        rows["napari-dip"] = isolated("run_napari_dip", noisy, clean, preset, n, device, isolate=isolate)
        for kind in ("same skip net", "ConvDecoder"):
            log(f"speed: deepinv DeepImagePrior + {kind}, {n} iterations")
            rows[f"deepinv + {kind}"] = isolated("run_deepinv", noisy, clean, kind, preset, n, device,
                                                 isolate=isolate)
        results[preset] = summarise({"iterations": n, "runs": rows}, n_pixels)
    return results
