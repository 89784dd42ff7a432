"""The record of a run kept beside its output, so that an interrupted run can resume.

A folder (inside an OME-Zarr output as its subgroup ``napari_dip``; beside a TIFF/PNG output as
``<output>.napari-dip``) holds:

- ``settings.json``: everything that decides the results (task, preset, seed, iteration cap,
  tiles, the intensity map, the input's shape, ...). A rerun with other settings is refused,
  naming them: the finished units would not match the new ones.
- ``units/<key>.json``: one file per finished unit (``s000012`` or ``s000012-t0003``): its
  status (done, skipped, error, partial), its fit's record and the settings' fingerprint.
- ``tiles/<key>.npy``: tiles restored but not yet blended into their slice.
- ``warm_states.pt``: for a warm-started stack, the network the last restored slice ended with
  (the next slice starts from it, after a resumption too).

Every file is written to a temporary name and renamed, so a run killed mid-write leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np

#: Settings that may change between a run and its resumption without changing results; the
#: intensity map and the shared choices are derived from the input, kept for a resumption.
NOT_COMPARED = ("normalisation", "shared_choices", "napari_dip_started")


def fingerprint(settings: dict) -> str:
    text = json.dumps({k: v for k, v in settings.items() if k not in NOT_COMPARED},
                      sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Ledger:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @property
    def exists(self) -> bool:
        return (self.folder / "settings.json").is_file()

    def settings(self) -> dict | None:
        if not self.exists:
            return None
        return json.loads((self.folder / "settings.json").read_text())

    def start(self, settings: dict) -> None:
        (self.folder / "units").mkdir(parents=True, exist_ok=True)
        (self.folder / "tiles").mkdir(exist_ok=True)
        text = json.dumps(settings, indent=1, sort_keys=True, default=str)
        _write_atomic(self.folder / "settings.json", text.encode())

    @staticmethod
    def changes(old: dict, new: dict) -> list[str]:
        """The settings that differ, as 'name: old -> new'."""
        keys = sorted((set(old) | set(new)) - set(NOT_COMPARED))
        norm = json.loads(json.dumps(new, default=str))
        return [f"{k}: {old.get(k)!r} -> {norm.get(k)!r}" for k in keys
                if old.get(k) != norm.get(k)]

    def entries(self) -> dict[str, dict]:
        units = self.folder / "units"
        if not units.is_dir():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in sorted(units.glob("*.json"))}

    def record(self, key: str, entry: dict) -> None:
        text = json.dumps(entry, default=str)
        _write_atomic(self.folder / "units" / f"{key}.json", text.encode())

    def save_tile(self, key: str, image: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(image, np.float32))
        _write_atomic(self.folder / "tiles" / f"{key}.npy", buffer.getvalue())

    def load_tile(self, key: str) -> np.ndarray | None:
        path = self.folder / "tiles" / f"{key}.npy"
        return np.load(path) if path.is_file() else None

    def drop_tiles(self, keys) -> None:
        for key in keys:
            (self.folder / "tiles" / f"{key}.npy").unlink(missing_ok=True)

    def save_states(self, states: dict) -> None:
        """The networks a warm-started stack's next slice starts from ({group: weights})."""
        import torch

        buffer = io.BytesIO()
        torch.save({int(k): v for k, v in states.items()}, buffer)
        _write_atomic(self.folder / "warm_states.pt", buffer.getvalue())

    def load_states(self) -> dict | None:
        path = self.folder / "warm_states.pt"
        if not path.is_file():
            return None
        import torch

        return torch.load(path, weights_only=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
