"""Zero-shot peers a napari user would pick instead of DIP for denoising (benchmarks only, never the package).

Zero-Shot Noise2Noise (ZS-N2N; Mansour & Heckel, CVPR 2023), written from the paper's description as
summarised in ``shared/reference/baselines.md`` and ``dip-method.md`` section 5.3:

* network: conv3x3 C->48, LeakyReLU(0.2), conv3x3 48->48, LeakyReLU(0.2), conv1x1 48->C; it predicts the
  noise, so the denoised image is ``y - net(y)``;
* training pair: the two diagonal 2x2 sub-images of the noisy image (stride-2 depthwise filters
  [[0, 1/2], [1/2, 0]] and [[1/2, 0], [0, 1/2]]);
* loss: residual term (each denoised sub-image predicts the other sub-image) + consistency term
  (downsampling the denoised image matches denoising the sub-images);
* Adam, lr 1e-3, 2000 steps, lr halved at step 1500; no early stopping. The last network is used.

``python -m benchmarks.peers`` measures ZS-N2N and BM3D (CPU seconds, wall seconds, PSNR) on the
denoising and fluorescence sets and writes them to a JSON file; see ``main``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ZSN2N_STEPS = 2000
ZSN2N_LR = 1e-3
ZSN2N_HALVE_AT = 1500
ZSN2N_WIDTH = 48


class ZSN2NNet(nn.Module):
    """Two 3x3 convolutions and a 1x1 convolution; the output is the noise estimate."""

    def __init__(self, channels: int, width: int = ZSN2N_WIDTH):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, channels, 1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv1(y), 0.2)
        h = F.leaky_relu(self.conv2(h), 0.2)
        return self.conv3(h)


def pair_downsample(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two half-resolution images of the 2x2 diagonals: mean of (top-right, bottom-left) and of
    (top-left, bottom-right) of every 2x2 block. Odd trailing rows/columns are dropped."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    tl, tr = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    bl, br = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (tr + bl) / 2, (tl + br) / 2


def zsn2n_loss(net: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Residual + consistency loss of the paper for one noisy image ``y`` (N, C, H, W)."""
    y1, y2 = pair_downsample(y)
    d1, d2 = y1 - net(y1), y2 - net(y2)
    residual = 0.5 * (F.mse_loss(d1, y2) + F.mse_loss(d2, y1))
    full1, full2 = pair_downsample(y - net(y))
    consistency = 0.5 * (F.mse_loss(d1, full1) + F.mse_loss(d2, full2))
    return residual + consistency


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    a = np.asarray(x, np.float32)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a))[None]


def _to_numpy(t: torch.Tensor, ndim: int) -> np.ndarray:
    a = t[0].detach().cpu().numpy()
    return a[0] if ndim == 2 else a.transpose(1, 2, 0)


def zsn2n_denoise(x: np.ndarray, *, steps: int = ZSN2N_STEPS, lr: float = ZSN2N_LR,
                  halve_at: int | None = ZSN2N_HALVE_AT, seed: int = 0, device: str = "cpu",
                  trace_every: int = 0, score=None) -> tuple[np.ndarray, list]:
    """Denoise ``x`` ((H, W) or (H, W, C), float in [0, 1]) with ZS-N2N fitted to ``x`` alone.

    Returns (denoised image clipped to [0, 1], trace). With ``trace_every`` > 0 and a ``score`` callable
    (denoised numpy image -> PSNR), the trace holds (step, CPU seconds, wall seconds, PSNR) every
    ``trace_every`` steps (the scoring time is excluded from the clocks).
    """
    dev = torch.device(device)
    y = _to_tensor(x).to(dev)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        net = ZSN2NNet(y.shape[1]).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    trace: list[tuple[int, float, float, float]] = []
    excluded_cpu = excluded_wall = 0.0
    c0, w0 = time.process_time(), time.perf_counter()
    for step in range(1, steps + 1):
        if halve_at is not None and step == halve_at + 1:
            for group in opt.param_groups:
                group["lr"] = lr / 2
        opt.zero_grad(set_to_none=True)
        loss = zsn2n_loss(net, y)
        loss.backward()
        opt.step()
        if trace_every and score is not None and (step % trace_every == 0 or step == steps):
            c1, w1 = time.process_time(), time.perf_counter()
            with torch.no_grad():
                est = _to_numpy((y - net(y)).clamp(0, 1), np.ndim(x))
            trace.append((step, c1 - c0 - excluded_cpu, w1 - w0 - excluded_wall, float(score(est))))
            excluded_cpu += time.process_time() - c1
            excluded_wall += time.perf_counter() - w1
    with torch.no_grad():
        out = (y - net(y)).clamp(0, 1)
    return _to_numpy(out, np.ndim(x)), trace


