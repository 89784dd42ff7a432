"""Issue 8's GPU figures in one short run: ``python -m benchmarks.gpu [--data D] [--out-dir D]``.

Sized for a lent GPU of a few minutes. Parts, in order; once ``--budget`` seconds have gone no
further part, image or variant starts, and the JSON is rewritten after each part, so a run cut
short keeps what it measured:

* ``goal``: the 512² RGB denoise of the issue (F16, sigma 25, the paper suite's noise), napari-dip's
  defaults end to end (``restore`` from the noisy array to the restored one: the paper net, bf16,
  CUDA graphs, the automatic stop, the second stage), first in a fresh process (``cold``: CUDA
  set-up, kernel choice and graph capture included) and again (``warm``); then single changes to
  the defaults: no CUDA graphs, the light net, float32 (does bf16 keep the quality?), no
  channels_last.
* ``colour``: the other images of the paper's colour set at full size, defaults, warm.
* ``batch``: 64 slices of 256² (``benchmarks.batch_suite``'s paper setting), batched against one at
  a time (rate over the first 8 slices), each in a fresh process.
* ``peers``: the peers suite's 256² crops, napari-dip's defaults beside Zero-Shot Noise2Noise on
  the same GPU (BM3D is a CPU method: see the CPU peers tables).
* ``fluo``: the 8 held-out real fluorescence pairs (128², ``benchmarks.microscopy``), defaults.
* ``profile``: the goal image's first 60 steps under torch's profiler (the costliest operators).
* ``compile``: ``torch.compile`` of the network on the goal image (compilation time included).

No reference image is given to the engine (it would make the loop read the GPU back at every
step); PSNR is computed afterwards. Wall time is measured around the call after a
``torch.cuda.synchronize``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import torch

from . import datasets

HERE = Path(__file__).resolve().parent
GOAL_IMAGE = "F16"
#: perf_counter time after which a part starts no further run (set by :func:`main`).
DEADLINE = float("inf")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True, file=sys.stderr)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed_restore(case, device: str, **overrides) -> dict:
    """napari-dip's defaults (plus ``overrides``) on one case, end to end, scored afterwards."""
    from napari_dip.engine import restore

    from .measure import PeakMemory
    from .run import score

    _sync(device)
    c0, w0 = time.process_time(), time.perf_counter()
    with PeakMemory(device) as mem:
        result = restore(case.observed, "denoise", seed=0, device=device, **overrides)
        _sync(device)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    rec = result.record
    plane = rec["planes"][0]
    h, w = case.observed.shape[:2]
    return {
        "image": case.name, "shape": list(case.observed.shape), **score(case, result.image),
        "wall_s": wall, "cpu_s": cpu, "engine_seconds": rec["seconds"],
        "iterations": rec["iterations"], "best_iteration": rec["best_iteration"],
        "stop_reason": rec["stop_reason"], "preset": rec["preset"], "device": rec["device"],
        "precision": plane.get("precision"), "refinement": plane.get("refinement"),
        "ms_per_iteration": 1000 * plane["seconds_per_iter"],
        "peak_bytes": mem.peak_bytes, "peak_bytes_per_pixel": mem.peak_bytes / (h * w),
        "overrides": {k: str(v) for k, v in overrides.items()}, "paper": case.paper,
    }


def _describe(r: dict) -> str:
    return (f"{r['image']} {r['psnr']:.2f} dB, {r['wall_s']:.2f} s wall ({r['iterations']} it, "
            f"kept {r['best_iteration']}, {r['ms_per_iteration']:.2f} ms/it, {r['precision']}, "
            f"{r['peak_bytes_per_pixel'] / 1024:.1f} KB/px)")


def part_goal(data: Path, device: str, log) -> dict:
    (case,) = datasets.denoise_cases(data, None, [GOAL_IMAGE])
    runs = {}
    variants = [  # most wanted first: a run past the deadline leaves the rest out
        ("cold", {}),
        ("warm", {}),
        ("no CUDA graphs", {"cuda_graphs": False}),
        ("light preset", {"preset": "light"}),
        ("float32", {"precision": "float32"}),
        ("no channels_last", {"channels_last": False}),
        ("warm again", {}),
    ]
    for name, overrides in variants:
        if time.perf_counter() > DEADLINE:
            break
        runs[name] = timed_restore(case, device, **overrides)
        log(f"goal/{name}: {_describe(runs[name])}")
    return {"image": case.name, "runs": runs}


def part_colour(data: Path, device: str, log) -> dict:
    rows = []
    for case in datasets.denoise_cases(data, None):
        if case.name == GOAL_IMAGE or time.perf_counter() > DEADLINE:
            continue
        rows.append(timed_restore(case, device))
        log(f"colour: {_describe(rows[-1])}")
    return {"rows": rows}


