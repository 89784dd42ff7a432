"""Make docs/images/denoise_example.png: noisy | napari-dip | clean, for the bundled examples.

    .venv/bin/python scripts/make_readme_figure.py

Default settings (automatic stop, preset chosen for the device), seed 0. Prints the PSNR of the
noisy input and of the result against the clean image, and the iteration the stopping rule kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from napari_dip.engine import restore

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def to_uint8(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    img = np.clip((img.astype(np.float64) - lo) / (hi - lo), 0, 1)
    img = np.round(img * 255).astype(np.uint8)
    return np.dstack([img] * 3) if img.ndim == 2 else img


def psnr(a, b, peak):
    return 10 * np.log10(peak**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


def main() -> None:
    rows = []
    clean = tifffile.imread(EXAMPLES / "nuclei_clean_uint16.tif")
    noisy = tifffile.imread(EXAMPLES / "nuclei_noisy_uint16.tif")
    result = restore(noisy, "denoise", seed=0)
    peak = float(clean.max() - clean.min())
    print(f"nuclei: noisy {psnr(noisy, clean, peak):.2f} dB -> {psnr(result.image, clean, peak):.2f}"
          f" dB, kept iteration {result.best_iteration} of {result.record['iterations']}")
    lo, hi = np.percentile(clean, [0.5, 99.8])
    rows.append([to_uint8(x, lo, hi) for x in (noisy, result.image, clean)])

    gt = np.asarray(Image.open(EXAMPLES / "f16_128.png").convert("RGB"))
    rng = np.random.default_rng(0)
    noisy8 = np.round(np.clip(gt / 255 + rng.normal(0, 25 / 255, gt.shape), 0, 1) * 255)
    noisy8 = noisy8.astype(np.uint8)
    result = restore(noisy8, "denoise", seed=0)
    print(f"F16: noisy {psnr(noisy8, gt, 255):.2f} dB -> {psnr(result.image, gt, 255):.2f} dB,"
          f" kept iteration {result.best_iteration} of {result.record['iterations']}")
    rows.append([noisy8, result.image, gt])

    gap = 6
    h, w = rows[0][0].shape[:2]
    canvas = np.full((len(rows) * (h + gap) - gap, 3 * (w + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            canvas[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    out = ROOT / "docs" / "images" / "denoise_example.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).resize((canvas.shape[1] * 2, canvas.shape[0] * 2),
                                   Image.NEAREST).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
