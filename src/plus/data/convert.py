"""Converters from the raw task releases to the task-directory format of :mod:`plus.data.tasks`.

Two sources per task: ``embedded`` (the real subsets in ``data/embedded``, used by the demo) and
``canonical`` (the full public releases listed in the data-sources spec). Every split rule is seeded and
documented in DATA.md and in the manifest (``rules``, ``notes``). Records whose labels fall outside the
reference's label set are dropped and counted (``dropped``), relabelled the way the reference does and
counted (``relabelled``), or raise InputError. Where the reference's handling is a quirk, a
``data_<task>_<option>`` reference-fidelity switch (manifest ``fidelity``) selects it or the corrected one.

CLI: ``plus data convert --task T --source embedded|canonical --raw KEY=PATH ... --outdir DIR --seed N
[--fidelity JSON]``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import shutil
import tarfile
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plus.data.tasks import (
    LOCALIZATION_CLASSES,
    SOLUBILITY_CLASSES,
    SS8,
    TM_LABELS,
    domain_lines,
    pair_lines,
    protein_lines,
    read_domains,
    read_pairs,
    residue_lines,
    write_task,
)
from plus.io import InputError, iter_lines, read_3line, read_fasta

LOCALIZATION_TRUNCATE = 1000  # reference `truncate`: longer sequences keep the first 500 + last 500 residues
LEVEL_NAMES = ["different class", "same class", "same fold", "same superfamily", "same family"]

LOCALIZATION_DEV_FRACTION = 0.1


def embedded_raw(task: str, root: str | os.PathLike = "data/embedded") -> dict[str, Path]:
    """The --raw KEY -> path mapping of a task's embedded files under `root`."""
    return {key: Path(root) / task / name for key, name in DATA[task].embedded_files.items()}


# -- seeded split helpers ----------------------------------------------------------------------------------


def split_groups(keys: list, fractions: dict[str, float], seed: int) -> dict[str, list[int]]:
    """Seeded split of record indices; records with equal keys stay in one split.

    Non-train splits get round(n * fraction) records (groups are taken in a seeded random order until each
    target is reached); train gets the rest. Indices are returned in input order.
    """
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    order = np.random.default_rng(seed).permutation(len(groups))
    members = list(groups.values())
    n = len(keys)
    out = {name: [] for name in fractions}
    names = [name for name in fractions if name != "train"]
    targets = {name: math.floor(n * fractions[name] + 0.5) for name in names}
    for g in order:
        dest = next((name for name in names if len(out[name]) < targets[name]), "train")
        out[dest].extend(members[g])
    return {name: sorted(idx) for name, idx in out.items()}


def subsample(records: list, max_train: int | None, seed: int) -> list:
    """At most `max_train` records, a seeded sample kept in input order (all when max_train is None)."""
    if max_train is None or len(records) <= max_train:
        return records
    keep = np.random.default_rng([seed, 1]).choice(len(records), max_train, replace=False)
    return [records[i] for i in sorted(keep)]


def _take(records: list, idx: list[int]) -> list:
    return [records[i] for i in idx]


def _protein_task(
    task,
    outdir,
    labels,
    train,
    dev,
    tests: dict,
    source,
    inputs,
    rules,
    notes,
    seed,
    max_train,
    dropped=None,
    relabelled=None,
    switches=None,
    **extra,
) -> dict:
    files = {"train.fa": protein_lines(train), "dev.fa": protein_lines(dev)}
    files.update({f"test_{name}.fa": protein_lines(recs) for name, recs in tests.items()})
    splits = {"train": "train.fa", "dev": "dev.fa", "test": {name: f"test_{name}.fa" for name in tests}}
    counts = {"train": len(train), "dev": len(dev), "test": {name: len(r) for name, r in tests.items()}}
    manifest = _manifest(
        task, labels, splits, counts, source, inputs, rules, notes, seed, max_train, dropped,
        relabelled=relabelled, switches=switches, **extra,
    )
    return write_task(outdir, manifest, files)


def _residue_task(
    task,
    outdir,
    labels,
    label_chars,
    train,
    dev,
    tests: dict,
    source,
    inputs,
    rules,
    notes,
    seed,
    max_train,
    dropped=None,
    relabelled=None,
    switches=None,
) -> dict:
    files = {"train.3line": residue_lines(train), "dev.3line": residue_lines(dev)}
    files.update({f"test_{name}.3line": residue_lines(recs) for name, recs in tests.items()})
    splits = {
        "train": "train.3line",
        "dev": "dev.3line",
        "test": {name: f"test_{name}.3line" for name in tests},
    }
    counts = {"train": len(train), "dev": len(dev), "test": {name: len(r) for name, r in tests.items()}}
    manifest = _manifest(
        task,
        labels,
        splits,
        counts,
        source,
        inputs,
        rules,
        notes,
        seed,
        max_train,
        dropped,
        relabelled=relabelled,
        switches=switches,
        label_chars=label_chars,
    )
    return write_task(outdir, manifest, files)


def _check_nonempty(task, counts: dict) -> None:
    sizes = {
        "train": counts["train"],
        "dev": counts["dev"],
        **{f"test {k}": v for k, v in counts["test"].items()},
    }
    empty = [name for name, n in sizes.items() if n == 0]
    if empty:
        raise InputError(
            f"{task}: split(s) {', '.join(empty)} came out empty; the input has too few usable records"
        )


def _manifest(task, labels, splits, counts, source, inputs, rules, notes, seed, max_train, dropped,
              relabelled=None, switches=None, **extra):
    _check_nonempty(task, counts)
    return {
        "task": task,
        "kind": DATA[task].kind,
        "labels": labels,
        **extra,
        "splits": splits,
        "counts": counts,
        "dropped": dropped or {},
        "relabelled": relabelled or {},
        "fidelity": switches or {},
        "source": source,
        "inputs": {k: Path(v).name for k, v in inputs.items()},
        "seed": seed,
        "max_train": max_train,
        "rules": rules,
        "notes": notes,
    }


def _require(raw: dict, keys, task: str, source: str) -> None:
    missing = [k for k in keys if k not in raw]
    if missing:
        raise InputError(
            f"{task} ({source}): missing --raw key(s) {', '.join(missing)}; expected {', '.join(keys)}"
        )


# -- record parsers ----------------------------------------------------------------------------------------


def _deepsol(src, tgt, prefix: str) -> list[tuple[str, str, int]]:
    """DeepSol `*_src` (one sequence a line) + `*_tgt` (one 0/1 label a line) -> (id, seq, label)."""
    seqs = [s.strip() for _, s in iter_lines(src)]
    labels = [s.strip() for _, s in iter_lines(tgt)]
    while seqs and not seqs[-1]:
        seqs.pop()
    while labels and not labels[-1]:
        labels.pop()
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