def part_batch(data: Path, device: str, log, config: dict | None = None) -> dict:
    from .batch_suite import run_batch_suite
    from .run import SUITES

    return run_batch_suite(data, config or SUITES["paper"]["batch"], device, log=log)


def part_peers(data: Path, device: str, log) -> dict:
    from . import peers
    from .peers_suite import build_cases
    from .run import SUITES

    cfg = SUITES["peers"]["peers"]
    rows = []
    for case in build_cases(cfg, data):
        if time.perf_counter() > DEADLINE:
            break
        dip = timed_restore(case, device)
        zs = peers.measure_case(case, steps=cfg["zsn2n_steps"], device=device, methods=("ZS-N2N",),
                                log=log)["methods"]["ZS-N2N"]
        rows.append({"image": case.name, "napari-dip": dip, "ZS-N2N": zs})
        log(f"peers: {_describe(dip)}; ZS-N2N {zs['psnr']:.2f} dB in {zs['wall_s']:.1f} s")
    return {"rows": rows}


def part_fluo(data: Path, device: str, log) -> dict:
    from .microscopy import HELD_OUT

    rows = []
    for case in datasets.fluo_cases(data, 128, HELD_OUT):
        if time.perf_counter() > DEADLINE:
            break
        r = timed_restore(case, device)  # scored as the suites score fluorescence (affine fit)
        rows.append(r)
        log(f"fluo: {_describe(r)}")
    return {"rows": rows}


def part_compile(data: Path, device: str, log) -> dict:
    (case,) = datasets.denoise_cases(data, None, [GOAL_IMAGE])
    runs = {}
    for name in ("first (compiles)", "second"):
        runs[name] = timed_restore(case, device, compile=True)
        log(f"compile/{name}: {_describe(runs[name])}")
    return {"runs": runs}


def part_profile(data: Path, device: str, log, iterations: int = 60) -> dict:
    """Where a step's time goes: the goal image's fit for ``iterations`` steps under the profiler,
    its 25 costliest operators by device time."""
    from torch.profiler import ProfilerActivity, profile

    from napari_dip.engine import restore

    (case,) = datasets.denoise_cases(data, None, [GOAL_IMAGE])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if torch.device(device).type == "cuda" else [])
    with profile(activities=activities) as prof:
        restore(case.observed, "denoise", seed=0, device=device, max_iters=iterations,
                stopping="none", refine="none")
        _sync(device)
    key = "cuda_time_total" if torch.device(device).type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=25)
    log("profile:\n" + table)
    return {"iterations": iterations, "table": table}


PARTS = {"goal": part_goal, "colour": part_colour, "batch": part_batch, "peers": part_peers,
         "fluo": part_fluo, "profile": part_profile, "compile": part_compile}


def machine(device: str) -> dict:
    from .run import machine_info

    info = machine_info(device)
    if torch.device(device).type == "cuda":
        p = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
    # A lent machine's copy of the tree may carry a stale .git: the caller names the revision.
    info["napari_dip_commit"] = (os.environ.get("NAPARI_DIP_REVISION")
                                 or info.get("napari_dip_commit") or "?")
    return info


