"""Save docs/images/screenshot.png: the viewer with the napari-dip widget after a real run.

Needs a display; on a headless machine run it under Xvfb:

    xvfb-run -a -s "-screen 0 1400x1000x24" .venv/bin/python scripts/make_screenshot.py

It opens the synthetic fluorescence sample, restores it on the CPU with the light preset and
the default automatic stop (seed 0, one torch thread, as on a shared machine), then turns on
the side-by-side comparison with the hidden ground truth as reference (input | result, each
panel named, PSNR / SSIM below the plot) and saves a downscaled screenshot of the window.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

ROOT = Path(__file__).resolve().parents[1]


def settle(seconds: float = 0.4):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "screenshot.png")
    parser.add_argument("--iters", type=int, default=0,
                        help="iteration cap (0: the task's; the automatic stop ends earlier)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the run")
    parser.add_argument("--width", type=int, default=1100, help="width of the saved PNG")
    args = parser.parse_args(argv)

    os.environ["NAPARI_DIP_THREADS"] = str(args.threads)  # what the engine's runs use
    viewer = napari.Viewer(show=True, title="napari-dip")
    viewer.window.resize(1400, 980)
    viewer.open_sample("napari-dip", "noisy-fluorescence")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-dip", "Deep Image Prior")
    dock.setMinimumWidth(430)
    dock.setMaximumWidth(430)
    widget.image.value = viewer.layers["noisy cells"]
    widget.reference.value = viewer.layers["cells (ground truth)"]
    widget.preset.value = "light"
    widget.device.value = "cpu"
    widget.seed.value = 0
    widget.max_iters.value = args.iters
    widget.preview_every.value = 50
    settle(3)  # the estimate before Run
    started = time.monotonic()
    widget.run()
    while widget.running:
        QApplication.processEvents()
        time.sleep(0.02)
    print(f"run: {time.monotonic() - started:.0f} s wall; {widget.status.value}")
    widget.compare(True)
    viewer.layers["cells (ground truth)"].visible = False  # input | result, metrics below
    viewer.reset_view()
    settle(1)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    img = Image.fromarray(np.asarray(shot)[..., :3])
    height = round(img.height * args.width / img.width)
    img = img.resize((args.width, height), Image.Resampling.LANCZOS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out, optimize=True)
    print(f"saved {args.out} ({args.out.stat().st_size // 1024} KiB); {widget.metrics.value}")
    viewer.close()
    return args.out


if __name__ == "__main__":
    main()