def _check_float(where, record, text) -> str:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"{where}: record {record}: label {text!r} is not a finite number")
    return text


def _seq_label_csv(path, prefix: str) -> list[tuple[str, str, str]]:
    """ProteinBERT's TAPE CSV ``seq,label`` -> (id, seq, label text)."""
    out = []
    for line_no, line in iter_lines(path):
        if line_no == 1:
            if line.strip() != "seq,label":
                raise InputError(f"{path}: line 1: expected the header 'seq,label', got {line[:40]!r}")
            continue
        if not line.strip():
            continue
        record = len(out) + 1
        fields = line.split(",")
        if len(fields) != 2 or not fields[1].strip():
            raise InputError(f"{path}: record {record} (line {line_no}): expected 'seq,label'")
        seq, label = fields[0].strip(), fields[1].strip()
        if not seq.isalpha():
            raise InputError(
                f"{path}: record {record} (line {line_no}): empty sequence or non-letter characters"
            )
        out.append(
            (f"{prefix}_{record}", seq.upper(), _check_float(f"{path} (line {line_no})", record, label))
        )
    if not out:
        raise InputError(f"{path}: empty file (no records)")
    return out


def _ss8_digits(where, record, ident, states) -> str:
    bad = sorted(set(states) - set(SS8))
    if bad:
        raise InputError(
            f"{where}: record {record} ({ident}): DSSP state(s) {''.join(bad)!r} outside {SS8!r}"
        )
    return "".join(str(SS8.index(s)) for s in states)


def _netsurfp_csv(path, prefix: str) -> list[tuple[str, str, str]]:
    """NetSurfP-2.0 CSV (columns input, dssp3, dssp8, disorder, cb513_mask; space-separated per-residue
    values) -> (id, seq, 8-state digits). Every residue is kept (the reference applies no mask)."""
    out, cols = [], None
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if cols is None:
            if "input" not in fields or "dssp8" not in fields:
                raise InputError(f"{path}: line {line_no}: header lacks the 'input' and 'dssp8' columns")
            cols = (fields.index("input"), fields.index("dssp8"), len(fields))
            continue
        record = len(out) + 1
        ident = f"{prefix}_{record}"
        if len(fields) != cols[2]:
            raise InputError(
                f"{path}: record {record} (line {line_no}): {len(fields)} columns, expected {cols[2]}"
            )
        residues, states = fields[cols[0]].split(), fields[cols[1]].split()
        if not residues:
            raise InputError(f"{path}: record {record} (line {line_no}): empty sequence")
        if len(residues) != len(states):
            raise InputError(
                f"{path}: record {record} ({ident}): sequence length {len(residues)} != "
                f"label length {len(states)}"
            )
        seq = "".join(residues).upper()
        if not seq.isalpha():
            raise InputError(f"{path}: record {record} ({ident}): non-letter characters in the sequence")
        out.append((ident, seq, _ss8_digits(path, record, ident, states)))
    if not out:
        raise InputError(f"{path}: empty file (no records)")
    return out


SIGNAL_PEPTIDE = "S"  # TOPCONS2 label of signal-peptide residues (Bepler's encoder: class 3)


def _threeline(
    path, drop: str, prefix: str = "", drop_signal_peptides: bool = True
) -> tuple[list[tuple[str, str, str]], Counter, Counter]:
    """3line topology records -> (records, dropped, relabelled counts).

    A record with a label letter in `drop` is dropped (counted by letters). A record with S
    (signal peptide) is dropped with `drop_signal_peptides`, else its S residues become O (counted); any
    other letter outside I/O/M raises InputError naming the record.
    """
    out, dropped, relabelled, seen = [], Counter(), Counter(), set()
    allowed = TM_LABELS + drop + SIGNAL_PEPTIDE
    for record, header, seq, labels in read_3line(path):
        ident = prefix + (header.split()[0] if header.split() else "")
        if ident in seen or not header.split():
            raise InputError(f"{path}: record {record} ({ident or '?'}): duplicate or empty identifier")
        seen.add(ident)
        if not seq.isalpha():
            raise InputError(f"{path}: record {record} ({ident}): empty sequence or non-letter characters")
        bad = sorted(set(labels) - set(allowed))
        if bad:
            raise InputError(
                f"{path}: record {record} ({ident}): label(s) {''.join(bad)!r} outside {allowed!r}"
            )
        if SIGNAL_PEPTIDE in labels and not drop_signal_peptides:
            relabelled["records with S: signal peptide labelled O"] += 1
            relabelled["residues S -> O"] += labels.count(SIGNAL_PEPTIDE)
            labels = labels.replace(SIGNAL_PEPTIDE, "O")
        other = sorted(set(labels) - set(TM_LABELS))
        if other:
            dropped["records with " + "/".join(other)] += 1
            continue
        out.append((ident, seq.upper(), labels))
    return out, dropped, relabelled


def _signal_peptide_rule(drop_signal_peptides: bool) -> str:
    if drop_signal_peptides:
        return ("records with S (signal peptide) labels are dropped: the reference reads I/O/M only "
                "(reference_fidelity.data_transmembrane_drop_signal_peptides; inferred, see DATA.md)")
    return ("records with S (signal peptide) labels are kept, full length, their S residues labelled O "
            "(corrected: all four TOPCONS2 sets, as Bepler & Berger evaluate them)")


# -- embedded converters -----------------------------------------------------------------------------------


def convert_solubility_embedded(
    raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None, dev_fraction: float = 0.1
) -> dict:
    """DeepSol validation (6,942) -> seeded train/dev (`dev_fraction`); DeepSol test (2,001) -> test
    "deepsol".

    raw keys: val_src, val_tgt, test_src, test_tgt.
    """
    _require(raw, DATA["solubility"].embedded_files, "solubility", "embedded")
    val = _deepsol(raw["val_src"], raw["val_tgt"], "deepsol_val")
    test = _deepsol(raw["test_src"], raw["test_tgt"], "deepsol_test")
    parts = split_groups(range(len(val)), {"train": 1 - dev_fraction, "dev": dev_fraction}, seed)
    rules = {
        "train/dev": f"DeepSol validation split, seeded {1 - dev_fraction:g}/{dev_fraction:g} random split",
        "test": "DeepSol test set, complete",
    }
    notes = "DeepSol training sequences are not embedded; the validation split stands in for train+dev."
    return _protein_task(
        "solubility",
        outdir,
        list(SOLUBILITY_CLASSES),
        subsample(_take(val, parts["train"]), max_train, seed),
        _take(val, parts["dev"]),
        {"deepsol": test},
        "embedded",
        raw,
        rules,
        notes,
        seed,
        max_train,
    )


