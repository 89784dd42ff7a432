"""Benchmark cases read in place from the project's shared data folder (never copied into the repo).

Each :class:`Case` holds what napari-dip and the baselines see (``observed``), the ground truth in the
units the suite scores in (``truth``), and the paper's figures where one exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"

#: Per-image DIP PSNR from the paper / project page (reference/dip-method.md section 4), full images.
PAPER_DENOISE = {"F16": 33.69, "baboon": 24.51, "hill": 32.09, "kodim01": 28.44, "peppers": 31.15}
PAPER_SR4 = {"baby": 31.49, "bird": 31.80, "butterfly": 26.23, "head": 31.04, "woman": 28.93}
PAPER_INPAINT = {"barbara": 32.22, "boat": 33.06, "house": 39.16, "Lena512": 36.16,
                 "peppers256": 33.05, "Cameraman256": 29.8}
SR_NAMES = ["baby", "bird", "butterfly", "head", "woman"]

#: Real fluorescence pairs: (name, noisy file, clean file, how the clean image is brought to the noisy one's grid).
FLUO_PAIRS = [
    ("fmd_bpae_mito", "fmd_confocal_bpae/bpae_mito_raw.png", "fmd_confocal_bpae/bpae_mito_gt_avg50.png", "fmd"),
    ("fmd_bpae_actin", "fmd_confocal_bpae/bpae_3ch_raw.tif#1", "fmd_confocal_bpae/bpae_3ch_gt_avg50.tif#1", "fmd"),
    ("fmd_bpae_nucleus", "fmd_confocal_bpae/bpae_3ch_raw.tif#2", "fmd_confocal_bpae/bpae_3ch_gt_avg50.tif#2", "fmd"),
    *[(f"w2s_{k}", f"w2s_8bit/{k}_noisy_avg1.tif", f"w2s_8bit/{k}_clean_avg400.tif", "affine")
      for k in ("010_0", "020_1", "031_2", "035_1", "042_1", "044_0")],
    ("gigadb_membrane", "gigadb_8bit/membrane_lowsnr.png", "gigadb_8bit/membrane_highsnr.png", "affine"),
    ("gigadb_mito20x", "gigadb_8bit/mito_widefield20x_lowsnr.png",
     "gigadb_8bit/mito_widefield20x_highsnr.png", "affine"),
]


@dataclass
class Case:
    task: str  # 'denoise', 'sr', 'inpaint' or 'fluo' (real-noise denoising)
    name: str
    observed: np.ndarray  # what every method gets
    truth: np.ndarray  # ground truth in scoring units (same layout as the output)
    peak: float  # 1.0 for [0, 1] floats, 255 for 8-bit data
    mask: np.ndarray | None = None  # inpaint: non-zero = pixel to fill
    paper: float | None = None  # the paper's per-image DIP PSNR (full image)
    published: dict = field(default_factory=dict)  # method -> the authors' published output, same region
    eval_box: tuple[int, int, int, int] | None = None  # SR: (y0, y1, x0, x1) scored before the 4-px crop
    reference: np.ndarray | None = None  # napari-dip oracle reference in the observed image's units
    note: str = ""


def centre_box(shape: tuple[int, int], size: int | None, multiple: int = 1) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a centred ``size`` square (clipped to the image; full image if None)."""
    h, w = shape[:2]
    sh = h if size is None else min(size, h)
    sw = w if size is None else min(size, w)
    sh, sw = sh - sh % multiple, sw - sw % multiple
    y0, x0 = (h - sh) // 2, (w - sw) // 2
    return y0, y0 + sh, x0, x0 + sw


