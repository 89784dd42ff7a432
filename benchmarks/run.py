"""Entry point: ``python -m benchmarks.run --suite quick|paper [--device cpu|cuda|auto]``.

Writes a dated section to ``benchmarks/RESULTS.md`` and every figure to
``benchmarks/results/<suite>-<timestamp>.json``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_dip.engine import resolve_device, restore
from napari_dip.engine.intensity import IntensityMap

from . import baselines, datasets, deepinv_compat
from .datasets import Case
from .measure import PeakMemory
from .metrics import affine_fit, psnr, psnr_y, ssim
from .peers_suite import markdown_peers

HERE = Path(__file__).resolve().parent

#: Suite settings. ``crop``: centre crop side (None = full image; SR crops the LR input to ``sr_lr_crop``);
#: ``max_iters``: per-task cap (None = the preset's own cap, which leaves the stopping rule room to act:
#: a cap below the rule's burn-in + patience means it never stops a run); ``names``: image subset;
#: ``oracle_every``: how often (iterations) the output is scored against the ground truth for the oracle
#: column, in the table's own metric; ``tasks``: what runs when ``--tasks`` is not given.
SUITES = {
    "quick": {
        "preset": "light",
        "crop": 64,
        "fluo_crop": 128,
        "sr_lr_crop": 16,
        "max_iters": {"denoise": None, "sr": None, "inpaint": None, "fluo": None},
        "oracle_every": 1,
        "names": {
            "denoise": ["F16", "baboon", "peppers"],
            "sr": ["baby", "bird", "butterfly"],
            "inpaint": ["Cameraman256", "house", "barbara"],
            "fluo": ["fmd_bpae_mito", "w2s_010_0", "gigadb_membrane", "gigadb_mito20x"],
        },
        "speed": {"crop": 64, "iters": {"light": 1500, "paper": 400}},
        "batch": {"slices": 8, "size": 128, "sigma": 15, "batch": 8, "baseline_slices": None},
    },
    "paper": {
        "preset": "paper",
        "crop": None,
        "sr_lr_crop": None,
        "max_iters": {"denoise": None, "sr": None, "inpaint": None, "fluo": None},
        "oracle_every": 10,
        "names": {},
        "speed": {"crop": None, "iters": {"light": 3000, "paper": 3000}},
        # issue 8's GPU goal: 64 slices of 256² at >= 5x the one-at-a-time throughput (the baseline's
        # rate measured on 8 of them)
        "batch": {"slices": 64, "size": 256, "sigma": 15, "batch": None, "baseline_slices": 8},
    },
    "peers": {
        # Issue 8's comparison: napari-dip's defaults (automatic stop) against Zero-Shot Noise2Noise and
        # BM3D at 256², plus a time-vs-PSNR curve per preset. See benchmarks/peers_suite.py.
        "preset": "auto",
        "tasks": ["peers"],
        "peers": {
            "crop": 256,
            "names": {"denoise": None, "fluo": ["fmd_bpae_mito"]},
            # Curves: each preset without the automatic stop up to its own cap (``cap`` None) or until it
            # has used ``cpu_budget_s`` CPU seconds (None: no limit), scored every ``every`` iterations.
            "curves": {"images": ["F16", "fmd_bpae_mito"], "cap": None, "cpu_budget_s": 1800, "every": 25},
            "zsn2n_steps": 2000,
        },
    },
}
TASKS = ("denoise", "sr", "inpaint", "fluo")
DEFAULT_TASKS = (*TASKS, "speed")
ENGINE_TASK = {"denoise": "denoise", "sr": "sr", "inpaint": "inpaint", "fluo": "denoise"}


# ----------------------------------------------------------------------------------------- scoring
def score(case: Case, out: np.ndarray) -> dict:
    """Score an output given in the truth's units (uint8 or float)."""
    if case.task == "sr":
        o, t = out, case.truth
        if case.eval_box is not None:
            y0, y1, x0, x1 = case.eval_box
            o, t = o[y0:y1, x0:x1], t[y0:y1, x0:x1]
        return {"psnr": psnr_y(o, t, border=4)}
    if case.task == "fluo":
        o = np.asarray(out, np.float64)
        if case.note == "affine":
            o = affine_fit(o, case.truth)
        return {"psnr": psnr(o, case.truth, 255.0), "ssim": ssim(o, case.truth, 255.0)}
    return {"psnr": psnr(out, case.truth, case.peak)}


