"""Entry point: ``python -m benchmarks.run --suite quick|paper [--device cpu|cuda|auto]``.

Writes a dated section to ``benchmarks/RESULTS.md`` and every figure to
``benchmarks/results/<suite>-<timestamp>.json``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
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

HERE = Path(__file__).resolve().parent

#: Suite settings. ``crop``: centre crop side (None = full image; SR crops the LR input to ``sr_lr_crop``);
#: ``max_iters``: per-task cap (None = the preset's paper iteration count); ``names``: image subset.
SUITES = {
    "quick": {
        "preset": "light",
        "crop": 64,
        "fluo_crop": 128,
        "sr_lr_crop": 16,
        "max_iters": {"denoise": 800, "sr": 600, "inpaint": 800, "fluo": 600},
        "names": {
            "denoise": ["F16", "baboon", "peppers"],
            "sr": ["baby", "bird", "butterfly"],
            "inpaint": ["Cameraman256", "house", "barbara"],
            "fluo": ["fmd_bpae_mito", "w2s_010_0", "gigadb_membrane", "gigadb_mito20x"],
        },
        "speed": {"crop": 64, "iters": {"light": 1500, "paper": 400}},
    },
    "paper": {
        "preset": "paper",
        "crop": None,
        "sr_lr_crop": None,
        "max_iters": {"denoise": None, "sr": None, "inpaint": None, "fluo": None},
        "names": {},
        "speed": {"crop": None, "iters": {"light": 3000, "paper": 3000}},
    },
}
TASKS = ("denoise", "sr", "inpaint", "fluo")
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
        t = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:  # a baseline failing must not sink the benchmark
            rows[name] = {"error": f"{type(exc).__name__}: {exc}"}
            return
        rows[name] = {**score(case, out), "seconds": time.perf_counter() - t}

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
def run_dip(case: Case, preset: str, device: str, max_iters: int | None, seed: int = 0, log=None) -> dict:
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
    with PeakMemory(resolve_device(device)) as mem:
        def progress(event):
            if log is not None and event.iteration % 200 == 0:
                log(f"    iteration {event.iteration}, {event.elapsed:.0f} s, PSNR {event.psnr:.2f}")

        result = restore(case.observed, task, reference=reference, callback=progress, **kwargs)
    rec = result.record
    plane = rec["planes"][0]
    oracle = plane.get("oracle", {})
    out = result.image
    n_pixels = out.shape[0] * out.shape[1]
    return {
        **score(case, out),
        "stop_reason": rec["stop_reason"],
        "iterations": rec["iterations"],
        "best_iteration": rec["best_iteration"],
        "seconds": rec["seconds"],
        "s_per_iter": plane["seconds_per_iter"],
        "parameters": rec["parameters"],
        "oracle_best_psnr": oracle.get("best_psnr"),
        "oracle_best_iteration": oracle.get("best_iteration"),
        "returned_psnr_engine": oracle.get("returned_psnr"),
        "oracle_gap_db": (oracle["best_psnr"] - oracle["returned_psnr"]) if oracle else None,
        "peak_bytes": mem.peak_bytes,
        "bytes_per_pixel": mem.peak_bytes / n_pixels,
        "memory_kind": mem.kind,
        "seed": rec["seed"],
        "device": rec["device"],
        "preset": rec["preset"],
    }


def run_case(case: Case, preset: str, device: str, max_iters: int | None, log=print) -> dict:
    log(f"{case.task}/{case.name}: {case.observed.shape} -> napari-dip ({preset}, cap {max_iters})")
    row = {"task": case.task, "image": case.name, "shape": list(case.observed.shape), "note": case.note}
    row["input"] = input_score(case)
    row["baselines"] = run_baselines(case)
    row["published"] = {k: score(case, v) for k, v in case.published.items() if v is not None}
    row["paper_full_image"] = case.paper
    row["napari_dip"] = run_dip(case, preset, device, max_iters, log=log)
    d = row["napari_dip"]
    log(f"    DIP {d['psnr']:.2f} dB ({d['stop_reason']} at {d['iterations']}, oracle best "
        f"{d['oracle_best_psnr']:.2f} at {d['oracle_best_iteration']}, {d['seconds']:.0f} s)")
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


def markdown_tables(rows: list[dict]) -> str:
    out = []
    for task in TASKS:
        trows = [r for r in rows if r["task"] == task]
        if not trows:
            continue
        base_names = list(dict.fromkeys(k for r in trows for k in r["baselines"]))
        pub_names = list(dict.fromkeys(k for r in trows for k in r["published"]))
        head = (["image", "input"] if task != "sr" else ["image"]) + [
            "DIP auto", "DIP oracle best†", "gap†", "stop (iter/best)"] + base_names + [
            f"{p}, same region" for p in pub_names] + ["paper DIP, full image", "DIP s", "DIP s/iter"]
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
            cells += [_cell(d), _f(d["oracle_best_psnr"]), _f(d["oracle_gap_db"]),
                      f"{d['stop_reason']} {d['iterations']}/{d['best_iteration']}"]
            vals += [d["psnr"], d["oracle_best_psnr"], d["oracle_gap_db"], None]
            for b in base_names:
                cells.append(_cell(r["baselines"].get(b)))
                vals.append((r["baselines"].get(b) or {}).get("psnr"))
            for p in pub_names:
                cells.append(_cell(r["published"].get(p)))
                vals.append((r["published"].get(p) or {}).get("psnr"))
            cells += [_f(r["paper_full_image"]), _f(d["seconds"], 0), _f(d["s_per_iter"], 3)]
            vals += [r["paper_full_image"], d["seconds"], d["s_per_iter"]]
            for h, v in zip(head, vals):
                means[h].append(v)
            out.append("| " + " | ".join(cells) + " |")
        mean_cells = ["**mean**"] + [
            "" if h.startswith("stop") else _f(_mean(means[h]), 0 if h == "DIP s" else
                                                 3 if h == "DIP s/iter" else 2)
            for h in head[1:]]
        out += ["| " + " | ".join(mean_cells) + " |", ""]
    out.append("† in the engine's own metric (PSNR of the [0, 1]-normalised output over all channels, "
               "against the reference; for SR that is RGB PSNR without border crop, for fluorescence "
               "the clean image mapped to the noisy one's scale): oracle best = best iterate seen, "
               "gap = oracle best − what the automatic stop returned. Means of PSNR in dB are "
               "arithmetic over the images shown (mean of SSIM not shown in the fluorescence mean row).")
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
        f"- Total wall time {results['wall_seconds'] / 60:.1f} min. Figures: `{results['json']}`.",
        f"- deepinv: {results.get('deepinv_status')}.",
        "",
    ]
    if results["rows"]:
        lines += ["### Quality", "", markdown_tables(results["rows"]), ""]
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


def run_suite(suite_name: str, suite: dict, *, cases: list[Case], device: str,
              speed_input=None, out_dir: Path = HERE, log=print) -> dict:
    dev = resolve_device(device)
    started = dt.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    results = {"suite": suite_name, "started": started, "config": suite, "machine": machine_info(dev),
               "rows": [], "speed": None}
    for case in cases:
        results["rows"].append(run_case(case, suite["preset"], str(dev),
                                        suite["max_iters"].get(case.task), log=log))
    if speed_input is not None:
        from .speed import speed_suite

        name, noisy, clean = speed_input
        results["speed"] = speed_suite(noisy, clean, suite["speed"]["iters"], str(dev), log=log,
                                       isolate=suite["speed"].get("isolate", True))
        any_run = next(iter(results["speed"].values()))["runs"]["napari-dip"]
        results["speed_setup"] = {"image": name, "shape": list(noisy.shape), "memory_kind": any_run["memory_kind"]}
    deepinv_compat.load() if speed_input is not None else None
    st = deepinv_compat.STATUS
    results["deepinv_status"] = (
        f"deepinv {st['version']} imported, torchvision: {st['torchvision']}" if st["available"]
        else f"not used ({st['error'] or 'speed suite not run'})")
    results["wall_seconds"] = time.perf_counter() - t0
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
    p.add_argument("--tasks", default=",".join(TASKS) + ",speed",
                   help="comma-separated subset of denoise,sr,inpaint,fluo,speed")
    p.add_argument("--data", type=Path, default=datasets.DEFAULT_DATA, help="the shared data folder")
    p.add_argument("--out-dir", type=Path, default=HERE, help="where RESULTS.md and results/ go")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
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
    suite = SUITES[args.suite]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not args.data.is_dir():
        p.error(f"data folder {args.data} not found (pass --data)")

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True, file=sys.stderr)

    cases = build_cases(suite, args.data, tasks)
    speed_input = speed_image(args.data, suite["speed"]["crop"]) if "speed" in tasks else None
    run_suite(args.suite, suite, cases=cases, device=args.device, speed_input=speed_input,
              out_dir=args.out_dir, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