def content_box(image: np.ndarray, size: int | None, avoid=None) -> tuple[int, int, int, int]:
    """The ``size`` square (on a grid of stride size/2) where ``image`` varies most; full image if None.

    Microscopy frames are mostly background, so a centre crop can be empty (GigaDB's 2048² centre is).
    Chosen on the clean image only; every method is then scored on that same region. ``avoid``: a
    box (y0, y1, x0, x1) the square must not overlap.
    """
    h, w = image.shape[:2]
    if size is None or (size >= h and size >= w):
        return 0, h, 0, w
    step = max(size // 2, 1)
    best, best_std = None, -1.0
    for y0 in range(0, h - size + 1, step):
        for x0 in range(0, w - size + 1, step):
            if avoid is not None and (y0 < avoid[1] and avoid[0] < y0 + size
                                      and x0 < avoid[3] and avoid[2] < x0 + size):
                continue
            sd = float(np.std(image[y0:y0 + size, x0:x0 + size]))
            if sd > best_std:
                best, best_std = (y0, y0 + size, x0, x0 + size), sd
    return best


def _cut(a: np.ndarray | None, box) -> np.ndarray | None:
    if a is None:
        return None
    y0, y1, x0, x1 = box
    return np.ascontiguousarray(a[y0:y1, x0:x1])


def read_image(path: Path) -> np.ndarray:
    """PNG/TIFF as stored. Palette PNGs give the palette index (= intensity for GigaDB's one-colour LUTs);
    ``file.tif#k`` selects plane k of a stack."""
    path = Path(path)
    plane = None
    if "#" in path.name:
        stem, k = path.name.split("#")
        path, plane = path.with_name(stem), int(k)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        a = tifffile.imread(path)
    else:
        from PIL import Image

        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB") if im.mode == "RGBA" else im)
    return a[plane] if plane is not None else a


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def denoise_cases(data: Path, crop: int | None, names=None, sigma: float = 25.0, seed: int = 0) -> list[Case]:
    folder = Path(data) / "dip" / "paper_results" / "denoising_color_sigma25"
    cases = []
    for gt_path in sorted(folder.glob("*_GT.png")):
        name = gt_path.name[: -len("_GT.png")]
        if names and name not in names:
            continue
        gt = read_image(gt_path).astype(np.float32) / 255
        # Fixed-seed noise on the full image, then the crop: a crop sees the same noise in every suite.
        rng = np.random.default_rng(seed)
        noisy = np.clip(gt + rng.normal(0, sigma / 255, gt.shape), 0, 1).astype(np.float32)
        box = centre_box(gt.shape, crop)
        pub = folder / f"{name}_deep_prior.png"
        published = {"DIP (paper)": _cut(read_image(pub).astype(np.float32) / 255, box)} if pub.exists() else {}
        cases.append(Case("denoise", name, _cut(noisy, box), _cut(gt, box), 1.0,
                          paper=PAPER_DENOISE.get(name), published=published))
    return cases


def sr_cases(data: Path, lr_crop: int | None, names=None, factor: int = 4) -> list[Case]:
    lr_folder = Path(data) / "selfexsr" / "Set5_x4"
    pub_folder = Path(data) / "dip" / "paper_results" / "sr_x4" / "Set5"
    cases = []
    for lr_path in sorted(lr_folder.glob("*_LR.png")):
        name = lr_path.name.split("_")[2]
        if names and name not in names:
            continue
        lr = read_image(lr_path)
        hr = read_image(lr_path.with_name(lr_path.name.replace("_LR", "_HR")))
        ly0, ly1, lx0, lx1 = centre_box(lr.shape, lr_crop)
        hbox = (ly0 * factor, ly1 * factor, lx0 * factor, lx1 * factor)
        published, eval_box = {}, None
        dip_pub = pub_folder / f"{name}_deep_prior.png"
        if dip_pub.exists():
            pub = read_image(dip_pub)
            nz = np.argwhere(pub.sum(-1) > 0)
            (py0, px0), (py1, px1) = nz.min(0), nz.max(0) + 1
            if lr_crop is None:  # the paper's protocol: score inside the published image's non-zero box
                eval_box = (py0 - hbox[0], py1 - hbox[0], px0 - hbox[2], px1 - hbox[2])
                published["DIP (paper)"] = _cut(pub, hbox)
            elif py0 <= hbox[0] and px0 <= hbox[2] and hbox[1] <= py1 and hbox[3] <= px1:
                published["DIP (paper)"] = _cut(pub, hbox)
        bic = pub_folder / f"{name}_bicubic.png"
        if bic.exists():
            published["bicubic (paper)"] = _cut(read_image(bic), hbox)
        cases.append(Case("sr", name, _cut(lr, (ly0, ly1, lx0, lx1)), _cut(hr, hbox), 255.0,
                          paper=PAPER_SR4.get(name), published=published, eval_box=eval_box))
    return cases


def inpaint_cases(data: Path, crop: int | None, names=None) -> list[Case]:
    folder = Path(data) / "dip" / "paper_results" / "inpainting_50pct_gray"
    cases = []
    for masked_path in sorted(folder.glob("*_masked.png")):
        name = masked_path.name[: -len("_masked.png")]
        if names and name not in names:
            continue
        masked = read_image(masked_path)
        gt = read_image(folder / f"{name}_GT.png")
        # The masked inputs store missing pixels as 0 (checked: ~50 % zeros, every non-zero pixel equals the
        # ground truth). A pixel whose ground truth is 0 counts as known: peppers256's black first row and
        # column (511 pixels; 7 isolated pixels of boat). The paper's published result is exactly 0 on every
        # one of them, so they were given; counted missing, they cost every method ~8 dB on peppers256.
        mask = (masked == 0) & (gt != 0)
        box = centre_box(gt.shape, crop)
        pub = folder / f"{name}_deep_prior.png"
        published = {"DIP (paper)": _cut(read_image(pub), box)} if pub.exists() else {}
        cases.append(Case("inpaint", name, _cut(masked, box), _cut(gt, box), 255.0, mask=_cut(mask, box),
                          paper=PAPER_INPAINT.get(name), published=published))
    return cases


def fluo_cases(data: Path, crop: int | None, names=None, window: int = 1) -> list[Case]:
    """Real noisy/clean pairs; the clean image is brought onto the noisy one's grid and intensity scale.

    * The crop is the most structured window of the clean image (:func:`content_box`), not the centre;
      ``window=2``: the most structured one that does not overlap it (a second, unseen region of
      the same acquisition; its case is named ``<pair>_w2``).
    * FMD: one intensity scale; the raw frame is one row off the average, so the clean crop is taken one
      row lower (raw row r <-> gt row r + 1). Scored directly, peak 255.
    * W2S, GigaDB: noisy and clean were contrast-stretched separately; every method's output is mapped to
      the clean image by a least-squares affine fit before PSNR/SSIM (peak 255).
    """
    folder = Path(data) / "nd-instant-image-denoising"
    cases = []
    for name, noisy_rel, clean_rel, mode in FLUO_PAIRS:
        if names and name not in names:
            continue
        noisy = _to_uint8(read_image(folder / noisy_rel))
        clean = read_image(folder / clean_rel).astype(np.float64)
        grid = clean[:-1] if mode == "fmd" else clean
        box = content_box(grid, crop)
        if window == 2:
            box = content_box(grid, crop, avoid=box)
        if mode == "fmd":
            y0, y1, x0, x1 = box
            if y1 == noisy.shape[0]:
                y0, y1 = y0 - 1, y1 - 1
                box = (y0, y1, x0, x1)
            truth = clean[y0 + 1:y1 + 1, x0:x1]
            reference = truth
        else:
            truth = _cut(clean, box)
            from .metrics import affine_fit

            reference = np.clip(affine_fit(truth, _cut(noisy, box)), 0, 255)
        cases.append(Case("fluo", name if window == 1 else f"{name}_w2", _cut(noisy, box), truth,
                          255.0, reference=reference,
                          note="affine" if mode == "affine" else "direct"))
    return cases
