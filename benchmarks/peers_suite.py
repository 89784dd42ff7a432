"""Peers and time to quality (issue 8): napari-dip's defaults against Zero-Shot Noise2Noise and BM3D.

For each image, in one process and one after the other on the same device:

* napari-dip with its default settings and the automatic stop (``restore(noisy, "denoise", seed=0)``; a
  reference is passed only so that the engine's oracle is recorded, it never steers the run);
* Zero-Shot Noise2Noise (:mod:`benchmarks.peers`, 2000 steps);
* BM3D (:func:`benchmarks.baselines.bm3d_denoise`, sigma estimated from the image).

Each gets CPU seconds (``time.process_time()``: every thread of the process), wall seconds and PSNR in the
suite's scoring (:func:`benchmarks.run.score`). Then, for the curve images, every napari-dip preset the
engine lists runs without the automatic stop (``stopping="none"``) up to the preset's cap or a CPU-time
budget, and the output is scored every ``every`` iterations: a time-vs-PSNR curve per preset, on which the
default run's end point (its CPU seconds and PSNR) is marked.
"""

from __future__ import annotations

import math
import time

import numpy as np

from napari_dip.engine import presets as engine_presets
from napari_dip.engine import restore, restore_iter

from . import datasets, peers
from .datasets import Case


def preset_names() -> list[str]:
    """The concrete presets the engine offers today, read from it (not 'auto', which picks one of them).

    Every name the engine lists (``presets.NETWORKS``, ``choices.PRESET``; older layouts: ``SIZES``) that
    ``make_config`` accepts for denoising counts, so a preset added to the engine joins the curves.
    """
    candidates = list(getattr(engine_presets, "NETWORKS", None) or ())
    try:
        from napari_dip.choices import PRESET

        candidates += list(PRESET.values)
    except ImportError:
        pass
    candidates += list(getattr(engine_presets, "SIZES", None) or ())
    names = []
    for name in dict.fromkeys(candidates):
        if not isinstance(name, str) or name == "auto":
            continue
        try:
            engine_presets.make_config("denoise", name)
        except (ValueError, TypeError, KeyError):
            continue
        names.append(name)
    return names


def preset_cap(name: str) -> int:
    return engine_presets.make_config("denoise", name).max_iters


def build_cases(config: dict, data) -> list[Case]:
    """The suite's images: ``names[set]`` None = every image of that set, [] = none of it."""
    names = config.get("names", {})
    cases = []
    if names.get("denoise") != []:
        cases += datasets.denoise_cases(data, config["crop"], names.get("denoise"))
    if names.get("fluo") != []:
        cases += datasets.fluo_cases(data, config["crop"], names.get("fluo"))
    return cases


def _reference(case: Case) -> np.ndarray:
    return case.reference if case.reference is not None else case.truth


def run_peers_case(case: Case, *, device: str, zsn2n_steps: int, seed: int = 0, dip_overrides=None,
                   log=print) -> dict:
    """``dip_overrides``: engine settings that replace napari-dip's defaults (tests only; the report
    names them, since the row then no longer shows the defaults)."""
    from .run import score

    log(f"peers/{case.name}: napari-dip defaults, automatic stop")
    c0, w0 = time.process_time(), time.perf_counter()
    result = restore(case.observed, "denoise", seed=seed, device=device, reference=_reference(case),
                     **(dip_overrides or {}))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    rec = result.record
    dip = {
        **score(case, result.image), "cpu_s": cpu, "wall_s": wall, "engine_seconds": rec["seconds"],
        "preset": rec["preset"], "device": rec["device"], "iterations": rec["iterations"],
        "best_iteration": rec["best_iteration"], "stop_reason": rec["stop_reason"],
        "threads": rec.get("threads"),
        "planes": [{k: p.get(k) for k in ("channels", "iterations", "best_iteration", "returned_iteration",
                                           "stop_reason", "cpu_seconds", "stopping", "oracle")}
                   for p in rec["planes"]],
        "parameters": rec["parameters"], "cap": rec["config"]["max_iters"],
        "patience": rec["config"].get("patience"),
    }
    row = peers.measure_case(case, steps=zsn2n_steps, seed=seed, device=device, log=log)
    row["methods"] = {"napari-dip": dip, **row["methods"]}
    row["ratios"] = ratios(row["methods"])
    log(f"    DIP {dip['psnr']:.2f} dB in {dip['cpu_s']:.0f} CPU-s ({dip['stop_reason']} after "
        f"{dip['iterations']}, kept {dip['best_iteration']})")
    return row


