"""Converted downstream-task directories: the manifest, the split-file formats, readers and the writer.

A task directory holds ``manifest.json`` plus one file per split (formats in DATA.md):

* protein kind: FASTA ``>id label`` / sequence (label = class index, or a float for regression);
* residue kind: 3line ``>id`` / sequence / one label character per residue;
* pair kind (homology): domain FASTA ``>id sccs`` / sequence, and pair TSVs with the header
  ``pdb_id_A pdb_id_B sequence_A sequence_B similarity`` (similarity = leading SCOP levels shared, 0-4).

Every reader validates while reading and raises :class:`plus.io.InputError` naming the file and record.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from plus.io import InputError, is_finite_number, iter_lines, read_3line, read_fasta, read_json, write_json

LOCALIZATION_CLASSES = (
    "Cell.membrane",
    "Cytoplasm",
    "Endoplasmic.reticulum",
    "Extracellular",
    "Golgi.apparatus",
    "Lysosome/Vacuole",
    "Mitochondrion",
    "Nucleus",
    "Peroxisome",
    "Plastid",
)
SOLUBILITY_CLASSES = ("insoluble", "soluble")  # DeepSol target 0 / 1
SS8 = "GHIBESTC"  # NetSurfP-2.0 / TAPE ss8 order; label digit = index; 0-2 helix, 3-4 strand, 5-7 coil
TM_LABELS = "IOM"
PAIR_HEADER = ("pdb_id_A", "pdb_id_B", "sequence_A", "sequence_B", "similarity")


def scop_level(sccs_a: str, sccs_b: str) -> int:
    """Number of leading SCOP levels (class, fold, superfamily, family) two sccs codes share, 0-4."""
    level = 0
    for x, y in zip(sccs_a.split("."), sccs_b.split("."), strict=True):
        if x != y:
            break
        level += 1
    return level


def _check_sccs(path, record, ident, sccs) -> None:
    parts = sccs.split(".")
    if len(parts) != 4 or not parts[0].isalpha() or not all(p.isdigit() for p in parts[1:]):
        raise InputError(f"{path}: record {record} ({ident}): {sccs!r} is not a SCOP sccs code like a.1.1.1")


def check_seq(path, record, ident, seq) -> None:
    """InputError naming the file and record unless `seq` is a non-empty run of letters."""
    if not seq:
        raise InputError(f"{path}: record {record} ({ident}): empty sequence")
    if not seq.isalpha():
        raise InputError(f"{path}: record {record} ({ident}): sequence has non-letter characters")


def check_unique(path, record, ident, seen: set) -> None:
    """InputError naming the file and record when `ident` is in `seen`; else adds it."""
    if ident in seen:
        raise InputError(f"{path}: record {record} ({ident}): duplicate identifier")
    seen.add(ident)


def load_manifest(task_dir: str | os.PathLike) -> dict:
    """Read and check ``task_dir/manifest.json`` (kind, labels, split files present)."""
    path = Path(task_dir) / "manifest.json"
    manifest = read_json(path)
    for key in ("task", "kind", "labels", "splits"):
        if key not in manifest:
            raise InputError(f"{path}: missing key {key!r}")
    if manifest["kind"] not in ("protein", "residue", "pair"):
        raise InputError(f"{path}: unknown kind {manifest['kind']!r}")
    splits = manifest["splits"]
    for name in [splits.get("train"), splits.get("dev"), *splits.get("test", {}).values()]:
        if not name or not (Path(task_dir) / name).is_file():
            raise InputError(f"{path}: split file {name!r} is missing")
    return manifest


@dataclass
class TaskData:
    """A converted task directory: its manifest and a reader for its split files."""

    root: Path
    manifest: dict

    def read(self, split_file: str) -> list[tuple]:
        return read_split(self.root, split_file, self.manifest)

    @property
    def tests(self) -> dict[str, str]:
        return dict(self.manifest["splits"]["test"])


def load_task(task_dir: str | os.PathLike) -> TaskData:
    return TaskData(Path(task_dir), load_manifest(task_dir))


def read_split(task_dir: str | os.PathLike, filename: str, manifest: dict | None = None) -> list[tuple]:
    """Records of one split file of a task directory.

    protein: (id, seq, label int|float); residue: (id, seq, labels str); pair kind: a ``.tsv`` gives
    (idA, idB, seqA, seqB, level int), a domain FASTA gives (id, seq, sccs).
    """
    manifest = manifest if manifest is not None else load_manifest(task_dir)
    path = Path(task_dir) / filename
    kind = manifest["kind"]
    if kind == "pair":
        if filename.endswith(".tsv"):
            return read_pairs(path)
        return [(ident, seq, sccs) for ident, sccs, seq in read_domains(path)]
    if kind == "residue":
        return read_residue(path, manifest["label_chars"])
    return read_protein(path, manifest["labels"])


def _nonempty(path, records: list) -> list:
    if not records:
        raise InputError(f"{path}: empty file (no records)")
    return records


def _labelled_fasta(path, what: str):
    """(record, id, header fields, sequence) of a FASTA whose headers are ``>id label ...``: every record has
    a label (`what`, for the error) and a unique id."""
    seen: set = set()
    for record, header, seq in read_fasta(path):
        fields = header.split()
        if len(fields) < 2:
            raise InputError(f"{path}: record {record} ({fields[0]}): no {what} in the header")
        check_unique(path, record, fields[0], seen)
        yield record, fields[0], fields, seq


def read_protein(path: str | os.PathLike, labels: list[str] | None) -> list[tuple[str, str, int | float]]:
    """FASTA ``>id label``; label is a class index into `labels`, or a finite float when `labels` is None."""
    out = []
    for record, ident, fields, seq in _labelled_fasta(path, "label"):
        check_seq(path, record, ident, seq)
        if labels is None:
            if not is_finite_number(fields[1]):
                raise InputError(
                    f"{path}: record {record} ({ident}): label {fields[1]!r} is not a finite number"
                )
            label = float(fields[1])
        else:
            if not fields[1].isdigit() or int(fields[1]) >= len(labels):
                raise InputError(
                    f"{path}: record {record} ({ident}): label {fields[1]!r} is not a class "
                    f"index 0..{len(labels) - 1}"
                )
            label = int(fields[1])
        out.append((ident, seq, label))
    return _nonempty(path, out)


def read_residue(path: str | os.PathLike, label_chars: str) -> list[tuple[str, str, str]]:
    """3line ``>id`` / sequence / labels; every label character must be in `label_chars`."""
    out, seen = [], set()
    for record, header, seq, labels in read_3line(path):
        ident = header.split()[0] if header.split() else "?"
        check_unique(path, record, ident, seen)
        check_seq(path, record, ident, seq)
        bad = set(labels) - set(label_chars)
        if bad:
            raise InputError(
                f"{path}: record {record} ({ident}): labels {''.join(sorted(bad))!r} outside {label_chars!r}"
            )
        out.append((ident, seq, labels))
    return _nonempty(path, out)


def read_domains(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """Domain FASTA ``>id sccs [...]`` (ASTRAL headers work as is) -> [(id, sccs, seq)]."""
    out = []
    for record, ident, fields, seq in _labelled_fasta(path, "sccs label"):
        _check_sccs(path, record, ident, fields[1])
        check_seq(path, record, ident, seq)
        out.append((ident, fields[1], seq.upper()))
    return _nonempty(path, out)


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str, str, str, int]]:
    """Pair TSV with the PLUS/Bepler header -> [(idA, idB, seqA, seqB, level)]; extra columns are ignored."""
    out, cols = [], None
    for line_no, line in iter_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if cols is None:
            missing = [c for c in PAIR_HEADER if c not in fields]
            if missing:
                raise InputError(f"{path}: line {line_no}: header lacks column(s) {', '.join(missing)}")
            cols = [fields.index(c) for c in PAIR_HEADER]
            continue
        record = len(out) + 1
        if len(fields) <= max(cols):
            raise InputError(
                f"{path}: record {record} (line {line_no}): {len(fields)} columns, "
                f"expected {len(PAIR_HEADER)}"
            )
        id_a, id_b, seq_a, seq_b, level = (fields[c].strip() for c in cols)
        for ident, seq in ((id_a, seq_a), (id_b, seq_b)):
            check_seq(path, f"{record} (line {line_no})", ident, seq)
        if level not in ("0", "1", "2", "3", "4"):
            raise InputError(
                f"{path}: record {record} (line {line_no}, {id_a}/{id_b}): similarity {level!r} "
                "is not a level 0-4"
            )
        out.append((id_a, id_b, seq_a.upper(), seq_b.upper(), int(level)))
    if cols is None:
        raise InputError(f"{path}: empty file (no header)")
    return _nonempty(path, out)


# -- writing ---------------------------------------------------------------------------------------------


def protein_lines(records) -> list[str]:
    return [f">{ident} {label}\n{seq}\n" for ident, seq, label in records]


def residue_lines(records) -> list[str]:
    return [f">{ident}\n{seq}\n{labels}\n" for ident, seq, labels in records]


def domain_lines(records) -> list[str]:
    return [f">{ident} {sccs}\n{seq}\n" for ident, sccs, seq in records]


def pair_lines(pairs) -> list[str]:
    return ["\t".join(PAIR_HEADER) + "\n"] + [f"{a}\t{b}\t{sa}\t{sb}\t{lv}\n" for a, b, sa, sb, lv in pairs]


def write_task(outdir: str | os.PathLike, manifest: dict, files: dict[str, list[str]]) -> dict:
    """Write the split files and manifest.json of a task directory, all or nothing.

    Files are written to a temporary directory beside `outdir` and re-read with the readers above; only when
    all pass are they renamed into `outdir`, manifest.json last.
    """
    outdir = Path(outdir)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        for name, lines in files.items():
            with open(tmp / name, "w", encoding="ascii", newline="\n") as fh:
                fh.writelines(lines)
        write_json(tmp / "manifest.json", manifest)
        checked = load_manifest(tmp)
        for name in files:
            read_split(tmp, name, checked)
        outdir.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.replace(tmp / name, outdir / name)
        os.replace(tmp / "manifest.json", outdir / "manifest.json")
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return manifest
