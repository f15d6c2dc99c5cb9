"""A user's own task (config ``custom_tasks:``): one CSV per split with the columns ``sequence,label``.

Labels: class names (protein_classification), numbers (protein_regression), or a string of per-residue
states exactly as long as the sequence (residue_classification). An ``id`` column, when present, names the
records; otherwise a record is named by its split and line. The classes (residue states) are those of the
training CSV, sorted; a test or dev label outside them stops the conversion. Without a dev CSV, a seeded
10 % of the training records (identical sequences kept together) is the dev split. Every malformed record
stops with one line naming the file and line.

raw keys: ``train``, ``test`` (one test set named "test") or ``test_<name>`` (one per test set), ``dev``
(optional).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from plus.data.converters.common import Converted, seeded_split, subsample, write_split_task
from plus.io import InputError, is_finite_number, iter_lines

DEV_FRACTION = 0.1


def read_csv(path: Path, kind: str, split: str) -> list[tuple[str, str, str, int]]:
    """[(id, SEQUENCE, label text, line)] of one split's CSV, each record checked for its kind."""
    rows = csv.reader(line for _, line in iter_lines(path))
    try:
        header = [c.strip() for c in next(rows)]
    except StopIteration:
        raise InputError(f"{path}: empty file (expected a header line with the columns sequence,label)") from None
    except csv.Error as exc:
        raise InputError(f"{path}: line 1: not CSV ({exc})") from None
    missing = [c for c in ("sequence", "label") if c not in header]
    if missing:
        raise InputError(f"{path}: line 1: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
    col = {name: header.index(name) for name in ("sequence", "label", "id") if name in header}
    records, seen = [], set()
    try:
        for line, row in enumerate(rows, 2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise InputError(f"{path}: line {line}: {len(row)} fields, the header has {len(header)}")
            seq, label = row[col["sequence"]].strip().upper(), row[col["label"]].strip()
            ident = row[col["id"]].strip() if "id" in col else f"{split}_line{line}"
            where = f"{path}: line {line}"
            if not ident or ident in seen or any(c.isspace() for c in ident):
                raise InputError(f"{where}: id {ident!r} is empty, repeated or contains spaces")
            seen.add(ident)
            if not seq:
                raise InputError(f"{where}: empty sequence")
            if not seq.isalpha() or not seq.isascii():
                raise InputError(f"{where}: sequence has characters other than amino-acid letters")
            _check_label(where, kind, seq, label)
            records.append((ident, seq, label, line))
    except csv.Error as exc:
        raise InputError(f"{path}: line {rows.line_num}: not CSV ({exc})") from None
    if not records:
        raise InputError(f"{path}: no records after the header")
    return records


def _check_label(where: str, kind: str, seq: str, label: str) -> None:
    if not label:
        raise InputError(f"{where}: empty label")
    if kind == "protein_regression":
        if not is_finite_number(label):
            raise InputError(f"{where}: label {label!r} is not a finite number")
    elif kind == "residue_classification":
        if len(label) != len(seq):
            raise InputError(f"{where}: {len(label)} residue labels for a sequence of {len(seq)} residues")
        if not label.isprintable() or any(c.isspace() or c == "," for c in label):
            raise InputError(f"{where}: residue labels must be printable characters without spaces")
    elif any(c.isspace() for c in label):
        raise InputError(f"{where}: class name {label!r} contains spaces")


def _classes(records, kind: str) -> list[str]:
    if kind == "residue_classification":
        return sorted({c for _, _, label, _ in records for c in label})
    return sorted({label for _, _, label, _ in records})


def _encode(path, records, kind: str, classes: list[str]) -> list[tuple]:
    """Records in the task-directory form: (id, sequence, class index | float | residue label string)."""
    if kind == "protein_regression":
        return [(i, s, float(label)) for i, s, label, _ in records]
    index = {c: k for k, c in enumerate(classes)}
    for _, _, label, line in records:
        unknown = sorted(set(label) - set(index)) if kind == "residue_classification" else \
            ([label] if label not in index else [])
        if unknown:
            raise InputError(f"{path}: line {line}: label(s) {', '.join(map(repr, unknown))} not among the "
                             f"training CSV's ({', '.join(classes)})")
    if kind == "residue_classification":
        return [(i, s, label) for i, s, label, _ in records]
    return [(i, s, index[label]) for i, s, label, _ in records]


def csv_converter(task: str, kind: str) -> Callable:
    """The converter of a user's task `task` of kind `kind` (both of its sources read the same CSVs)."""

    def convert(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None) -> dict:
        tests = {("test" if key == "test" else key.removeprefix("test_")): path for key, path in raw.items()
                 if key == "test" or key.startswith("test_")}
        unknown = sorted(set(raw) - {"train", "dev"} - {k for k in raw if k == "test" or k.startswith("test_")})
        if "train" not in raw or not tests or unknown:
            raise InputError(f"{task}: --raw keys train, test or test_<name> (one per test set), dev (optional); "
                             f"got {', '.join(sorted(raw))}")
        train = read_csv(raw["train"], kind, "train")
        classes = _classes(train, kind)
        if kind != "protein_regression" and len(classes) < 2:
            raise InputError(f"{raw['train']}: one class ({classes[0]!r}) only: a classification task needs two")
        if "dev" in raw:
            dev = read_csv(raw["dev"], kind, "dev")
            dev_rule = f"dev = {Path(raw['dev']).name}"
        else:
            s = seeded_split(train, [r[1] for r in train], (1 - DEV_FRACTION, DEV_FRACTION), seed, None)
            train, dev = s["train"], s["dev"]
            dev_rule = f"dev = a seeded {DEV_FRACTION:.0%} of the training CSV (identical sequences together)"
        train = _encode(raw["train"], train, kind, classes)
        dev = _encode(raw.get("dev", raw["train"]), dev, kind, classes)
        test = {name: _encode(path, read_csv(path, kind, name), kind, classes) for name, path in tests.items()}
        rules = {"splits": f"train, test as given; {dev_rule}", "max_train": "seeded sample of the training split",
                 "labels": "classes (residue states) of the training CSV, sorted"}
        residue = kind == "residue_classification"
        return write_split_task(outdir, "residue" if residue else "protein", Converted(
            task, "custom", raw, seed, max_train, None if kind == "protein_regression" else classes,
            train=subsample(train, max_train, seed), dev=dev, tests=test, rules=rules,
            notes=f"a user's task (custom_tasks: {task}, kind {kind})",
            extra={"task_kind": kind, **({"label_chars": "".join(classes)} if residue else {})}))

    convert.__doc__ = f"A user's {kind} task {task!r}: train/test/dev CSVs (sequence,label)."
    return convert
