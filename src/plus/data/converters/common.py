"""What every converter shares: its declaration (`TaskData`), seeded splits, the record of one conversion
(`Converted`) and how it becomes a task directory, and raw-key checks."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plus.data.tasks import protein_lines, residue_lines, write_task
from plus.io import InputError


@dataclass(frozen=True)
class TaskData:
    """A task's converted data (its kind) and its two converters with the raw files each reads."""

    kind: str  # pair | protein | residue (plus.data.tasks)
    embedded: Callable  # converter of the real subsets in data/embedded/<task>/
    canonical: Callable  # converter of the full public release
    embedded_files: dict  # --raw KEY -> file under data/embedded/<task>/
    canonical_artefacts: dict  # --raw KEY -> download artefact (config `downloads:`)
    expected_counts: dict  # the canonical converter's counts on the full release (release docs; None = unknown)


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


def take(records: list, idx: list[int]) -> list:
    """The records at `idx`, in that order."""
    return [records[i] for i in idx]


def seeded_split(records: list, keys, fractions: tuple[float, ...], seed: int, max_train: int | None) -> dict:
    """`records` split by `split_groups` on `keys` with (train, dev[, test]) `fractions`, the training part
    then subsampled to `max_train`: {split name: records}."""
    names = ("train", "dev", "test")[: len(fractions)]
    parts = split_groups(keys, dict(zip(names, fractions, strict=True)), seed)
    out = {name: take(records, idx) for name, idx in parts.items()}
    out["train"] = subsample(out["train"], max_train, seed)
    return out


# -- one conversion and its task directory -----------------------------------------------------------------


@dataclass(frozen=True)
class Converted:
    """One conversion: its inputs, the records of each split, and the manifest's account of how they were made
    (rules, notes, records dropped or relabelled, the data_<task>_* switches applied)."""

    task: str
    source: str  # embedded | canonical
    raw: dict  # --raw KEY -> path (the manifest keeps the file names)
    seed: int
    max_train: int | None
    labels: list | None  # class names in class-id order; None for regression (homology: the level names)
    train: list
    dev: list
    tests: dict  # test-set name -> records
    rules: dict
    notes: str = ""
    dropped: dict = field(default_factory=dict)
    relabelled: dict = field(default_factory=dict)
    fidelity: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # the kind's own manifest keys (label_chars, truncate, domains...)

    def counts(self) -> dict:
        return {"train": len(self.train), "dev": len(self.dev),
                "test": {name: len(r) for name, r in self.tests.items()}}

    def manifest(self, kind: str, splits: dict, counts: dict) -> dict:
        """manifest.json of the task directory; InputError when a split came out empty."""
        check_nonempty(self.task, counts)
        return {
            "task": self.task,
            "kind": kind,
            "labels": self.labels,
            **self.extra,
            "splits": splits,
            "counts": counts,
            "dropped": self.dropped,
            "relabelled": self.relabelled,
            "fidelity": self.fidelity,
            "source": self.source,
            "inputs": {k: Path(v).name for k, v in self.raw.items()},
            "seed": self.seed,
            "max_train": self.max_train,
            "rules": self.rules,
            "notes": self.notes,
        }


SPLIT_FILES = {"protein": ("fa", protein_lines), "residue": ("3line", residue_lines)}  # kind -> suffix, writer


def write_split_task(outdir, kind: str, converted: Converted) -> dict:
    """Write a protein or residue task directory (train, dev, test_<name> files + manifest); its manifest."""
    suffix, lines = SPLIT_FILES[kind]
    files = {f"train.{suffix}": lines(converted.train), f"dev.{suffix}": lines(converted.dev)}
    files.update({f"test_{name}.{suffix}": lines(recs) for name, recs in converted.tests.items()})
    splits = {"train": f"train.{suffix}", "dev": f"dev.{suffix}",
              "test": {name: f"test_{name}.{suffix}" for name in converted.tests}}
    return write_task(outdir, converted.manifest(kind, splits, converted.counts()), files)


def check_nonempty(task, counts: dict) -> None:
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


def require(raw: dict, keys, task: str, source: str) -> None:
    """InputError unless every --raw key in `keys` is given."""
    missing = [k for k in keys if k not in raw]
    if missing:
        raise InputError(
            f"{task} ({source}): missing --raw key(s) {', '.join(missing)}; expected {', '.join(keys)}"
        )
