"""Transmembrane topology: TOPCONS2 (Tsirigos et al. 2015) 3line I/O/M labels -> residue task."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path

from plus.data.converters.archives import extract, tar_members
from plus.data.converters.common import Converted, TaskData, require, seeded_split, write_split_task
from plus.data.tasks import TM_LABELS
from plus.io import InputError, read_3line

SIGNAL_PEPTIDE = "S"  # TOPCONS2 label of signal-peptide residues (Bepler's encoder: class 3)
TOPCONS2_SETS = ("TM", "SP+TM", "Globular", "Globular+SP")


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


def _write_transmembrane(outdir, pooled: Converted, fractions, drop_signal_peptides: bool, split_rule: str) -> dict:
    """Write `pooled` (its `train` = all records, its one test set empty) split seeded by unique sequence into
    train/dev/test, with the signal-peptide rule and switch both sources share."""
    s = seeded_split(pooled.train, [seq for _, seq, _ in pooled.train], fractions, pooled.seed, pooled.max_train)
    rules = {"labels": pooled.rules["labels"], "signal peptides": _signal_peptide_rule(drop_signal_peptides),
             **{k: v for k, v in pooled.rules.items() if k != "labels"},
             "splits": split_rule + "/".join(f"{f:g}" for f in fractions)}
    return write_split_task(outdir, TRANSMEMBRANE.kind, replace(
        pooled, train=s["train"], dev=s["dev"], tests={name: s["test"] for name in pooled.tests}, rules=rules,
        fidelity={"data_transmembrane_drop_signal_peptides": drop_signal_peptides}, extra={"label_chars": TM_LABELS},
    ))


def convert_transmembrane_embedded(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None,
                                   fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                                   drop_signal_peptides: bool = True) -> dict:
    """TOPCONS2 3D structure DB (680 records) -> records with X or L labels dropped (counted) -> seeded
    train/dev/test "topcons2_3d" split by unique sequence. S labels (none in this file) are handled as in the
    canonical converter. raw key: threeline.
    """
    require(raw, TRANSMEMBRANE.embedded_files, "transmembrane", "embedded")
    recs, dropped, relabelled = _threeline(raw["threeline"], drop="XL", drop_signal_peptides=drop_signal_peptides)
    rules = {
        "labels": "records whose label line has X (unknown) or L (re-entrant loop) are dropped, never "
        "relabelled",
    }
    notes = (
        "The TOPCONS2 benchmark sets are not embedded; TOPCONS2's PDB-derived structure database stands "
        "in for them."
    )
    return _write_transmembrane(outdir, Converted(
        "transmembrane", "embedded", raw, seed, max_train, list(TM_LABELS), train=recs, dev=[],
        tests={"topcons2_3d": []}, rules=rules, notes=notes, dropped=dict(dropped), relabelled=dict(relabelled),
    ), fractions, drop_signal_peptides, "seeded random split by unique sequence, ")


def convert_transmembrane_canonical(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None,
                                    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                                    drop_signal_peptides: bool = True) -> dict:
    """Bepler & Berger transmembrane.tar.gz (TOPCONS2_datasets/{TM,SP+TM,Globular,Globular+SP}.3line):
    union of the four sets (ids prefixed `set:`); records with S (signal peptide) dropped
    (`drop_signal_peptides`, the inferred reference) or kept with S -> O; counted per set; seeded
    train/dev/test "topcons2" split by unique sequence. Labels other than I/O/M/S raise (Bepler's own
    encoder accepts only those four). raw key: archive.
    """
    require(raw, TRANSMEMBRANE.canonical_artefacts, "transmembrane", "canonical")
    members = tar_members(raw["archive"], {s: f"{s}.3line" for s in TOPCONS2_SETS})
    recs, dropped, relabelled, sets = [], {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in extract(raw["archive"], members, Path(tmp)).items():
            got, drop, relabel = _threeline(path, "", prefix=f"{name}:", drop_signal_peptides=drop_signal_peptides)
            recs.extend(got)
            sets[name] = len(got)
            dropped.update({f"{name}: {k}": v for k, v in drop.items()})
            relabelled.update({f"{name}: {k}": v for k, v in relabel.items()})
    rules = {"labels": "I/O/M as released; any other letter but S raises", "sets kept": sets}
    return _write_transmembrane(outdir, Converted(
        "transmembrane", "canonical", raw, seed, max_train, list(TM_LABELS), train=recs, dev=[],
        tests={"topcons2": []}, rules=rules, notes="PLUS's own transmembrane split is undocumented; this rule is ours.",
        dropped=dropped, relabelled=relabelled,
    ), fractions, drop_signal_peptides, "union of the four TOPCONS2 sets, seeded random split by unique sequence, ")


TRANSMEMBRANE = TaskData(
    "residue", convert_transmembrane_embedded, convert_transmembrane_canonical,
    {"threeline": "3D_struct_DB.3line.gz"},
    {"archive": "transmembrane"},
    {"train": None, "dev": None, "test": {"topcons2": None}},
)
