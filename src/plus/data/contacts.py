"""SCOPe contact maps (Bepler & Berger's PNGs) for P-ELMo's homology fine-tuning (spec §3.1).

A converted homology directory lists them in ``manifest.contact_maps`` ({version: {"dir": "cmap_2.06", ...}});
the PNGs lie at ``<dir>/<sub>/<domain>.png``. Pixel conventions (reference `plus/data/homology.py`): 255 =
contact, 1 = ignore, anything else = no contact; the lower triangle, the diagonal and the first
off-diagonal are ignored as well. Labels: 1 contact, 0 no contact, -1 ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from plus.io import InputError


def read_contact_map(path: str | os.PathLike, length: int | None = None) -> np.ndarray:
    """int8 (L, L) labels of one PNG; `length` given: the map must be length x length."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            pixels = np.asarray(im)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: contact map not found") from exc
    except OSError as exc:
        raise InputError(f"{path}: not a readable PNG ({exc})") from exc
    if pixels.ndim != 2 or pixels.shape[0] != pixels.shape[1]:
        raise InputError(f"{path}: a contact map must be a square one-channel image, got shape {pixels.shape}")
    if length is not None and pixels.shape[0] != length:
        raise InputError(f"{path}: contact map is {pixels.shape[0]} x {pixels.shape[0]} but the sequence has "
                         f"{length} residues")
    labels = (pixels == 255).astype(np.int8)
    labels[pixels == 1] = -1
    labels[np.tril_indices(len(labels), k=1)] = -1
    return labels


class ContactMaps:
    """Domain id -> PNG of a converted homology directory (the reference's lookup: the first 7 characters
    of the file name; an id not found is retried with its first letter replaced by 'd')."""

    def __init__(self, task_dir: str | os.PathLike, manifest: dict):
        self.paths: dict[str, Path] = {}
        for block in (manifest.get("contact_maps") or {}).values():
            for png in sorted((Path(task_dir) / block["dir"]).glob("*/*.png")):
                self.paths.setdefault(png.name[:7], png)

    def __bool__(self) -> bool:
        return bool(self.paths)

    def path(self, ident: str) -> Path:
        for key in (ident, "d" + ident[1:]):
            if key in self.paths:
                return self.paths[key]
        raise InputError(f"homology: no contact map for domain {ident!r} (nor {'d' + ident[1:]!r}) among "
                         f"{len(self.paths)} PNGs")

    def check(self, idents) -> None:
        """Fail before training when any domain lacks a map (naming the first few)."""
        missing = sorted({i for i in idents if i not in self.paths and "d" + i[1:] not in self.paths})
        if missing:
            raise InputError(f"homology: {len(missing)} domains have no contact map, e.g. {missing[:5]}")

    def labels(self, ident: str, length: int) -> np.ndarray:
        return read_contact_map(self.path(ident), length)