def parameter_count(channels: int) -> int:
    return sum(p.numel() for p in ZSN2NNet(channels).parameters())


def timed(fn, *args, **kwargs):
    """(result, CPU seconds of the whole process (every thread), wall seconds)."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.process_time() - c0, time.perf_counter() - w0


# ----------------------------------------------------------------------------------- measurement
def measure_case(case, *, steps: int = ZSN2N_STEPS, seed: int = 0, device: str = "cpu",
                 methods=("ZS-N2N", "BM3D"), log=print) -> dict:
    """Run the peers on one benchmark case; PSNR (and SSIM for grey) in the suite's own scoring."""
    from . import baselines
    from .run import as_unit_float, from_unit_float, input_score, score

    x = as_unit_float(case)
    row = {"task": case.task, "image": case.name, "shape": list(case.observed.shape),
           "scoring": case.note or "direct", "input": input_score(case), "methods": {}}
    for name in methods:
        if name == "BM3D" and not baselines.has_bm3d():
            row["methods"][name] = {"skipped": "bm3d not installed"}
            continue
        if name == "BM3D":
            out, cpu, wall = timed(baselines.bm3d_denoise, x)
            extra = {"sigma_hat": baselines.sigma_hat(x)}
        else:
            (out, _), cpu, wall = timed(zsn2n_denoise, x, steps=steps, seed=seed, device=device)
            extra = {"steps": steps, "parameters": parameter_count(1 if x.ndim == 2 else x.shape[-1]),
                     "device": device}
        res = {**score(case, from_unit_float(case, np.clip(out, 0, 1))), "cpu_s": cpu, "wall_s": wall,
               **extra}
        row["methods"][name] = res
        log(f"{case.task}/{case.name} {name}: {res['psnr']:.2f} dB, {cpu:.1f} CPU-s, {wall:.1f} s wall")
    return row


def main(argv=None) -> int:
    from . import datasets
    from .run import _json_default, machine_info

    p = argparse.ArgumentParser(prog="python -m benchmarks.peers",
                                description="ZS-N2N and BM3D on the denoising and fluorescence crops")
    p.add_argument("--data", type=Path, default=datasets.DEFAULT_DATA)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--sets", default="denoise,fluo", help="denoise and/or fluo")
    p.add_argument("--names", default="", help="comma-separated image subset (default: all)")
    p.add_argument("--methods", default="ZS-N2N,BM3D")
    p.add_argument("--steps", type=int, default=ZSN2N_STEPS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n for n in args.names.split(",") if n] or None
    sets = [s for s in args.sets.split(",") if s]
    cases = []
    if "denoise" in sets:
        cases += datasets.denoise_cases(args.data, args.crop, names)
    if "fluo" in sets:
        cases += datasets.fluo_cases(args.data, args.crop, names)
    methods = tuple(m for m in args.methods.split(",") if m)

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True, file=sys.stderr)

    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine_info("cpu"),
               "crop": args.crop, "zsn2n_steps": args.steps, "rows": []}
    t0 = time.perf_counter()
    for case in cases:
        results["rows"].append(measure_case(case, steps=args.steps, methods=methods, log=log))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=_json_default))  # partial results survive
    results["wall_seconds"] = time.perf_counter() - t0
    try:
        import os

        results["machine"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    args.json.write_text(json.dumps(results, indent=1, default=_json_default))
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
