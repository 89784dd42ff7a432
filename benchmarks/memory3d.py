"""Memory of a 3-D fit (stack mode '3d') against the engine's estimate, on the CPU:
``python -m benchmarks.memory3d``.

Each case runs in a fresh process: a small warm-up run (imports, allocator pools), the kernel's
peak counter reset, then a 40-iteration run of the light net on a random stack; "measured" is
the growth of the peak resident set. The peak settles only after some iterations (on the
16x96x96 deconvolution: 2 iterations 475-506 MiB, 5: 499, 10: 551, 20: 618, 40: 659, 80: 747,
160: 654), so a 2-iteration run understated it. Stack mode '3d' is refused, never tiled, when the estimate
exceeds the device, so the estimate must not fall below the measurement.
"""

from __future__ import annotations

import subprocess
import sys

#: (Z, Y, X, Z spacing in pixels, task)
CASES = [(8, 64, 64, 1.0, "denoise"), (16, 96, 96, 1.0, "denoise"), (32, 128, 128, 1.0, "denoise"),
         (16, 128, 128, 4.0, "denoise"), (16, 96, 96, 4.0, "deconvolve"),
         (8, 128, 128, 8.0, "denoise"), (32, 96, 96, 8.0, "denoise"),
         (24, 160, 160, 4.0, "denoise")]

ITERS = 40

_ONE = """
import sys
import numpy as np, torch
from napari_dip.engine.stacks import restore_stack
torch.set_num_threads(1)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

z, h, w, vz, task = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
ITERS = int(sys.argv[6])
stack = (np.random.default_rng(0).random((z, h, w)) * 1000).astype(np.float32)
kw = dict(stack_mode="3d", max_iters=ITERS, stopping="none", preset="light", device="cpu", seed=0,
          threads=1, voxel_size=(vz, 1.0, 1.0))
if task == "deconvolve":
    kw["psf_sigma"] = (1.0, 1.5, 1.5)
restore_stack(stack[:4, :16, :16], task, **{**kw, "max_iters": 2})
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS")
restore_stack(stack, task, **kw)
print(status("VmHWM") - before)
"""


def measure(z: int, h: int, w: int, vz: float = 1.0, task: str = "denoise") -> int:
    """Peak resident set growth, in bytes, of a 40-iteration 3-D fit of a random (z, h, w) stack
    with Z spacing ``vz`` pixels, in a fresh process (Linux)."""
    import os

    out = subprocess.run([sys.executable, "-c", _ONE, str(z), str(h), str(w), str(vz), task,
                          str(ITERS)],
                         capture_output=True, text=True, check=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return int(out.stdout.split()[-1])


def estimate(z: int, h: int, w: int, task: str = "denoise") -> int:
    """The engine's estimate for that fit, as stack mode '3d' checks it."""
    from napari_dip.engine.devices import estimate_memory
    from napari_dip.engine.presets import make_config

    return estimate_memory(h, w, make_config(task, "light", None).net, planes=z)


def main() -> int:
    print("| Z x Y x X | Z spacing (px) | task | measured MiB | B/voxel | estimate MiB | "
          "estimate ÷ measured |")
    print("|---|---|---|---|---|---|---|")
    for z, h, w, vz, task in CASES:
        measured, est = measure(z, h, w, vz, task), estimate(z, h, w, task)
        print(f"| {z}x{h}x{w} | {vz:g} | {task} | {measured / 2**20:.0f} | "
              f"{measured / (z * h * w):.0f} | {est / 2**20:.0f} | {est / measured:.2f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