def ratios(methods: dict) -> dict:
    d, z, b = methods["napari-dip"], methods.get("ZS-N2N", {}), methods.get("BM3D", {})
    out = {}
    if "cpu_s" in z:
        out["cpu_s DIP / ZS-N2N"] = d["cpu_s"] / max(z["cpu_s"], 1e-9)
        out["wall_s DIP / ZS-N2N"] = d["wall_s"] / max(z["wall_s"], 1e-9)
        out["psnr DIP - ZS-N2N"] = d["psnr"] - z["psnr"]
    if "cpu_s" in b:
        out["cpu_s DIP / BM3D"] = d["cpu_s"] / max(b["cpu_s"], 1e-9)
        out["psnr DIP - BM3D"] = d["psnr"] - b["psnr"]
    return out


def preset_curve(case: Case, preset: str, *, device: str, every: int, cap: int | None = None,
                 cpu_budget_s: float | None = None, seed: int = 0, log=print) -> dict:
    """One preset without the automatic stop: (iteration, CPU-s, wall-s, PSNR) every ``every`` iterations.

    PSNR is the suite's score of the run's output at that step (the engine's per-step PSNR, in its own
    metric, is kept beside it). The time spent scoring is taken off both clocks.
    """
    from .run import as_output, score

    cap = cap or preset_cap(preset)
    points = []
    excluded = [0.0, 0.0]
    c0, w0 = time.process_time(), time.perf_counter()

    def over_budget() -> bool:
        return cpu_budget_s is not None and time.process_time() - c0 - excluded[0] > cpu_budget_s

    result = None
    for event in restore_iter(case.observed, "denoise", preset=preset, device=device, seed=seed,
                              stopping="none", max_iters=cap, reference=_reference(case),
                              preview_every=every, cancel=over_budget):
        if not hasattr(event, "iteration"):
            result = event
            continue
        if event.preview is None or event.final:
            continue
        c1, w1 = time.process_time(), time.perf_counter()
        value = score(case, as_output(case, event.preview))["psnr"]
        points.append((event.iteration, round(c1 - c0 - excluded[0], 3), round(w1 - w0 - excluded[1], 3),
                       round(float(value), 3), None if event.psnr is None else round(float(event.psnr), 3)))
        excluded[0] += time.process_time() - c1
        excluded[1] += time.perf_counter() - w1
    rec = result.record
    if not points or points[-1][0] < rec["iterations"]:
        # Ended between two scored steps (CPU budget): the returned image is the last point.
        c1, w1 = time.process_time(), time.perf_counter()
        points.append((rec["iterations"], round(c1 - c0 - excluded[0], 3), round(w1 - w0 - excluded[1], 3),
                       round(float(score(case, result.image)["psnr"]), 3), None))
    ended = "cap" if rec["iterations"] >= cap else "CPU budget"
    log(f"curve/{case.name}/{preset}: {rec['iterations']} iterations ({ended}), "
        f"best {max((p[3] for p in points), default=float('nan')):.2f} dB")
    return {"image": case.name, "preset": preset, "cap": cap, "cpu_budget_s": cpu_budget_s, "every": every,
            "iterations": rec["iterations"], "ended_by": ended, "parameters": rec["parameters"],
            "columns": ["iteration", "cpu_s", "wall_s", "psnr", "engine_psnr"], "points": points}


def first_reaching(points, target: float):
    """The first curve point at or above ``target`` dB, or None."""
    for p in points:
        if p[3] >= target - 1e-3:
            return p
    return None


def warm_up(device: str) -> None:
    """One tiny run of each method first, so that no timed run pays for first-call set-up (imports,
    kernel selection, allocator growth)."""
    from . import baselines

    x = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    restore(x, "denoise", seed=0, device=device, max_iters=2)
    peers.zsn2n_denoise(x, steps=2, device=device)
    if baselines.has_bm3d():
        baselines.bm3d_denoise(x[..., 0])


