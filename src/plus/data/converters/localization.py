"""Subcellular localization: DeepLoc 1.0 (Almagro Armenteros et al. 2017) FASTA -> protein task."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from plus.data.converters.common import Converted, TaskData, require, seeded_split, write_split_task
from plus.data.tasks import LOCALIZATION_CLASSES
from plus.io import InputError, read_fasta

LOCALIZATION_TRUNCATE = 1000  # reference `truncate`: longer sequences keep the first 500 + last 500 residues
LOCALIZATION_DEV_FRACTION = 0.1


def _deeploc_location(token: str) -> str:
    """``Location-M|S|U`` -> Location (the membrane tag dropped; dual locations keep their '-')."""
    parts = token.split("-")
    if parts[-1] in ("M", "S", "U"):
        parts = parts[:-1]
    return "-".join(parts)


def _deeploc_label(path, record, ident, token: str, dual_as_first: bool) -> tuple[str | None, str]:
    """(class name or None = drop, what happened) for a DeepLoc location token. A dual location such as
    ``Cytoplasm-Nucleus`` becomes its first part with `dual_as_first` (the reference's
    ``split("-")[0]``), else it is dropped; a location outside the 10 classes raises."""
    location = _deeploc_location(token)
    parts = location.split("-")
    if location in LOCALIZATION_CLASSES:
        return location, ""
    if len(parts) > 1 and all(p in LOCALIZATION_CLASSES for p in parts):
        return (parts[0], f"{location} -> {parts[0]}") if dual_as_first else (None, location)
    raise InputError(
        f"{path}: record {record} ({ident}): location {token!r} is not one of the 10 DeepLoc classes"
    )


def _deeploc(path, dual_as_first: bool = True) -> tuple[list[tuple[str, str, int]], list[bool], Counter, Counter]:
    """DeepLoc FASTA ``>ACC Location-M|S|U [test]`` -> records (id, truncated seq, class id), test flags,
    and the counts of relabelled and dropped dual-location records (see `_deeploc_label`)."""
    out, is_test, relabelled, dropped, seen = [], [], Counter(), Counter(), set()
    for record, header, seq in read_fasta(path):
        fields = header.split()
        ident = fields[0]
        if len(fields) < 2:
            raise InputError(f"{path}: record {record} ({ident}): no location label in the header")
        if ident in seen:
            raise InputError(f"{path}: record {record} ({ident}): duplicate identifier")
        seen.add(ident)
        location, note = _deeploc_label(path, record, ident, fields[1], dual_as_first)
        if location is None:
            dropped[note] += 1
            continue
        if note:
            relabelled[note] += 1
        if not seq.isalpha():
            raise InputError(f"{path}: record {record} ({ident}): empty sequence or non-letter characters")
        seq = seq.upper()
        if len(seq) > LOCALIZATION_TRUNCATE:
            half = LOCALIZATION_TRUNCATE // 2
            seq = seq[:half] + seq[-half:]
        out.append((ident, seq, LOCALIZATION_CLASSES.index(location)))
        is_test.append("test" in fields[2:])
    if not out:
        raise InputError(f"{path}: empty file (no usable records)")
    return out, is_test, relabelled, dropped


def _dual_location_rule(dual_as_first: bool) -> str:
    if dual_as_first:
        return ("dual locations (Cytoplasm-Nucleus) take their first part (Cytoplasm), as the reference's "
                "split('-')[0] does (reference_fidelity.data_localization_dual_as_first)")
    return "dual locations (Cytoplasm-Nucleus) are outside the 10 classes: dropped (corrected)"


def _per_input(counts: dict[str, Counter]) -> dict[str, int]:
    """{'<raw key>: <what>': n} from per-input Counters."""
    return {f"{key}: {what}": n for key, c in counts.items() for what, n in sorted(c.items())}


def _write_localization(outdir, pooled: Converted, dev_fraction: float, dual_as_first: bool) -> dict:
    """Write `pooled` (its `train` = the whole training partition) split seeded into train/dev, with the rules,
    switch and truncation both sources share."""
    s = seeded_split(pooled.train, range(len(pooled.train)), (1 - dev_fraction, dev_fraction), pooled.seed,
                     pooled.max_train)
    return write_split_task(outdir, LOCALIZATION.kind, replace(
        pooled, train=s["train"], dev=s["dev"],
        rules={**pooled.rules, "dual locations": _dual_location_rule(dual_as_first),
               "truncate": "sequences longer than 1000 keep the first 500 + last 500 residues"},
        fidelity={"data_localization_dual_as_first": dual_as_first}, extra={"truncate": LOCALIZATION_TRUNCATE},
    ))


def convert_localization_embedded(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None,
                                  dev_fraction: float = LOCALIZATION_DEV_FRACTION, dual_as_first: bool = True) -> dict:
    """DeepLoc training-partition subset (1,678) -> seeded train/dev; DeepLoc test (2,768) -> test "deeploc".

    Labels: class id in the reference order (LOCALIZATION_CLASSES); sequences over 1,000 residues keep the
    first 500 + last 500 (the reference's `truncate`, applied here). Dual-location Cytoplasm-Nucleus
    records: labelled Cytoplasm (`dual_as_first`, the reference) or dropped; counted either way.
    raw keys: train_fasta, test_fasta.
    """
    require(raw, LOCALIZATION.embedded_files, "localization", "embedded")
    pool, _, relabel_pool, drop_pool = _deeploc(raw["train_fasta"], dual_as_first)
    test, _, relabel_test, drop_test = _deeploc(raw["test_fasta"], dual_as_first)
    rules = {
        "train/dev": f"DeepLoc training-partition proteins, seeded {1 - dev_fraction:g}/{dev_fraction:g} "
        "random split",
        "test": "DeepLoc test partition",
        "label": "header token 2 without its -M/-S/-U suffix, index in the reference class order",
    }
    return _write_localization(
        outdir, Converted(
            "localization", "embedded", raw, seed, max_train, list(LOCALIZATION_CLASSES), train=pool, dev=[],
            tests={"deeploc": test}, rules=rules,
            notes="Only 1,678 of DeepLoc's ~11k training-partition proteins are embedded.",
            dropped=_per_input({"train_fasta": drop_pool, "test_fasta": drop_test}),
            relabelled=_per_input({"train_fasta": relabel_pool, "test_fasta": relabel_test}),
        ), dev_fraction, dual_as_first)


def convert_localization_canonical(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None,
                                   dev_fraction: float = LOCALIZATION_DEV_FRACTION, dual_as_first: bool = True) -> dict:
    """DeepLoc 1.0 deeploc_data.fasta: `test`-tagged -> test "deeploc"; the rest -> seeded train/dev.

    Same labels, truncation and Cytoplasm-Nucleus rule (`dual_as_first`) as the embedded converter.
    raw key: fasta.
    """
    require(raw, LOCALIZATION.canonical_artefacts, "localization", "canonical")
    recs, is_test, relabelled, dropped = _deeploc(raw["fasta"], dual_as_first)
    pool = [r for r, t in zip(recs, is_test, strict=True) if not t]
    test = [r for r, t in zip(recs, is_test, strict=True) if t]
    if not pool or not test:
        raise InputError(f"{raw['fasta']}: needs both 'test'-tagged and untagged records")
    rules = {
        "train/dev": f"untagged (training-partition) records, seeded {1 - dev_fraction:g}/{dev_fraction:g} "
        "random split",
        "test": "records tagged 'test'",
    }
    return _write_localization(
        outdir, Converted(
            "localization", "canonical", raw, seed, max_train, list(LOCALIZATION_CLASSES), train=pool, dev=[],
            tests={"deeploc": test}, rules=rules,
            dropped=_per_input({"fasta": dropped}), relabelled=_per_input({"fasta": relabelled}),
        ), dev_fraction, dual_as_first)


# reference handling: 14,004 records, the 146 Cytoplasm-Nucleus ones (partitions not documented) kept as
# Cytoplasm; `corrected` (dropped): train+dev 11,085 -> 9,976 / 1,109, test 2,773 (third-party count)
LOCALIZATION = TaskData(
    "protein", convert_localization_embedded, convert_localization_canonical,
    {"train_fasta": "deeploc_our_val_set.fasta.gz", "test_fasta": "deeploc_test_set.fasta.gz"},
    {"fasta": "deeploc"},
    {"train": None, "dev": None, "test": {"deeploc": None}},
)