def _dual_location_rule(dual_as_first: bool) -> str:
    if dual_as_first:
        return ("dual locations (Cytoplasm-Nucleus) take their first part (Cytoplasm), as the reference's "
                "split('-')[0] does (reference_fidelity.data_localization_dual_as_first)")
    return "dual locations (Cytoplasm-Nucleus) are outside the 10 classes: dropped (corrected)"


def _per_input(counts: dict[str, Counter]) -> dict[str, int]:
    """{'<raw key>: <what>': n} from per-input Counters."""
    return {f"{key}: {what}": n for key, c in counts.items() for what, n in sorted(c.items())}


def convert_localization_embedded(
    raw: dict[str, Path],
    outdir: Path,
    seed: int,
    max_train: int | None = None,
    dev_fraction: float = LOCALIZATION_DEV_FRACTION,
    dual_as_first: bool = True,
) -> dict:
    """DeepLoc training-partition subset (1,678) -> seeded train/dev; DeepLoc test (2,768) -> test "deeploc".

    Labels: class id in the reference order (LOCALIZATION_CLASSES); sequences over 1,000 residues keep the
    first 500 + last 500 (the reference's `truncate`, applied here). Dual-location Cytoplasm-Nucleus
    records: labelled Cytoplasm (`dual_as_first`, the reference) or dropped; counted either way.
    raw keys: train_fasta, test_fasta.
    """
    _require(raw, DATA["localization"].embedded_files, "localization", "embedded")
    pool, _, relabel_pool, drop_pool = _deeploc(raw["train_fasta"], dual_as_first)
    test, _, relabel_test, drop_test = _deeploc(raw["test_fasta"], dual_as_first)
    parts = split_groups(range(len(pool)), {"train": 1 - dev_fraction, "dev": dev_fraction}, seed)
    rules = {
        "train/dev": f"DeepLoc training-partition proteins, seeded {1 - dev_fraction:g}/{dev_fraction:g} "
        "random split",
        "test": "DeepLoc test partition",
        "label": "header token 2 without its -M/-S/-U suffix, index in the reference class order",
        "dual locations": _dual_location_rule(dual_as_first),
        "truncate": "sequences longer than 1000 keep the first 500 + last 500 residues",
    }
    notes = "Only 1,678 of DeepLoc's ~11k training-partition proteins are embedded."
    return _protein_task(
        "localization",
        outdir,
        list(LOCALIZATION_CLASSES),
        subsample(_take(pool, parts["train"]), max_train, seed),
        _take(pool, parts["dev"]),
        {"deeploc": test},
        "embedded",
        raw,
        rules,
        notes,
        seed,
        max_train,
        _per_input({"train_fasta": drop_pool, "test_fasta": drop_test}),
        relabelled=_per_input({"train_fasta": relabel_pool, "test_fasta": relabel_test}),
        switches={"data_localization_dual_as_first": dual_as_first},
        truncate=LOCALIZATION_TRUNCATE,
    )


def convert_stability_embedded(
    raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None
) -> dict:
    """TAPE stability train/valid/test (complete) -> train/dev/test "tape".

    raw keys: train_csv, valid_csv, test_csv.
    """
    _require(raw, DATA["stability"].embedded_files, "stability", "embedded")
    train = _seq_label_csv(raw["train_csv"], "tape_train")
    dev = _seq_label_csv(raw["valid_csv"], "tape_valid")
    test = _seq_label_csv(raw["test_csv"], "tape_test")
    rules = {
        "splits": "TAPE train/valid/test as released",
        "max_train": "seeded sample of the training split",
    }
    return _protein_task(
        "stability",
        outdir,
        None,
        subsample(train, max_train, seed),
        dev,
        {"tape": test},
        "embedded",
        raw,
        rules,
        "TAPE stability splits are complete here.",
        seed,
        max_train,
    )