def run_peers(cases: list[Case], config: dict, *, device: str, log=print) -> dict:
    warm_up(device)
    rows = [run_peers_case(c, device=device, zsn2n_steps=config.get("zsn2n_steps", peers.ZSN2N_STEPS),
                           dip_overrides=config.get("dip_overrides"), log=log) for c in cases]
    curve_cfg = config.get("curves") or {}
    curves = []
    names = preset_names()
    for case in cases:
        if case.name not in curve_cfg.get("images", ()):
            continue
        for preset in names:
            curves.append(preset_curve(case, preset, device=device, every=curve_cfg.get("every", 25),
                                       cap=curve_cfg.get("cap"), cpu_budget_s=curve_cfg.get("cpu_budget_s"),
                                       log=log))
    return {"config": config, "presets": names, "rows": rows, "curves": curves}


# ----------------------------------------------------------------------------------------- report
def _f(x, nd=2):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}"


def _s(x) -> str:
    """Seconds: whole seconds from 10 s up, one decimal below."""
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def _mean(values):
    v = [x for x in values if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(v) / len(v) if v else None


def _m(row, method, key):
    return (row["methods"].get(method) or {}).get(key)


def markdown_peers(block: dict) -> str:
    rows = block["rows"]
    out = []
    head = ["image", "input", "napari-dip: preset, stop, iterations/kept", "DIP PSNR", "DIP CPU-s", "DIP wall-s",
            "ZS-N2N PSNR", "ZS-N2N CPU-s", "ZS-N2N wall-s", "BM3D PSNR", "BM3D CPU-s", "BM3D wall-s",
            "CPU-s DIP / ZS-N2N", "DIP − ZS-N2N dB", "DIP − BM3D dB"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cols = {h: [] for h in head}
    for r in rows:
        d = r["methods"]["napari-dip"]
        rt = r["ratios"]
        ssim = f" / {d['ssim']:.3f}" if "ssim" in d else ""
        vals = [None, r["input"]["psnr"], None, d["psnr"], d["cpu_s"], d["wall_s"],
                _m(r, "ZS-N2N", "psnr"), _m(r, "ZS-N2N", "cpu_s"), _m(r, "ZS-N2N", "wall_s"),
                _m(r, "BM3D", "psnr"), _m(r, "BM3D", "cpu_s"), _m(r, "BM3D", "wall_s"),
                rt.get("cpu_s DIP / ZS-N2N"), rt.get("psnr DIP - ZS-N2N"), rt.get("psnr DIP - BM3D")]
        kept = d["best_iteration"]
        kept = "/".join(map(str, kept)) if isinstance(kept, list) else kept
        cells = [f"{r['image']} {r['shape'][0]}×{r['shape'][1]}" + (" (affine)" if r["scoring"] == "affine" else ""),
                 _f(vals[1]), f"{d['preset']}, {d['stop_reason']}, {d['iterations']}/{kept}",
                 _f(d["psnr"]) + ssim, _s(d["cpu_s"]), _s(d["wall_s"])]
        for method in ("ZS-N2N", "BM3D"):
            m = r["methods"].get(method) or {}
            if "skipped" in m:
                cells += ["n/a", "", ""]
            else:
                cells += [_f(m.get("psnr")) + (f" / {m['ssim']:.3f}" if "ssim" in m else ""),
                          _s(m.get("cpu_s")), _s(m.get("wall_s"))]
        cells += [_f(vals[12]), _f(vals[13], 2), _f(vals[14], 2)]
        for h, v in zip(head, vals):
            cols[h].append(v)
        out.append("| " + " | ".join(cells) + " |")
    mean = ["**mean**"] + ["" if h.startswith("napari-dip:") else
                           _s(_mean(cols[h])) if h.endswith("-s") else _f(_mean(cols[h])) for h in head[1:]]
    out += ["| " + " | ".join(mean) + " |", ""]
    out.append(goal_lines(rows))
    out.append("")
    for curve_image in dict.fromkeys(c["image"] for c in block["curves"]):
        out += markdown_curves(curve_image, [c for c in block["curves"] if c["image"] == curve_image],
                               next((r for r in rows if r["image"] == curve_image), None))
    return "\n".join(out)


def goal_lines(rows: list[dict]) -> str:
    """Issue 8's CPU goal, computed per image: no more CPU time than ZS-N2N and at or above its PSNR (and
    above BM3D on fluorescence)."""
    lines = []
    for r in rows:
        d, z, b = r["methods"]["napari-dip"], r["methods"].get("ZS-N2N", {}), r["methods"].get("BM3D", {})
        if "cpu_s" not in z:
            continue
        faster = d["cpu_s"] <= z["cpu_s"]
        better = d["psnr"] >= z["psnr"]
        text = (f"{r['image']}: CPU time {'≤' if faster else '>'} ZS-N2N's ({d['cpu_s'] / z['cpu_s']:.2f}×), "
                f"PSNR {'≥' if better else '<'} ZS-N2N's ({d['psnr'] - z['psnr']:+.2f} dB)")
        if r["task"] == "fluo" and "psnr" in b:
            text += f", PSNR {'>' if d['psnr'] > b['psnr'] else '≤'} BM3D's ({d['psnr'] - b['psnr']:+.2f} dB)"
        ok = faster and better and (r["task"] != "fluo" or "psnr" not in b or d["psnr"] > b["psnr"])
        lines.append((ok, text))
    if not lines:
        return ""
    met = sum(ok for ok, _ in lines)
    return (f"Issue 8's CPU goal (default settings use no more CPU time than ZS-N2N and end at or above its "
            f"PSNR; on fluorescence also above BM3D) is met on {met} of {len(lines)} images: "
            + "; ".join(t for _, t in lines) + ".")


def _curve_text(points, n=12) -> str:
    if not points:
        return "(no points)"
    idx = sorted(set(np.linspace(0, len(points) - 1, min(n, len(points))).round().astype(int)))
    return ", ".join(f"{_s(points[i][1])} s → {points[i][3]:.2f}" for i in idx)


def markdown_curves(image: str, curves: list[dict], row: dict | None) -> list[str]:
    out = [f"#### Time vs PSNR, {image}: each preset without the automatic stop", "",
           "| preset | parameters | iterations (ended by) | CPU-s/iter | best PSNR @ iter (CPU-s) | "
           "CPU-s to ZS-N2N's PSNR | CPU-s to BM3D's PSNR | CPU-s to the default run's PSNR |",
           "|" + "---|" * 8]
    targets = {}
    if row:
        for method in ("ZS-N2N", "BM3D", "napari-dip"):
            if "psnr" in (row["methods"].get(method) or {}):
                targets[method] = row["methods"][method]["psnr"]
    for c in curves:
        pts = c["points"]
        if not pts:
            continue
        best = max(pts, key=lambda p: p[3])
        last = pts[-1]
        cells = [c["preset"], f"{c['parameters']:,}" if c.get("parameters") else "–",
                 f"{c['iterations']} ({c['ended_by']})", _f(last[1] / max(last[0], 1), 3),
                 f"{best[3]:.2f} @ {best[0]} ({_s(best[1])})"]
        for method in ("ZS-N2N", "BM3D", "napari-dip"):
            if method not in targets:
                cells.append("–")
                continue
            hit = first_reaching(pts, targets[method])
            cells.append(f"{_s(hit[1])} (iter {hit[0]})" if hit else "not reached")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    for c in curves:
        out.append(f"- `{c['preset']}` curve (CPU-s → PSNR dB, every {c['every']} iterations in the JSON): "
                   + _curve_text(c["points"]))
    if row:
        d = row["methods"]["napari-dip"]
        out.append(f"- **Default run with the automatic stop** (preset `{d['preset']}`): ended by "
                   f"`{d['stop_reason']}` after {d['iterations']} iterations, kept iterate {d['best_iteration']}: "
                   f"**{_s(d['cpu_s'])} CPU-s → {d['psnr']:.2f} dB** (marker on the `{d['preset']}` curve). "
                   + " ".join(f"{m}: {_s(row['methods'][m]['cpu_s'])} CPU-s → {row['methods'][m]['psnr']:.2f} dB."
                              for m in ("ZS-N2N", "BM3D") if "cpu_s" in (row["methods"].get(m) or {})))
    out.append("")
    return out
