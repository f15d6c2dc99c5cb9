"""Solubility: DeepSol (Khurana et al. 2018) sequences and 0/1 labels -> protein task."""

from __future__ import annotations

from pathlib import Path

from plus.data.converters.common import Converted, TaskData, require, seeded_split, subsample, write_split_task
from plus.data.tasks import SOLUBILITY_CLASSES
from plus.io import InputError, iter_lines


def _lines(path) -> list[str]:
    """The stripped lines of `path`, trailing blank lines dropped."""
    lines = [line.strip() for _, line in iter_lines(path)]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _deepsol(src, tgt, prefix: str) -> list[tuple[str, str, int]]:
    """DeepSol `*_src` (one sequence a line) + `*_tgt` (one 0/1 label a line) -> (id, seq, label)."""
    seqs, labels = _lines(src), _lines(tgt)
    if not seqs:
        raise InputError(f"{src}: empty file (no records)")
    if len(seqs) != len(labels):
        raise InputError(
            f"{src}: {len(seqs)} sequences but {tgt} has {len(labels)} labels (record "
            f"{min(len(seqs), len(labels)) + 1} has no partner)"
        )
    out = []
    for n, (seq, label) in enumerate(zip(seqs, labels, strict=True), 1):
        if not seq.isalpha():
            raise InputError(f"{src}: record {n} (line {n}): empty sequence or non-letter characters")
        if label not in ("0", "1"):
            raise InputError(f"{tgt}: record {n} (line {n}): label {label!r} is not 0 or 1")
        out.append((f"{prefix}_{n}", seq.upper(), int(label)))
    return out


def convert_solubility_embedded(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None,
                                dev_fraction: float = 0.1) -> dict:
    """DeepSol validation (6,942) -> seeded train/dev (`dev_fraction`); DeepSol test (2,001) -> test
    "deepsol".

    raw keys: val_src, val_tgt, test_src, test_tgt.
    """
    require(raw, SOLUBILITY.embedded_files, "solubility", "embedded")
    val = _deepsol(raw["val_src"], raw["val_tgt"], "deepsol_val")
    test = _deepsol(raw["test_src"], raw["test_tgt"], "deepsol_test")
    s = seeded_split(val, range(len(val)), (1 - dev_fraction, dev_fraction), seed, max_train)
    rules = {
        "train/dev": f"DeepSol validation split, seeded {1 - dev_fraction:g}/{dev_fraction:g} random split",
        "test": "DeepSol test set, complete",
    }
    notes = "DeepSol training sequences are not embedded; the validation split stands in for train+dev."
    return write_split_task(outdir, SOLUBILITY.kind, Converted(
        "solubility", "embedded", raw, seed, max_train, list(SOLUBILITY_CLASSES),
        train=s["train"], dev=s["dev"],
        tests={"deepsol": test}, rules=rules, notes=notes,
    ))


def convert_solubility_canonical(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None) -> dict:
    """DeepSol (DSOL_rv0.2 data/ or Zenodo 1162886): train/val/test -> train/dev/test "deepsol".

    raw keys: train_src, train_tgt, val_src, val_tgt, test_src, test_tgt.
    """
    require(raw, SOLUBILITY.canonical_artefacts, "solubility", "canonical")
    train = _deepsol(raw["train_src"], raw["train_tgt"], "deepsol_train")
    dev = _deepsol(raw["val_src"], raw["val_tgt"], "deepsol_val")
    test = _deepsol(raw["test_src"], raw["test_tgt"], "deepsol_test")
    return write_split_task(outdir, SOLUBILITY.kind, Converted(
        "solubility", "canonical", raw, seed, max_train, list(SOLUBILITY_CLASSES),
        train=subsample(train, max_train, seed), dev=dev, tests={"deepsol": test},
        rules={"splits": "DeepSol train/validation/test as released"},
    ))


SOLUBILITY = TaskData(
    "protein", convert_solubility_embedded, convert_solubility_canonical,
    {"val_src": "val_src.gz", "val_tgt": "val_tgt", "test_src": "test_src.gz", "test_tgt": "test_tgt"},
    {f"{split}_{part}": f"deepsol_{split}_{part}" for split in ("train", "val", "test") for part in ("src", "tgt")},
    {"train": 62478, "dev": 6942, "test": {"deepsol": 2001}},
)