def convert_fluorescence_embedded(
    raw: dict[str, Path],
    outdir: Path,
    seed: int,
    max_train: int | None = None,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> dict:
    """TAPE fluorescence *validation* split (5,362) -> seeded train/dev/test "tape_valid_resplit".

    This is not TAPE's test set (27,217 genotypes with >= 4 mutations, not embedded). raw key: valid_csv.
    """
    _require(raw, DATA["fluorescence"].embedded_files, "fluorescence", "embedded")
    recs = _seq_label_csv(raw["valid_csv"], "tape_valid")
    parts = split_groups(range(len(recs)), dict(zip(("train", "dev", "test"), fractions, strict=True)), seed)
    rules = {
        "splits": "TAPE validation split re-split at random (seeded) into train/dev/test "
        + "/".join(f"{f:g}" for f in fractions)
    }
    notes = (
        "Only TAPE's validation split is embedded; test 'tape_valid_resplit' is NOT TAPE's test set "
        "(which holds genotypes with >= 4 mutations)."
    )
    return _protein_task(
        "fluorescence",
        outdir,
        None,
        subsample(_take(recs, parts["train"]), max_train, seed),
        _take(recs, parts["dev"]),
        {"tape_valid_resplit": _take(recs, parts["test"])},
        "embedded",
        raw,
        rules,
        notes,
        seed,
        max_train,
    )


def convert_secstr_embedded(
    raw: dict[str, Path],
    outdir: Path,
    seed: int,
    max_train: int | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> dict:
    """NetSurfP-2.0 8-state CSVs: CB513 (511) -> seeded train/dev/test "cb513" (identical sequences kept in
    one split); TS115 (115) and CASP12 (20) -> tests "ts115", "casp12". Labels: digit = index in GHIBESTC.

    raw keys: cb513_csv, ts115_csv, casp12_csv.
    """
    _require(raw, DATA["secstr"].embedded_files, "secstr", "embedded")
    cb513 = _netsurfp_csv(raw["cb513_csv"], "cb513")
    tests = {
        "ts115": _netsurfp_csv(raw["ts115_csv"], "ts115"),
        "casp12": _netsurfp_csv(raw["casp12_csv"], "casp12"),
    }
    parts = split_groups(
        [seq for _, seq, _ in cb513], dict(zip(("train", "dev", "test"), fractions, strict=True)), seed
    )
    tests = {"cb513": _take(cb513, parts["test"]), **tests}
    rules = {
        "train/dev/test cb513": "CB513 split at random (seeded) by unique sequence, "
        + "/".join(f"{f:g}" for f in fractions),
        "tests": "TS115 and CASP12 complete",
        "labels": "DSSP 8-state -> index in GHIBESTC; no residue mask",
    }
    notes = (
        "No 8-state training set is embedded (NetSurfP-2.0 Train not included): the demo trains on 70% of "
        "CB513 and tests on the rest of CB513 (test 'cb513' is a CB513 part, not all of CB513), TS115 and "
        "CASP12."
    )
    return _residue_task(
        "secstr",
        outdir,
        list(SS8),
        "01234567",
        subsample(_take(cb513, parts["train"]), max_train, seed),
        _take(cb513, parts["dev"]),
        tests,
        "embedded",
        raw,
        rules,
        notes,
        seed,
        max_train,
    )


def convert_transmembrane_embedded(
    raw: dict[str, Path],
    outdir: Path,
    seed: int,
    max_train: int | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    drop_signal_peptides: bool = True,
) -> dict:
    """TOPCONS2 3D structure DB (680 records) -> records with X or L labels dropped (counted) -> seeded
    train/dev/test "topcons2_3d" split by unique sequence. S labels (none in this file) are handled as in the
    canonical converter. raw key: threeline.
    """
    _require(raw, DATA["transmembrane"].embedded_files, "transmembrane", "embedded")
    recs, dropped, relabelled = _threeline(raw["threeline"], drop="XL", drop_signal_peptides=drop_signal_peptides)
    parts = split_groups(
        [seq for _, seq, _ in recs], dict(zip(("train", "dev", "test"), fractions, strict=True)), seed
    )
    rules = {
        "labels": "records whose label line has X (unknown) or L (re-entrant loop) are dropped, never "
        "relabelled",
        "signal peptides": _signal_peptide_rule(drop_signal_peptides),
        "splits": "seeded random split by unique sequence, " + "/".join(f"{f:g}" for f in fractions),
    }
    notes = (
        "The TOPCONS2 benchmark sets are not embedded; TOPCONS2's PDB-derived structure database stands "
        "in for them."
    )
    return _residue_task(
        "transmembrane",
        outdir,
        list(TM_LABELS),
        TM_LABELS,
        subsample(_take(recs, parts["train"]), max_train, seed),
        _take(recs, parts["dev"]),
        {"topcons2_3d": _take(recs, parts["test"])},
        "embedded",
        raw,
        rules,
        notes,
        seed,
        max_train,
        dict(dropped),
        relabelled=dict(relabelled),
        switches={"data_transmembrane_drop_signal_peptides": drop_signal_peptides},
    )


def level_matrix(sccs: list[str]) -> np.ndarray:
    """(n, n) matrix of leading SCOP levels shared (0-4) between the sccs codes."""
    parts = [s.split(".") for s in sccs]
    levels = np.zeros((len(sccs), len(sccs)), dtype=np.int64)
    for depth in range(1, 5):
        keys = [".".join(p[:depth]) for p in parts]
        ids = {k: i for i, k in enumerate(sorted(set(keys)))}
        codes = np.array([ids[k] for k in keys])
        levels += codes[:, None] == codes[None, :]
    return levels


def stratified(levels: np.ndarray, n_pairs: int, rng: np.random.Generator) -> list[int]:
    """Indices of up to n_pairs // 5 items per similarity level 0-4 (all of a level when it has fewer),
    drawn without replacement, in ascending order."""
    quota, chosen = n_pairs // 5, []
    for level in range(5):
        idx = np.flatnonzero(levels == level)
        chosen.extend(idx if len(idx) <= quota else rng.choice(idx, quota, replace=False))
    return sorted(int(k) for k in chosen)


def sample_pairs(domains: list[tuple[str, str, str]], n_pairs: int, seed: int) -> list[tuple]:
    """Seeded, level-stratified pairs of distinct domains: up to n_pairs // 5 pairs per similarity level
    (all pairs of a level when it has fewer), sampled without replacement, in domain-file order."""
    levels = level_matrix([d[1] for d in domains])
    rows, cols = np.triu_indices(len(domains), 1)
    flat = levels[rows, cols]
    out = []
    for k in stratified(flat, n_pairs, np.random.default_rng([seed, 2])):
        a, b = domains[rows[k]], domains[cols[k]]
        out.append((a[0], b[0], a[2], b[2], int(flat[k])))
    return out


def convert_homology_embedded(
    raw: dict[str, Path],
    outdir: Path,
    seed: int,
    max_train: int | None = None,
    dev_fraction: float = 0.2,
    n_pairs_dev: int = 500,
    n_pairs_test: int = 1000,
) -> dict:
    """SCOP 1.75 DeepSF domain sets -> train domains, dev pairs and two test pair sets.

    test "id25" = all id25 domains (711); test "id40" = id40 domains not in id25 (265); train/dev = the id70
    domains in neither (471), split at random (seeded, `dev_fraction` to dev). Pairs: level-stratified
    samples (`sample_pairs`) within dev and within each test set. raw keys: id70, id40, id25.
    """
    _require(raw, DATA["homology"].embedded_files, "homology", "embedded")
    id70, id40, id25 = (read_domains(raw[k]) for k in ("id70", "id40", "id25"))
    in25 = {d[0] for d in id25}
    test40 = [d for d in id40 if d[0] not in in25]
    held = in25 | {d[0] for d in id40}
    pool = [d for d in id70 if d[0] not in held]
    parts = split_groups(range(len(pool)), {"train": 1 - dev_fraction, "dev": dev_fraction}, seed)
    train, dev = subsample(_take(pool, parts["train"]), max_train, seed), _take(pool, parts["dev"])
    tests = {"id40": test40, "id25": id25}
    pairs = {"dev": sample_pairs(dev, n_pairs_dev, seed)}
    pairs.update({name: sample_pairs(d, n_pairs_test, seed) for name, d in tests.items()})
    files = {
        "train.fa": domain_lines(train),
        "dev.fa": domain_lines(dev),
        "dev_pairs.tsv": pair_lines(pairs["dev"]),
    }
    for name, doms in tests.items():
        files[f"test_{name}.fa"] = domain_lines(doms)
        files[f"test_{name}_pairs.tsv"] = pair_lines(pairs[name])
    splits = {"train": "train.fa", "dev": "dev_pairs.tsv", "test": {n: f"test_{n}_pairs.tsv" for n in tests}}
    domains = {"train": "train.fa", "dev": "dev.fa", **{n: f"test_{n}.fa" for n in tests}}
    level_counts = {n: np.bincount([p[4] for p in ps], minlength=5).tolist() for n, ps in pairs.items()}
    counts = {
        "train": len(train),
        "dev": len(pairs["dev"]),
        "test": {n: len(pairs[n]) for n in tests},
        "domains": {"train": len(train), "dev": len(dev), **{n: len(d) for n, d in tests.items()}},
        "pairs_per_level": level_counts,
    }
    rules = {
        "test id25": "all DeepSF id25 domains",
        "test id40": "DeepSF id40 domains not in id25",
        "train/dev": f"id70 domains in neither test set, seeded {1 - dev_fraction:g}/{dev_fraction:g} split",
        "pairs": f"level-stratified: up to {n_pairs_dev}//5 (dev) or {n_pairs_test}//5 (tests) pairs of "
        "distinct domains per level, seeded, without replacement",
        "similarity": "number of leading sccs levels shared (class, fold, superfamily, family)",
    }
    notes = (
        "SCOP 1.75 (DeepSF) stands in for SCOPe 2.06/2.07; no contact maps are embedded, so the P-ELMo "
        "homology contact-map loss is unavailable in the demo. Training pairs are all pairs of train.fa."
    )
    manifest = _manifest(
        "homology",
        LEVEL_NAMES,
        splits,
        counts,
        "embedded",
        raw,
        rules,
        notes,
        seed,
        max_train,
        None,
        domains=domains,
        contact_maps=None,
    )
    return write_task(outdir, manifest, files)


# -- canonical converters ----------------------------------------------------------------------------------


def _tar_members(archive, suffixes: dict[str, str]) -> dict[str, tarfile.TarInfo]:
    """Map key -> the one archive member whose path ends with '/' + suffix (or equals suffix)."""
    try:
        with tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{archive}: not a readable tar archive ({exc})") from exc
    out = {}
    for key, suffix in suffixes.items():
        hits = [m for m in members if m.name == suffix or m.name.endswith("/" + suffix)]
        if len(hits) != 1:
            raise InputError(f"{archive}: expected one member named {suffix!r}, found {len(hits)}")
        out[key] = hits[0]
    return out


def _extract(archive, members: dict[str, tarfile.TarInfo], tmp: Path) -> dict[str, Path]:
    """Extract the given members (by name only, never their stored paths) into `tmp`."""
    out = {}
    with tarfile.open(archive) as tf:
        for key, member in members.items():
            path = tmp / Path(member.name).name
            with tf.extractfile(member) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
            out[key] = path
    return out


# TAPE's raw JSON archives of the PyTorch release (README since March 2020; bucket moved in August 2021, TAPE
# issue #112): <name>/<name>_<split>.json with `primary` as letters. config.yaml downloads these URLs.
TAPE_RAW_URL = "http://s3.amazonaws.com/songlabdata/proteindata/data_raw_pytorch/{}.tar.gz"


def _tape_json(
    archive, member: tarfile.TarInfo, value_key: str, prefix: str, name: str
) -> list[tuple[str, str, object]]:
    """TAPE raw JSON (a list of records with `primary` and `value_key`) -> (id, seq, value). `name` is the
    archive's dataset name (stability, fluorescence, secondary_structure), for the error messages."""
    where, url = f"{archive}:{member.name}", TAPE_RAW_URL.format(name)
    with tarfile.open(archive) as tf, tf.extractfile(member) as fh:
        head = fh.read(2)
        fh.seek(0)
        if head == b"\x1f\x8b":
            raise InputError(
                f"{where}: a gzip file, not JSON (a defect of TAPE archives fetched before May 2020, TAPE issue "
                f"#49); download {url} again"
            )
        try:
            data = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{where}: invalid JSON ({exc})") from exc
    if not isinstance(data, list) or not data:
        raise InputError(f"{where}: expected a non-empty JSON list of records")
    out = []
    for n, item in enumerate(data, 1):
        if not isinstance(item, dict) or "primary" not in item or value_key not in item:
            raise InputError(f"{where}: record {n}: needs keys 'primary' and {value_key!r}")
        if isinstance(item["primary"], list):
            raise InputError(
                f"{where}: record {n}: 'primary' holds integer token ids, TAPE's TensorFlow-era encoding "
                f"(proteindata/data_raw/, TAPE issue #35); download {url} instead"
            )
        seq = str(item["primary"]).upper()
        if not seq.isalpha():
            raise InputError(f"{where}: record {n}: empty sequence or non-letter characters")
        out.append((f"{prefix}_{n}", seq, item[value_key]))
    return out


def _tape_regression(archive, task: str, value_key: str) -> dict[str, list]:
    """TAPE stability/fluorescence JSON splits -> {split: [(id, seq, label text)]}."""
    members = _tar_members(archive, {s: f"{task}_{s}.json" for s in ("train", "valid", "test")})
    out = {}
    for split, member in members.items():
        recs = []
        for n, (ident, seq, value) in enumerate(
            _tape_json(archive, member, value_key, f"tape_{split}", task), 1
        ):
            value = value[0] if isinstance(value, list) and len(value) == 1 else value
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(
                    f"{archive}:{member.name}: record {n}: {value_key} {value!r} is not a number"
                )
            recs.append((ident, seq, _check_float(f"{archive}:{member.name}", n, repr(float(value)))))
        out[split] = recs
    return out


def convert_solubility_canonical(
    raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None
) -> dict:
    """DeepSol (DSOL_rv0.2 data/ or Zenodo 1162886): train/val/test -> train/dev/test "deepsol".

    raw keys: train_src, train_tgt, val_src, val_tgt, test_src, test_tgt.
    """
    _require(raw, DATA["solubility"].canonical_artefacts, "solubility", "canonical")
    train = _deepsol(raw["train_src"], raw["train_tgt"], "deepsol_train")
    dev = _deepsol(raw["val_src"], raw["val_tgt"], "deepsol_val")
    test = _deepsol(raw["test_src"], raw["test_tgt"], "deepsol_test")
    rules = {"splits": "DeepSol train/validation/test as released"}
    return _protein_task(
        "solubility",
        outdir,
        list(SOLUBILITY_CLASSES),
        subsample(train, max_train, seed),
        dev,
        {"deepsol": test},
        "canonical",
        raw,
        rules,
        "",
        seed,
        max_train,
    )


def convert_localization_canonical(
    raw: dict[str, Path],
    outdir: Path,
    seed: int,
    max_train: int | None = None,
    dev_fraction: float = LOCALIZATION_DEV_FRACTION,
    dual_as_first: bool = True,
) -> dict:
    """DeepLoc 1.0 deeploc_data.fasta: `test`-tagged -> test "deeploc"; the rest -> seeded train/dev.

    Same labels, truncation and Cytoplasm-Nucleus rule (`dual_as_first`) as the embedded converter.
    raw key: fasta.
    """
    _require(raw, DATA["localization"].canonical_artefacts, "localization", "canonical")
    recs, is_test, relabelled, dropped = _deeploc(raw["fasta"], dual_as_first)
    pool = [r for r, t in zip(recs, is_test, strict=True) if not t]
    test = [r for r, t in zip(recs, is_test, strict=True) if t]
    if not pool or not test:
        raise InputError(f"{raw['fasta']}: needs both 'test'-tagged and untagged records")
    parts = split_groups(range(len(pool)), {"train": 1 - dev_fraction, "dev": dev_fraction}, seed)
    rules = {
        "train/dev": f"untagged (training-partition) records, seeded {1 - dev_fraction:g}/{dev_fraction:g} "
        "random split",
        "test": "records tagged 'test'",
        "dual locations": _dual_location_rule(dual_as_first),
        "truncate": "sequences longer than 1000 keep the first 500 + last 500 residues",
    }
    return _protein_task(
        "localization",
        outdir,
        list(LOCALIZATION_CLASSES),
        subsample(_take(pool, parts["train"]), max_train, seed),
        _take(pool, parts["dev"]),
        {"deeploc": test},
        "canonical",
        raw,
        rules,
        "",
        seed,
        max_train,
        _per_input({"fasta": dropped}),
        relabelled=_per_input({"fasta": relabelled}),
        switches={"data_localization_dual_as_first": dual_as_first},
        truncate=LOCALIZATION_TRUNCATE,
    )


def convert_stability_canonical(
    raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None
) -> dict:
    """TAPE raw stability.tar.gz (stability_{train,valid,test}.json, `stability_score`) -> train/dev/test
    "tape".

    raw key: archive.
    """
    _require(raw, DATA["stability"].canonical_artefacts, "stability", "canonical")
    s = _tape_regression(raw["archive"], "stability", "stability_score")
    return _protein_task(
        "stability",
        outdir,
        None,
        subsample(s["train"], max_train, seed),
        s["valid"],
        {"tape": s["test"]},
        "canonical",
        raw,
        {"splits": "TAPE train/valid/test as released"},
        "",
        seed,
        max_train,
    )


def convert_fluorescence_canonical(
    raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None
) -> dict:
    """TAPE raw fluorescence.tar.gz (`log_fluorescence`) -> train/dev/test "tape". raw key: archive."""
    _require(raw, DATA["fluorescence"].canonical_artefacts, "fluorescence", "canonical")
    s = _tape_regression(raw["archive"], "fluorescence", "log_fluorescence")
    return _protein_task(
        "fluorescence",
        outdir,
        None,
        subsample(s["train"], max_train, seed),
        s["valid"],
        {"tape": s["test"]},
        "canonical",
        raw,
        {"splits": "TAPE train/valid/test as released"},
        "",
        seed,
        max_train,
    )


def convert_secstr_canonical(
    raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None
) -> dict:
    """TAPE raw secondary_structure.tar.gz: train/valid -> train/dev, cb513/casp12/ts115 -> tests; labels =
    the `ss8` ids (NetSurfP order GHIBESTC) as digits. raw key: archive.
    """
    _require(raw, DATA["secstr"].canonical_artefacts, "secstr", "canonical")
    archive = raw["archive"]
    names = ("train", "valid", "cb513", "casp12", "ts115")
    members = _tar_members(archive, {s: f"secondary_structure_{s}.json" for s in names})
    out = {}
    for split, member in members.items():
        recs = []
        for n, (ident, seq, ss8) in enumerate(_tape_json(archive, member, "ss8", split, "secondary_structure"), 1):
            if not isinstance(ss8, list) or len(ss8) != len(seq):
                raise InputError(
                    f"{archive}:{member.name}: record {n} ({ident}): ss8 length != sequence length"
                )
            if any(not isinstance(v, int) or not 0 <= v < 8 for v in ss8):
                raise InputError(f"{archive}:{member.name}: record {n} ({ident}): ss8 value outside 0-7")
            recs.append((ident, seq, "".join(map(str, ss8))))
        out[split] = recs
    tests = {name: out[name] for name in ("cb513", "casp12", "ts115")}
    return _residue_task(
        "secstr",
        outdir,
        list(SS8),
        "01234567",
        subsample(out["train"], max_train, seed),
        out["valid"],
        tests,
        "canonical",
        raw,
        {"splits": "TAPE/NetSurfP-2.0 train/valid as train/dev; CB513, CASP12, TS115 tests"},
        "",
        seed,
        max_train,
    )


TOPCONS2_SETS = ("TM", "SP+TM", "Globular", "Globular+SP")


def convert_transmembrane_canonical(
    raw: dict[str, Path],
    outdir: Path,
    seed: int,
    max_train: int | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    drop_signal_peptides: bool = True,
) -> dict:
    """Bepler & Berger transmembrane.tar.gz (TOPCONS2_datasets/{TM,SP+TM,Globular,Globular+SP}.3line):
    union of the four sets (ids prefixed `set:`); records with S (signal peptide) dropped
    (`drop_signal_peptides`, the inferred reference) or kept with S -> O; counted per set; seeded
    train/dev/test "topcons2" split by unique sequence. Labels other than I/O/M/S raise (Bepler's own
    encoder accepts only those four). raw key: archive.
    """
    _require(raw, DATA["transmembrane"].canonical_artefacts, "transmembrane", "canonical")
    members = _tar_members(raw["archive"], {s: f"{s}.3line" for s in TOPCONS2_SETS})
    recs, dropped, relabelled, sets = [], {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in _extract(raw["archive"], members, Path(tmp)).items():
            got, drop, relabel = _threeline(path, "", prefix=f"{name}:", drop_signal_peptides=drop_signal_peptides)
            recs.extend(got)
            sets[name] = len(got)
            dropped.update({f"{name}: {k}": v for k, v in drop.items()})
            relabelled.update({f"{name}: {k}": v for k, v in relabel.items()})
    parts = split_groups(
        [seq for _, seq, _ in recs], dict(zip(("train", "dev", "test"), fractions, strict=True)), seed
    )
    rules = {
        "labels": "I/O/M as released; any other letter but S raises",
        "signal peptides": _signal_peptide_rule(drop_signal_peptides),
        "sets kept": sets,
        "splits": "union of the four TOPCONS2 sets, seeded random split by unique sequence, "
        + "/".join(f"{f:g}" for f in fractions),
    }
    return _residue_task(
        "transmembrane",
        outdir,
        list(TM_LABELS),
        TM_LABELS,
        subsample(_take(recs, parts["train"]), max_train, seed),
        _take(recs, parts["dev"]),
        {"topcons2": _take(recs, parts["test"])},
        "canonical",
        raw,
        rules,
        "PLUS's own transmembrane split is undocumented; this rule is ours.",
        seed,
        max_train,
        dropped,
        relabelled=relabelled,
        switches={"data_transmembrane_drop_signal_peptides": drop_signal_peptides},
    )


SCOPE_PREFIX = "astral-scopedom-seqres-gd-sel-gs-bib-95-"
SCOPE_FILES = {
    "train": SCOPE_PREFIX + "2.06.train.train.fa",
    "dev": SCOPE_PREFIX + "2.06.train.dev.sampledpairs.txt",
    "2.06": SCOPE_PREFIX + "2.06.test.sampledpairs.txt",
    "2.07": SCOPE_PREFIX + "2.07-new.allpairs.txt",
    "domains_2.06": SCOPE_PREFIX + "2.06.test.fa",
    "domains_2.07": SCOPE_PREFIX + "2.07-new.fa",
}


def extract_contact_maps(archive, outdir: Path) -> dict[str, int]:
    """Copy the contact-map PNGs ``pdbstyle-2.0{6,7}/<sub>/<id>.png`` of the SCOPe archive into
    ``outdir/cmap_2.0{6,7}/<sub>/`` (each directory built aside and renamed in); returns PNG counts."""
    counts = {}
    with tarfile.open(archive) as tf:
        members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".png")]
        for version in ("2.06", "2.07"):
            chosen = [m for m in members if f"pdbstyle-{version}/" in m.name]
            dest = Path(outdir) / f"cmap_{version}"
            tmp = Path(tempfile.mkdtemp(prefix=f".cmap_{version}.", dir=outdir))
            try:
                for m in chosen:
                    sub = Path(m.name.split(f"pdbstyle-{version}/", 1)[1])
                    if sub.is_absolute() or ".." in sub.parts:
                        raise InputError(f"{archive}: unsafe member path {m.name!r}")
                    (tmp / sub).parent.mkdir(parents=True, exist_ok=True)
                    with tf.extractfile(m) as src, open(tmp / sub, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                if dest.exists():
                    shutil.rmtree(dest)
                os.replace(tmp, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            counts[version] = len(chosen)
    return counts


HOMOLOGY_2_07 = ("sampled", "all")  # data.homology_test_2_07: the reference's file name says sampled pairs


def convert_homology_canonical(
    raw: dict[str, Path],
    outdir: Path,
    seed: int,
    max_train: int | None = None,
    contact_maps: bool = True,
    test_2_07: str = "sampled",
    n_pairs_test: int = 100000,
) -> dict:
    """Bepler & Berger scope.tar.gz: 2.06 train.train FASTA -> train domains; 2.06 train.dev sampled pairs ->
    dev; 2.06 test sampled pairs -> test "2.06"; test "2.07" from the 2.07-new all pairs: a seeded
    level-stratified sample of up to `n_pairs_test` pairs (`test_2_07` "sampled", as the reference's
    homology_test_2.07_sampledpairs.txt) or all of them ("all", as Bepler & Berger); the 2.06 test and
    2.07-new domain FASTAs -> test_2.06.fa, test_2.07.fa (embeddings); contact-map PNGs -> cmap_2.06/,
    cmap_2.07/ (when `contact_maps`). raw key: archive.
    """
    _require(raw, DATA["homology"].canonical_artefacts, "homology", "canonical")
    if test_2_07 not in HOMOLOGY_2_07:
        raise InputError(f"homology: test_2_07 {test_2_07!r} is not one of {', '.join(HOMOLOGY_2_07)}")
    archive = raw["archive"]
    members = _tar_members(archive, SCOPE_FILES)
    outdir = Path(outdir)
    with tempfile.TemporaryDirectory() as tmp:
        paths = _extract(archive, members, Path(tmp))
        train = subsample(read_domains(paths["train"]), max_train, seed)
        pairs = {k: read_pairs(paths[k]) for k in ("dev", "2.06", "2.07")}
        tests = {v: read_domains(paths[f"domains_{v}"]) for v in ("2.06", "2.07")}
    all_2_07 = len(pairs["2.07"])
    if test_2_07 == "sampled":
        keep = stratified(np.array([p[4] for p in pairs["2.07"]]), n_pairs_test, np.random.default_rng([seed, 3]))
        pairs["2.07"] = _take(pairs["2.07"], keep)
    cmaps = None
    if contact_maps:
        outdir.mkdir(parents=True, exist_ok=True)
        cmaps = {v: {"dir": f"cmap_{v}", "pngs": n} for v, n in extract_contact_maps(archive, outdir).items()}
    files = {"train.fa": domain_lines(train), "dev_pairs.tsv": pair_lines(pairs["dev"])}
    files.update({f"test_{v}_pairs.tsv": pair_lines(pairs[v]) for v in ("2.06", "2.07")})
    files.update({f"test_{v}.fa": domain_lines(tests[v]) for v in ("2.06", "2.07")})
    splits = {
        "train": "train.fa",
        "dev": "dev_pairs.tsv",
        "test": {v: f"test_{v}_pairs.tsv" for v in ("2.06", "2.07")},
    }
    counts = {
        "train": len(train),
        "dev": len(pairs["dev"]),
        "test": {v: len(pairs[v]) for v in ("2.06", "2.07")},
        "pairs_per_level": {
            k: np.bincount([p[4] for p in ps], minlength=5).tolist() for k, ps in pairs.items()
        },
    }
    rules = {
        "files": {k: Path(m.name).name for k, m in members.items()},
        "test 2.07": f"{len(pairs['2.07'])} of the {all_2_07} 2.07-new pairs: "
        + ("all" if test_2_07 == "all" else f"seeded level-stratified sample, up to {n_pairs_test}//5 per level")
        + f" (data.homology_test_2_07: {test_2_07})",
    }
    manifest = _manifest(
        "homology",
        LEVEL_NAMES,
        splits,
        counts,
        "canonical",
        raw,
        rules,
        "Bepler & Berger SCOPe 2.06/2.07 files used as released.",
        seed,
        max_train,
        None,
        domains={"train": "train.fa", **{f"test_{v}": f"test_{v}.fa" for v in ("2.06", "2.07")}},
        contact_maps=cmaps,
    )
    return write_task(outdir, manifest, files)


# -- the tasks' data: one declaration per task -------------------------------------------------------------


@dataclass(frozen=True)
class TaskData:
    """A task's converted data (its kind) and its two converters with the raw files each reads."""

    kind: str  # pair | protein | residue (plus.data.tasks)
    embedded: Callable  # converter of the real subsets in data/embedded/<task>/
    canonical: Callable  # converter of the full public release
    embedded_files: dict  # --raw KEY -> file under data/embedded/<task>/
    canonical_artefacts: dict  # --raw KEY -> download artefact (config `downloads:`)
    expected_counts: dict  # the canonical converter's counts on the full release (release docs; None = unknown)


DATA: dict[str, TaskData] = {
    "homology": TaskData(
        "pair", convert_homology_embedded, convert_homology_canonical,
        {f"id{k}": f"Testdata_id{k}againstTrain.fasta.gz" for k in (70, 40, 25)},
        {"archive": "scope"},
        {"train": None, "dev": None, "test": {"2.06": None, "2.07": None}},
    ),
    "solubility": TaskData(
        "protein", convert_solubility_embedded, convert_solubility_canonical,
        {"val_src": "val_src.gz", "val_tgt": "val_tgt", "test_src": "test_src.gz", "test_tgt": "test_tgt"},
        {f"{split}_{part}": f"deepsol_{split}_{part}" for split in ("train", "val", "test") for part in ("src", "tgt")},
        {"train": 62478, "dev": 6942, "test": {"deepsol": 2001}},
    ),
    # reference handling: 14,004 records, the 146 Cytoplasm-Nucleus ones (partitions not documented) kept as
    # Cytoplasm; `corrected` (dropped): train+dev 11,085 -> 9,976 / 1,109, test 2,773 (third-party count)
    "localization": TaskData(
        "protein", convert_localization_embedded, convert_localization_canonical,
        {"train_fasta": "deeploc_our_val_set.fasta.gz", "test_fasta": "deeploc_test_set.fasta.gz"},
        {"fasta": "deeploc"},
        {"train": None, "dev": None, "test": {"deeploc": None}},
    ),
    "stability": TaskData(
        "protein", convert_stability_embedded, convert_stability_canonical,
        {"train_csv": "stability.train.csv.gz", "valid_csv": "stability.valid.csv.gz",
         "test_csv": "stability.test.csv.gz"},
        {"archive": "tape_stability"},
        {"train": 53614, "dev": 2512, "test": {"tape": 12851}},
    ),
    "fluorescence": TaskData(
        "protein", convert_fluorescence_embedded, convert_fluorescence_canonical,
        {"valid_csv": "fluorescence.valid.csv.gz"},
        {"archive": "tape_fluorescence"},
        {"train": 21446, "dev": 5362, "test": {"tape": 27217}},
    ),
    "secstr": TaskData(
        "residue", convert_secstr_embedded, convert_secstr_canonical,
        {f"{name.lower()}_csv": f"netsurfp2_hhblits_csv/{name}_HHblits.csv.gz"
         for name in ("CB513", "TS115", "CASP12")},
        {"archive": "tape_secondary_structure"},
        {"train": 8678, "dev": 2170, "test": {"cb513": 513, "casp12": 21, "ts115": 115}},
    ),
    "transmembrane": TaskData(
        "residue", convert_transmembrane_embedded, convert_transmembrane_canonical,
        {"threeline": "3D_struct_DB.3line.gz"},
        {"archive": "transmembrane"},
        {"train": None, "dev": None, "test": {"topcons2": None}},
    ),
}
TASKS = tuple(DATA)


# -- dispatcher and CLI ------------------------------------------------------------------------------------


def convert_task(
    task: str,
    source: str,
    raw: dict[str, Path],
    outdir: str | os.PathLike,
    seed: int,
    max_train: int | None = None,
    fidelity: dict | None = None,
    **opts,
) -> dict:
    """Run the converter of (`task`, `source`), source "embedded" or "canonical"; returns the manifest.

    `fidelity`: reference-fidelity switches of the task's data, named ``data_<task>_<option>`` (config
    reference_fidelity); each sets the converter's keyword <option>.
    """
    if task not in DATA or source not in ("embedded", "canonical"):
        raise InputError(
            f"unknown task/source {task!r}/{source!r}; tasks: {', '.join(TASKS)}; "
            "sources: embedded, canonical"
        )
    converter = getattr(DATA[task], source)
    opts = {**opts, **data_switch_options(task, converter, fidelity or {})}
    raw = {k: Path(v) for k, v in raw.items()}
    return converter(raw, Path(outdir), seed, max_train, **opts)


def data_switch_options(task: str, converter, switches: dict) -> dict:
    """Converter keyword arguments from ``data_<task>_<option>`` switches; unknown ones raise InputError."""
    prefix, params = f"data_{task}_", inspect.signature(converter).parameters
    opts = {}
    for key, value in switches.items():
        option = key.removeprefix(prefix)
        if not key.startswith(prefix) or option not in params or not isinstance(value, bool):
            raise InputError(f"{task}: {key}={value!r} is not a boolean data switch of this task's converter")
        opts[option] = value
    return opts


def _parse_raw(items: list[str]) -> dict[str, Path]:
    raw = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise InputError(f"--raw {item!r}: expected KEY=PATH")
        raw[key] = Path(value)
    return raw


def add_parser(subparsers) -> None:
    """Register ``data convert`` (call with the subparsers of the ``plus data`` command)."""
    p = subparsers.add_parser("convert", help="convert a downstream task's raw release into a task directory")
    p.add_argument("--task", required=True, choices=DATA)  # DATA: users' tasks registered at start-up too
    p.add_argument("--source", required=True, choices=("embedded", "canonical"))
    p.add_argument(
        "--raw",
        nargs="+",
        required=True,
        metavar="KEY=PATH",
        help="input files by key (see DATA.md; e.g. val_src=..., archive=...)",
    )
    p.add_argument("--outdir", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train", type=int, default=None, help="seeded subsample of the training split")
    p.add_argument("--n-pairs-dev", type=int, default=None, help="homology (embedded): dev pairs to sample")
    p.add_argument("--n-pairs-test", type=int, default=None, help="homology (embedded): pairs per test set")
    p.add_argument("--no-contact-maps", action="store_true", help="homology (canonical): skip the PNGs")
    p.add_argument("--homology-2-07", choices=HOMOLOGY_2_07, default=None,
                   help="homology (canonical): test 2.07 = a sample of --n-pairs-test pairs, or all pairs")
    p.add_argument("--fidelity", type=_json_object, default={},
                   help="JSON: the task's data_<task>_* reference-fidelity switches")
    p.set_defaults(func=run)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def run(args) -> int:
    # the converter's own keyword options among the CLI's (homology's pair counts, contact maps, 2.07 choice)
    accepted = inspect.signature(getattr(DATA[args.task], args.source)).parameters
    given = {"n_pairs_dev": args.n_pairs_dev, "n_pairs_test": args.n_pairs_test, "test_2_07": args.homology_2_07,
             "contact_maps": False if args.no_contact_maps else None}
    opts = {k: v for k, v in given.items() if v is not None and k in accepted}
    manifest = convert_task(
        args.task, args.source, _parse_raw(args.raw), args.outdir, args.seed, args.max_train, args.fidelity,
        **opts,
    )
    summary = {k: manifest[k] for k in ("task", "counts", "dropped", "relabelled", "fidelity")}
    print(json.dumps(summary))
    return 0