# ----------------------------------------------------------------------------------------- report
def _table(title: str, header: list[str], rows: list[dict], cells, means: dict[int, str]) -> list[str]:
    """A Markdown table of ``rows`` (``cells(row)`` gives a row's cells) ending in a row of the
    means of the columns ``means`` names (column index: key)."""
    out = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in cells(r)) + " |" for r in rows]
    from .peers_suite import _f, _mean

    mean = ["mean"] + [_f(_mean(r[means[i]] for r in rows)) if i in means else ""
                       for i in range(1, len(header))]
    return out + ["| " + " | ".join(mean) + " |", ""]


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"## {res['date']} — GPU: issue 8's figures on {m.get('gpu') or m['device']}", "",
             f"- Machine: {m.get('gpu')} ({m.get('gpu_memory_gib', '?')} GiB), {m['logical_cpus']} logical "
             f"CPUs ({m['cpu']}), torch {m['torch']}, CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}, "
             f"Python {m['python']}. napari-dip at {m.get('napari_dip_commit')}. `python -m benchmarks.gpu`.",
             "- Wall time is end to end (`restore` on the noisy array, the second stage included), "
             "after a CUDA synchronise; no reference is given to the engine (PSNR afterwards).", ""]
    row = ("| {name} | {r[psnr]:.2f} | {r[wall_s]:.2f} | {r[iterations]} | {r[best_iteration]} | "
           "{r[ms_per_iteration]:.2f} | {r[precision]} | {kb:.2f} |")
    head = ["| run | PSNR (dB) | wall s | iterations | kept | ms / iteration | precision | peak KB/px |",
            "|---|---|---|---|---|---|---|---|"]
    goal = res["parts"].get("goal")
    if goal and "runs" in goal:
        lines += [f"### The goal: a 512² RGB denoise ({goal['image']}, sigma 25), defaults", ""] + head
        for name, r in goal["runs"].items():
            lines.append(row.format(name=name, r=r, kb=r["peak_bytes_per_pixel"] / 1024))
        lines.append("")
    colour = res["parts"].get("colour")
    if colour and "rows" in colour:
        rows = colour["rows"] + ([goal["runs"]["warm"]] if goal and "runs" in goal else [])
        lines += _table("The paper's colour set at full size, defaults",
                        ["image", "PSNR (dB)", "paper's DIP (dB)", "wall s", "iterations", "kept",
                         "ms / iteration"], rows,
                        lambda r: [r["image"], f"{r['psnr']:.2f}", r["paper"] or "—", f"{r['wall_s']:.2f}",
                                   r["iterations"], r["best_iteration"], f"{r['ms_per_iteration']:.2f}"],
                        {1: "psnr", 2: "paper", 3: "wall_s"})
    batch = res["parts"].get("batch")
    if batch and "batched" in batch:
        from .batch_suite import markdown_batch

        lines += ["### Batched slices", "", markdown_batch(batch), ""]
    peers = res["parts"].get("peers")
    if peers and "rows" in peers:
        lines += ["### Peers on the GPU (256² crops)", "",
                  "| image | DIP PSNR | DIP wall s | DIP iterations | ZS-N2N PSNR | ZS-N2N wall s | "
                  "DIP − ZS-N2N (dB) | wall DIP / ZS-N2N |", "|---|---|---|---|---|---|---|---|"]
        for r in peers["rows"]:
            d, z = r["napari-dip"], r["ZS-N2N"]
            lines.append(f"| {r['image']} | {d['psnr']:.2f} | {d['wall_s']:.2f} | {d['iterations']} | "
                         f"{z['psnr']:.2f} | {z['wall_s']:.2f} | {d['psnr'] - z['psnr']:+.2f} | "
                         f"{d['wall_s'] / z['wall_s']:.2f} |")
        lines.append("")
    fluo = res["parts"].get("fluo")
    if fluo and "rows" in fluo:
        lines += _table("Held-out fluorescence pairs (128², real noise), defaults",
                        ["pair", "PSNR (dB)", "SSIM", "wall s", "iterations", "kept"], fluo["rows"],
                        lambda r: [r["image"], f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", f"{r['wall_s']:.2f}",
                                   r["iterations"], r["best_iteration"]],
                        {1: "psnr", 3: "wall_s"})
    comp = res["parts"].get("compile")
    if comp and "runs" in comp:
        lines += ["### torch.compile on the goal image", ""] + head
        for name, r in comp["runs"].items():
            lines.append(row.format(name=name, r=r, kb=r["peak_bytes_per_pixel"] / 1024))
        lines.append("")
    for name, part in res["parts"].items():
        if "error" in part or "skipped" in part:
            lines.append(f"- `{name}`: {part.get('error') or part.get('skipped')}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=datasets.DEFAULT_DATA)
    p.add_argument("--out-dir", type=Path, default=HERE)
    p.add_argument("--device", default="cuda")
    p.add_argument("--parts", default=",".join(PARTS), help=f"subset of {','.join(PARTS)}")
    p.add_argument("--budget", type=float, default=420.0,
                   help="seconds after which no further part starts")
    p.add_argument("--batch-slices", type=int, nargs=2, metavar=("N", "BASELINE"),
                   help="batch: N slices batched, the first BASELINE one at a time (default: the paper "
                        "suite's 64 and 8)")
    args = p.parse_args(argv)
    global DEADLINE
    t0 = time.perf_counter()
    DEADLINE = t0 + args.budget
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    res = {"date": stamp, "machine": machine(args.device), "parts": {}}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out_json = args.out_dir / f"gpu_{dt.datetime.now().strftime('%Y%m%d_%H%M%S')}.json"
    from .run import _json_default

    for name in [n.strip() for n in args.parts.split(",") if n.strip()]:
        if time.perf_counter() > DEADLINE:
            res["parts"][name] = {"skipped": f"not started: the {args.budget:.0f} s budget was spent"}
        else:
            _log(f"part {name}")
            try:
                if name == "batch" and args.batch_slices:
                    from .run import SUITES

                    cfg = {**SUITES["paper"]["batch"], "slices": args.batch_slices[0],
                           "baseline_slices": args.batch_slices[1]}
                    res["parts"][name] = part_batch(args.data, args.device, _log, cfg)
                else:
                    res["parts"][name] = PARTS[name](args.data, args.device, _log)
            except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
                import traceback

                traceback.print_exc()
                res["parts"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        res["seconds"] = time.perf_counter() - t0
        out_json.write_text(json.dumps(res, indent=1, default=_json_default))
    report = markdown(res)
    (args.out_dir / "gpu_section.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