def as_unit_float(case: Case) -> np.ndarray:
    """The observed image as float32 in [0, 1] for the classical baselines."""
    x = case.observed
    return x.astype(np.float32) / 255 if x.dtype == np.uint8 else x.astype(np.float32)


def from_unit_float(case: Case, x: np.ndarray) -> np.ndarray:
    if case.task == "sr":
        return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    return x if case.peak == 1.0 else x.astype(np.float64) * 255


def run_baselines(case: Case, factor: int = 4) -> dict:
    rows = {}

    def timed(name, fn):
        t, c = time.perf_counter(), time.process_time()
        try:
            out = fn()
        except Exception as exc:  # a baseline failing must not sink the benchmark
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"}
            return
        rows[name] = {**score(case, out), "seconds": time.perf_counter() - t,
                      "cpu_s": time.process_time() - c}

    if case.task in ("denoise", "fluo"):
        x = as_unit_float(case)
        for name, fn in baselines.DENOISERS.items():
            if name == "BM3D" and not baselines.has_bm3d():
                rows[name] = {"skipped": "bm3d not installed"}
                continue
            timed(name, lambda fn=fn: from_unit_float(case, np.clip(fn(x), 0, 1)))
    elif case.task == "sr":
        timed("bicubic", lambda: baselines.bicubic(case.observed, factor))
    elif case.task == "inpaint":
        x = as_unit_float(case)
        timed("biharmonic", lambda: from_unit_float(case, np.clip(baselines.biharmonic(x, case.mask), 0, 1)))
    return rows


def input_score(case: Case) -> dict | None:
    if case.task == "sr":
        return None
    return score(case, case.observed if case.peak == 255 else case.observed)


# ----------------------------------------------------------------------------------------- napari-dip
def as_output(case: Case, preview: np.ndarray) -> np.ndarray:
    """A float preview (input units) as the run would return it: rounded to uint8 for 8-bit inputs."""
    if case.observed.dtype == np.uint8:
        return np.clip(np.rint(preview), 0, 255).astype(np.uint8)
    return preview


def run_dip(case: Case, preset: str, device: str, max_iters: int | None, seed: int = 0, log=None,
            oracle_every: int = 1) -> dict:
    """napari-dip with the automatic stop. Every ``oracle_every`` iterations the current output is scored
    against the ground truth *in the table's metric* (:func:`score`), which gives the oracle column; the
    engine's own per-step PSNR (its metric, see README) is kept in the JSON as ``engine_oracle``."""
    task = ENGINE_TASK[case.task]
    kwargs = dict(preset=preset, device=device, seed=seed, max_iters=max_iters)
    reference = case.reference if case.reference is not None else case.truth
    if case.observed.dtype != np.uint8:  # float data in [0, 1]: keep that scale (no robust stretch)
        c = case.observed.shape[-1] if case.observed.ndim == 3 else 1
        kwargs["normalisation"] = IntensityMap.identity(c)
    if task == "inpaint":
        kwargs["mask"] = case.mask
    if task == "sr":
        kwargs["factor"] = 4
    oracle = {"best_psnr": -math.inf, "best_iteration": None, "scored": 0}
    scoring = [0.0, 0.0]  # wall, CPU seconds spent scoring for the oracle (taken off the run's times)

    def progress(event):
        if event.preview is not None and not event.final:
            t, c = time.perf_counter(), time.process_time()
            value = score(case, as_output(case, event.preview))["psnr"]
            oracle["scored"] += 1
            if value > oracle["best_psnr"]:
                oracle["best_psnr"], oracle["best_iteration"] = value, event.iteration
            scoring[0] += time.perf_counter() - t
            scoring[1] += time.process_time() - c
        if log is not None and event.iteration % 200 == 0:
            log(f"    iteration {event.iteration}, {event.elapsed:.0f} s, PSNR {event.psnr:.2f} (engine metric)")

    with PeakMemory(resolve_device(device)) as mem:
        c0 = time.process_time()
        result = restore(case.observed, task, reference=reference, callback=progress,
                         preview_every=oracle_every, **kwargs)
        cpu_s = time.process_time() - c0 - scoring[1]
    rec = result.record
    seconds = rec["seconds"] - scoring[0]
    out = result.image
    n_pixels = out.shape[0] * out.shape[1]
    scores = score(case, out)
    best = oracle["best_psnr"] if oracle["scored"] else None
    return {
        **scores,
        "stop_reason": rec["stop_reason"],
        "iterations": rec["iterations"],
        "best_iteration": rec["best_iteration"],
        "returned_iteration": _returned(rec),
        "planes": [{k: p.get(k) for k in ("channels", "iterations", "best_iteration", "returned_iteration",
                                           "stop_reason", "backtracks", "cpu_seconds", "stopping")}
                   for p in rec["planes"]],
        "threads": rec.get("threads"),
        "seconds": seconds,
        "s_per_iter": seconds / max(rec["iterations"], 1),
        "cpu_s": cpu_s,  # includes the memory sampler thread (a few %)
        "engine_seconds": rec["seconds"],
        "oracle_scoring_seconds": scoring[0],
        "parameters": rec["parameters"],
        "oracle_best_psnr": best,
        "oracle_best_iteration": oracle["best_iteration"],
        "oracle_every": oracle_every,
        "oracle_scored": oracle["scored"],
        "oracle_gap_db": None if best is None else best - scores["psnr"],
        "engine_oracle": [p.get("oracle") for p in rec["planes"]],
        "peak_bytes": mem.peak_bytes,
        "bytes_per_pixel": mem.peak_bytes / n_pixels,
        "memory_kind": mem.kind,
        "seed": rec["seed"],
        "device": rec["device"],
        "preset": rec["preset"],
    }


def _returned(rec: dict):
    """When the returned output was taken (the engine may return the average from after its pick);
    the pick itself where the engine does not say."""
    values = [p.get("returned_iteration", p.get("best_iteration")) for p in rec["planes"]]
    return values[0] if len(values) == 1 else values


def run_case(case: Case, preset: str, device: str, max_iters: int | None, log=print,
             oracle_every: int = 1) -> dict:
    log(f"{case.task}/{case.name}: {case.observed.shape} -> napari-dip ({preset}, "
        f"cap {max_iters or 'of the preset'})")
    row = {"task": case.task, "image": case.name, "shape": list(case.observed.shape), "note": case.note}
    row["input"] = input_score(case)
    row["baselines"] = run_baselines(case)
    row["published"] = {k: score(case, v) for k, v in case.published.items() if v is not None}
    row["paper_full_image"] = case.paper
    row["napari_dip"] = run_dip(case, preset, device, max_iters, log=log, oracle_every=oracle_every)
    d = row["napari_dip"]
    log(f"    DIP {d['psnr']:.2f} dB ({d['stop_reason']} after {d['iterations']}, kept {d['best_iteration']}; "
        f"oracle best {_f(d['oracle_best_psnr'])} at {d['oracle_best_iteration']}, {d['seconds']:.0f} s)")
    return row


# ----------------------------------------------------------------------------------------- machine
def machine_info(device) -> dict:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else None,
        "cuda_available": torch.cuda.is_available(),
    }
    try:
        import subprocess

        git = ["git", "-C", str(HERE.parent)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True).stdout
        info["napari_dip_commit"] = commit + (" + uncommitted changes under src/" if dirty.strip() else "")
    except OSError:
        pass
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return info


# ----------------------------------------------------------------------------------------- report
def _f(x, nd=2):
    if x is None:
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{nd}f}"


def _cell(d: dict | None, key="psnr") -> str:
    if not d:
        return "–"
    if "skipped" in d:
        return "n/a"
    if "error" in d:
        return "error"
    s = _f(d.get(key))
    if "ssim" in d:
        s += f" / {d['ssim']:.3f}"
    return s


def _mean(values):
    v = [x for x in values if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(v) / len(v) if v else None


TASK_TITLES = {
    "denoise": "Denoising, synthetic Gaussian σ = 25 (seed 0), RGB PSNR (dB)",
    "sr": "Super-resolution ×4, Set5 LR inputs, Y-channel PSNR (dB), 4-px border removed",
    "inpaint": "Inpainting, 50 % missing pixels (grey), PSNR (dB)",
    "fluo": "Real fluorescence noisy/clean pairs, PSNR (dB) / SSIM",
}


def _stop_cell(d: dict) -> str:
    """Stop reason and iterations; per-plane reasons when several channels/slices were fitted."""
    cell = f"{d['stop_reason']} {d['iterations']}"
    planes = d.get("planes") or []
    if len(planes) > 1:
        cell += " (" + ", ".join(f"{p['stop_reason']} {p['iterations']}/{p['best_iteration']}"
                                 for p in planes) + ")"
    return cell


def _kept(d: dict) -> str:
    """The rule's pick, and when the returned output was taken if that differs (EMA lag)."""
    def one(best, returned):
        return str(best) if returned in (None, best) else f"{best} (output at {returned})"
    best, returned = d["best_iteration"], d.get("returned_iteration")
    if isinstance(best, list):
        returned = returned if isinstance(returned, list) else [None] * len(best)
        return "/".join(one(b, r) for b, r in zip(best, returned))
    return one(best, returned)


def _oracle_cell(d: dict) -> str:
    if d.get("oracle_best_psnr") is None:
        return "–"
    return f"{d['oracle_best_psnr']:.2f} @ {d['oracle_best_iteration']}"


def comparisons(trows: list[dict], base_names) -> str:
    """Computed, not written: on how many images DIP's automatic-stop result is above each other method,
    and by how much on average (PSNR; SSIM too where measured)."""
    parts = []
    others = [(b, lambda r, b=b: r["baselines"].get(b)) for b in base_names]
    others.insert(0, ("input", lambda r: r["input"]))
    for name, get in others:
        pairs = [(r["napari_dip"], get(r)) for r in trows]
        pairs = [(d, o) for d, o in pairs if o and "psnr" in o and math.isfinite(o["psnr"])]
        if not pairs:
            continue
        diffs = [d["psnr"] - o["psnr"] for d, o in pairs]
        text = (f"{name}: above on {sum(x > 0 for x in diffs)} of {len(diffs)} images "
                f"(mean {_mean(diffs):+.2f} dB, range {min(diffs):+.2f} to {max(diffs):+.2f})")
        ssim_pairs = [(d["ssim"], o["ssim"]) for d, o in pairs if "ssim" in d and "ssim" in o]
        if ssim_pairs:
            text += f", SSIM above on {sum(a > b for a, b in ssim_pairs)} of {len(ssim_pairs)}"
        parts.append(text)
    gaps = [r["napari_dip"].get("oracle_gap_db") for r in trows]
    gaps = [g for g in gaps if g is not None]
    line = "DIP auto against " + "; ".join(parts) + "." if parts else ""
    if gaps:
        reasons = {}
        for r in trows:
            reasons[r["napari_dip"]["stop_reason"]] = reasons.get(r["napari_dip"]["stop_reason"], 0) + 1
        line += (f" Gap to the oracle: mean {_mean(gaps):.2f} dB, largest {max(gaps):.2f} dB, "
                 f"{sum(g > 1 for g in gaps)} image(s) above 1 dB. Stop reasons: "
                 + ", ".join(f"{k} {v}" for k, v in reasons.items()) + ".")
    return line.strip()


def markdown_tables(rows: list[dict]) -> str:
    out = []
    for task in TASKS:
        trows = [r for r in rows if r["task"] == task]
        if not trows:
            continue
        base_names = list(dict.fromkeys(k for r in trows for k in r["baselines"]))
        pub_names = list(dict.fromkeys(k for r in trows for k in r["published"]))
        head = (["image", "input"] if task != "sr" else ["image"]) + [
            "DIP auto", "kept iter", "DIP oracle best @ iter", "gap", "stop reason, iterations"] + base_names + [
            f"{p}, same region" for p in pub_names] + ["paper DIP, full image", "DIP s", "DIP CPU-s", "DIP s/iter"]
        out += [f"#### {TASK_TITLES[task]}", "", "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head)]
        means = {h: [] for h in head}
        for r in trows:
            d = r["napari_dip"]
            cells = [f"{r['image']} {r['shape'][0]}×{r['shape'][1]}"]
            vals = [None]
            if task != "sr":
                cells.append(_cell(r["input"]))
                vals.append(r["input"]["psnr"])
            cells += [_cell(d), _kept(d),
                      _oracle_cell(d), _f(d["oracle_gap_db"]), _stop_cell(d)]
            vals += [d["psnr"], None, d["oracle_best_psnr"], d["oracle_gap_db"], None]
            for b in base_names:
                cells.append(_cell(r["baselines"].get(b)))
                vals.append((r["baselines"].get(b) or {}).get("psnr"))
            for p in pub_names:
                cells.append(_cell(r["published"].get(p)))
                vals.append((r["published"].get(p) or {}).get("psnr"))
            cells += [_f(r["paper_full_image"]), _f(d["seconds"], 0), _f(d.get("cpu_s"), 0), _f(d["s_per_iter"], 3)]
            vals += [r["paper_full_image"], d["seconds"], d.get("cpu_s"), d["s_per_iter"]]
            for h, v in zip(head, vals):
                means[h].append(v)
            out.append("| " + " | ".join(cells) + " |")
        mean_cells = ["**mean**"] + [
            "" if h in ("kept iter", "stop reason, iterations") else _f(
                _mean(means[h]), 0 if h in ("DIP s", "DIP CPU-s") else 3 if h == "DIP s/iter" else 2)
            for h in head[1:]]
        out += ["| " + " | ".join(mean_cells) + " |", "", comparisons(trows, base_names), ""]
    every = sorted({r["napari_dip"].get("oracle_every") for r in rows} - {None})
    out.append("DIP auto = what the automatic stop returned (kept iter = the iterate it kept), after the task's "
               "second stage (denoising: a Wiener filter with that iterate as pilot, collaborative under "
               "Gaussian noise, local under Poisson-Gaussian). Oracle best = the "
               "best of the same run's fit outputs (before any second stage), scored against the ground truth "
               f"in the same metric as the other columns of its table, every {'/'.join(map(str, every)) or '?'} "
               "iteration(s); it never steers the run. Gap = oracle best − DIP auto (negative where the second "
               "stage took the result above every iterate). Stop reason from the engine's record "
               "(`minimum`: the rule found one; `no-minimum`: it ran but found none; `cap`: the iteration "
               "cap came first; `user`: cancelled); per-plane reasons in brackets where several planes were "
               "fitted. Means of PSNR in dB are arithmetic over the images shown (mean of SSIM not shown).")
    return "\n".join(out)


def markdown_speed(speed: dict) -> str:
    out = ["| preset | iterations | run | parameters | s/iter | best PSNR (dB) @ iter | time to best (s) | "
           "time to target (s) | peak mem B/px | s/iter ratio | time-to-best ratio | time-to-target ratio |",
           "|" + "---|" * 12]
    for preset, block in speed.items():
        for name, row in block["runs"].items():
            if "skipped" in row:
                out.append(f"| {preset} | {block['iterations']} | {name} | – | skipped: {row['skipped']} "
                           "| | | | | | | |")
                continue
            ratio = block["ratios"].get(name, {})
            label = name + (f" ({row['convdecoder_channels']} ch)" if "convdecoder_channels" in row else "")
            best = f"{row['best_psnr']:.2f} @ {row['best_iteration']}" + ("*" if row["best_at_last_iteration"] else "")
            out.append(
                f"| {preset} | {block['iterations']} | {label} | {row['parameters']:,} | {row['s_per_iter']:.4f} | "
                f"{best} | {row['time_to_best_s']:.1f} | {_f(row.get('time_to_target_s'), 1)} | "
                f"{row['bytes_per_pixel']:.0f} | "
                f"{_f(ratio.get('s_per_iter (deepinv / napari-dip)'))} | "
                f"{_f(ratio.get('time_to_best (deepinv / napari-dip)'))} | "
                f"{_f(ratio.get('time_to_target (deepinv / napari-dip)'))} |")
        out.append(f"| {preset} | | target PSNR = {block['target_psnr']:.2f} dB | | | | | | | | | |")
    out.append("")
    out.append("Ratios are deepinv ÷ napari-dip (above 1: napari-dip is faster). * = best PSNR at the last "
               "iteration (still rising; time to best is a lower bound). Target = the lower of the two best PSNRs "
               "of napari-dip and deepinv with the same net; time to target = first time a run reached it.")
    return "\n".join(out)


def peers_intro(results: dict) -> str:
    m = results["machine"]
    cfg = results["peers"]["config"]
    curves = cfg.get("curves") or {}
    return (f"Every method on the same image in one process, one after the other, device `{m['device']}`, "
            f"{m['torch_threads']} torch thread(s). CPU-s = `time.process_time()` (every thread of the "
            "process), wall-s = elapsed time; on a shared machine compare CPU-s. napari-dip: "
            "`restore(noisy, \"denoise\", seed=0)` with every other setting at its default (preset `auto`, "
            "automatic stop, default intensity map); a reference is passed only so that the engine records its "
            "oracle"
            + (f" (**not the defaults: overridden {cfg['dip_overrides']}**)" if cfg.get("dip_overrides") else "")
            + f". ZS-N2N: written from the paper's description (`benchmarks/peers.py`), "
            f"{cfg.get('zsn2n_steps', 2000)} Adam steps. BM3D: σ estimated from the image. Natural images: "
            "centre crops of the σ = 25 set (noise drawn on the full image, seed 0), RGB PSNR; fluorescence: "
            "the most structured window, scored as in the quality tables (affine fit where marked). "
            f"Curves: every preset the engine lists ({', '.join(results['peers']['presets'])}), "
            "`stopping=\"none\"`, up to the preset's own cap"
            + (f" or {curves['cpu_budget_s']:.0f} CPU-s" if curves.get("cpu_budget_s") else "")
            + f", scored every {curves.get('every', 25)} iterations (scoring time taken off the clocks; the "
            "engine's per-step PSNR and previews stay in).")


def _load(x):
    return "?" if not x else ", ".join(f"{v:.1f}" for v in x)


def write_report(results: dict, md_path: Path) -> str:
    m = results["machine"]
    when = results["started"]
    lines = [
        f"## {when[:10]} — suite `{results['suite']}` ({results['config']['preset']} preset), "
        f"{'GPU ' + m['gpu'] if m.get('gpu') else 'CPU only'}",
        "",
        f"- Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']}, "
        f"torch threads: {m['torch_threads']}, Python {m['python']}, device `{m['device']}`"
        + ("" if m.get("gpu") else "; no GPU available in this run") + "."
        + (f" napari-dip at {m['napari_dip_commit']}." if m.get("napari_dip_commit") else ""),
        f"- Load average (1/5/15 min) at start / end: {_load(m.get('loadavg_start'))} / {_load(m.get('loadavg_end'))} "
        "(other jobs share these cores; timings are only comparable within one run).",
        f"- Total wall time {results['wall_seconds'] / 60:.1f} min"
        + (f", {results['cpu_seconds'] / 60:.1f} CPU-min" if "cpu_seconds" in results else "")
        + f". Figures: `{results['json']}`.",
        f"- deepinv: {results.get('deepinv_status')}.",
        "",
    ]
    if results["rows"]:
        lines += ["### Quality", "", markdown_tables(results["rows"]), ""]
    if results.get("peers"):
        lines += ["### Peers and time to quality (issue 8)", "", peers_intro(results), "",
                  markdown_peers(results["peers"]), ""]
    if results.get("batch"):
        from .batch_suite import markdown_batch

        lines += ["### Batched slices (issue 8)", "", markdown_batch(results["batch"]), ""]
    if results.get("speed"):
        s = results["speed_setup"]
        lines += ["### Speed", "", f"Image: {s['image']}, {s['shape']}, σ = 25 noise, denoising, device "
                  f"`{m['device']}`, memory = {s['memory_kind']}.", "", markdown_speed(results["speed"]), ""]
    text = "\n".join(lines) + "\n"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    if not md_path.exists():
        md_path.write_text("# napari-dip benchmark results\n\nEach section is one run of "
                           "`python -m benchmarks.run`; newest last. See README.md for the columns.\n\n")
    with md_path.open("a") as fh:
        fh.write(text)
    return text


# ----------------------------------------------------------------------------------------- main
def build_cases(suite: dict, data: Path, tasks) -> list[Case]:
    names = suite.get("names", {})
    cases = []
    if "denoise" in tasks:
        cases += datasets.denoise_cases(data, suite["crop"], names.get("denoise"))
    if "sr" in tasks:
        cases += datasets.sr_cases(data, suite["sr_lr_crop"], names.get("sr"))
    if "inpaint" in tasks:
        cases += datasets.inpaint_cases(data, suite["crop"], names.get("inpaint"))
    if "fluo" in tasks:
        cases += datasets.fluo_cases(data, suite.get("fluo_crop", suite["crop"]), names.get("fluo"))
    return cases


def speed_image(data: Path, crop):
    """F16 with the denoising suite's noise, centre crop (side a multiple of 32 for the skip nets)."""
    case = datasets.denoise_cases(data, None, ["F16"])[0]
    box = datasets.centre_box(case.truth.shape, crop, multiple=32)
    return "F16", datasets._cut(case.observed, box), datasets._cut(case.truth, box)


def peers_config(suite: dict) -> dict:
    """The peers block of a suite (any suite can run ``--tasks peers``; the ``peers`` suite's is the default)."""
    return suite.get("peers") or SUITES["peers"]["peers"]


def _cpu_with_children() -> float:
    """CPU seconds of this process and of its finished child processes (runs made in fresh
    processes count too)."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def run_suite(suite_name: str, suite: dict, *, cases: list[Case], device: str,
              speed_input=None, peer_cases: list[Case] | None = None, out_dir: Path = HERE,
              log=print, batch_data: Path | None = None, threads: int | None = None) -> dict:
    dev = resolve_device(device)
    started = dt.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    c0 = _cpu_with_children()
    results = {"suite": suite_name, "started": started, "config": suite, "machine": machine_info(dev),
               "rows": [], "speed": None, "peers": None}
    for case in cases:
        results["rows"].append(run_case(case, suite["preset"], str(dev),
                                        suite.get("max_iters", {}).get(case.task), log=log,
                                        oracle_every=suite.get("oracle_every", 1)))
    if peer_cases:
        from .peers_suite import run_peers

        results["peers"] = run_peers(peer_cases, peers_config(suite), device=str(dev), log=log)
    if speed_input is not None:
        from .speed import speed_suite

        name, noisy, clean = speed_input
        results["speed"] = speed_suite(noisy, clean, suite["speed"]["iters"], str(dev), log=log,
                                       isolate=suite["speed"].get("isolate", True))
        any_run = next(iter(results["speed"].values()))["runs"]["napari-dip"]
        results["speed_setup"] = {"image": name, "shape": list(noisy.shape), "memory_kind": any_run["memory_kind"]}
    if batch_data is not None:
        from .batch_suite import run_batch_suite

        results["batch"] = run_batch_suite(batch_data, suite["batch"], str(dev), threads=threads, log=log)
    deepinv_compat.load() if speed_input is not None else None
    st = deepinv_compat.STATUS
    results["deepinv_status"] = (
        f"deepinv {st['version']} imported, torchvision: {st['torchvision']}" if st["available"]
        else f"not used ({st['error'] or 'speed suite not run'})")
    results["wall_seconds"] = time.perf_counter() - t0
    results["cpu_seconds"] = _cpu_with_children() - c0
    try:
        results["machine"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    stamp = started.replace(":", "").replace("-", "")
    json_path = out_dir / "results" / f"{suite_name}-{stamp}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        results["json"] = str(json_path.relative_to(HERE.parent))
    except ValueError:
        results["json"] = str(json_path)
    json_path.write_text(json.dumps(results, indent=1, default=_json_default))
    write_report(results, out_dir / "RESULTS.md")
    log(f"done in {results['wall_seconds'] / 60:.1f} min; wrote {json_path} and {out_dir / 'RESULTS.md'}")
    return results


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    p.add_argument("--suite", choices=sorted(SUITES), default="quick")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N, mps")
    p.add_argument("--tasks", default=None,
                   help="comma-separated subset of denoise,sr,inpaint,fluo,speed,peers,batch (default: the "
                        "suite's: quick and paper run denoise,sr,inpaint,fluo,speed; peers runs peers; batch, "
                        "slices one at a time against batched, runs only when named)")
    p.add_argument("--data", type=Path, default=datasets.DEFAULT_DATA, help="the shared data folder")
    p.add_argument("--out-dir", type=Path, default=HERE, help="where RESULTS.md and results/ go")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--curve-cpu-budget", type=float, metavar="S",
                   help="peers: CPU seconds at which a preset's curve ends if its cap has not come first "
                        "(0: no limit; default: the suite's)")
    p.add_argument("--curve-every", type=int, metavar="N", help="peers: score the curves every N iterations")
    p.add_argument("--no-curves", action="store_true",
                   help="peers: no time-vs-PSNR curves (they follow the fit alone, without the stop or the "
                        "second stage: a change to those leaves them as they were)")
    p.add_argument("--zsn2n-steps", type=int, metavar="N", help="peers: ZS-N2N steps (default 2000, the paper's)")
    p.add_argument("--preset", choices=("auto", "light", "paper"), default=None,
                   help="napari-dip's preset instead of the suite's (e.g. the paper suite with the defaults "
                        "a CPU user gets: --preset auto)")
    p.add_argument("--names", default=None, metavar="A,B",
                   help="only these images (of every task asked for)")
    p.add_argument("--rebuild-report", type=Path, metavar="JSON",
                   help="recompute the derived speed figures of a saved run and append its section again")
    args = p.parse_args(argv)
    if args.rebuild_report:
        from .speed import summarise

        results = json.loads(args.rebuild_report.read_text())
        for block in (results.get("speed") or {}).values():
            n_pixels = results["speed_setup"]["shape"][0] * results["speed_setup"]["shape"][1]
            summarise(block, n_pixels)
        args.rebuild_report.write_text(json.dumps(results, indent=1, default=_json_default))
        write_report(results, args.out_dir / "RESULTS.md")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["NAPARI_DIP_THREADS"] = str(args.threads)  # the engine's own thread choice
    suite = copy.deepcopy(SUITES[args.suite])
    if args.preset:
        suite["preset"] = args.preset
    tasks = ([t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks
             else list(suite.get("tasks", DEFAULT_TASKS)))
    unknown = set(tasks) - {*TASKS, "speed", "peers", "batch"}
    if unknown:
        p.error(f"unknown task(s) {', '.join(sorted(unknown))}")
    if not args.data.is_dir():
        p.error(f"data folder {args.data} not found (pass --data)")

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True, file=sys.stderr)

    missing = [t for t in tasks if (t in TASKS and "crop" not in suite) or (t in ("speed", "batch") and t not in suite)]
    if missing:
        p.error(f"suite {args.suite!r} has no settings for {', '.join(missing)}")
    if args.names:
        wanted = [n.strip() for n in args.names.split(",") if n.strip()]
        suite["names"] = {t: wanted for t in TASKS}
    cases = build_cases(suite, args.data, tasks)
    speed_input = speed_image(args.data, suite["speed"]["crop"]) if "speed" in tasks else None
    peer_cases = None
    if "peers" in tasks:
        from .peers_suite import build_cases as build_peer_cases

        suite = copy.deepcopy(suite)
        suite["peers"] = cfg = copy.deepcopy(peers_config(suite))
        if args.curve_cpu_budget is not None:
            cfg["curves"]["cpu_budget_s"] = args.curve_cpu_budget or None
        if args.curve_every:
            cfg["curves"]["every"] = args.curve_every
        if args.no_curves:
            cfg["curves"]["images"] = []
        if args.zsn2n_steps:
            cfg["zsn2n_steps"] = args.zsn2n_steps
        peer_cases = build_peer_cases(cfg, args.data)
        if args.names:  # the peers' own image list is in their config
            peer_cases = [c for c in peer_cases if c.name in wanted]
    run_suite(args.suite, suite, cases=cases, device=args.device, speed_input=speed_input,
              peer_cases=peer_cases, out_dir=args.out_dir, log=log,
              batch_data=args.data if "batch" in tasks else None, threads=args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
