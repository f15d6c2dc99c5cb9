"""Secondary structure: NetSurfP-2.0 (Klausen et al. 2019) 8-state DSSP labels -> residue task."""

from __future__ import annotations

from pathlib import Path

from plus.data.converters.archives import tar_members
from plus.data.converters.common import Converted, TaskData, require, seeded_split, subsample, write_split_task
from plus.data.converters.tape import tape_json
from plus.data.tasks import SS8
from plus.io import InputError, iter_lines

SS8_DIGITS = "01234567"  # label alphabet of the converted files: digit = index in SS8 (GHIBESTC)


def _ss8_digits(where, record, ident, states) -> str:
    bad = sorted(set(states) - set(SS8))
    if bad:
        raise InputError(
            f"{where}: record {record} ({ident}): DSSP state(s) {''.join(bad)!r} outside {SS8!r}"
        )
    return "".join(str(SS8.index(s)) for s in states)


def netsurfp_csv(path, prefix: str) -> list[tuple[str, str, str]]:
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
            raise InputError(f"{path}: record {record} ({ident}): sequence length {len(residues)} != label length "
                             f"{len(states)}")
        seq = "".join(residues).upper()
        if not seq.isalpha():
            raise InputError(f"{path}: record {record} ({ident}): non-letter characters in the sequence")
        out.append((ident, seq, _ss8_digits(path, record, ident, states)))
    if not out:
        raise InputError(f"{path}: empty file (no records)")
    return out


def convert_secstr_embedded(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None,
                            fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> dict:
    """NetSurfP-2.0 8-state CSVs: CB513 (511) -> seeded train/dev/test "cb513" (identical sequences kept in
    one split); TS115 (115) and CASP12 (20) -> tests "ts115", "casp12". Labels: digit = index in GHIBESTC.

    raw keys: cb513_csv, ts115_csv, casp12_csv.
    """
    require(raw, SECSTR.embedded_files, "secstr", "embedded")
    cb513 = netsurfp_csv(raw["cb513_csv"], "cb513")
    tests = {
        "ts115": netsurfp_csv(raw["ts115_csv"], "ts115"),
        "casp12": netsurfp_csv(raw["casp12_csv"], "casp12"),
    }
    s = seeded_split(cb513, [seq for _, seq, _ in cb513], fractions, seed, max_train)
    tests = {"cb513": s["test"], **tests}
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
    return write_split_task(outdir, SECSTR.kind, Converted(
        "secstr", "embedded", raw, seed, max_train, list(SS8),
        train=s["train"], dev=s["dev"],
        tests=tests, rules=rules, notes=notes, extra={"label_chars": SS8_DIGITS},
    ))


def convert_secstr_canonical(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None) -> dict:
    """TAPE raw secondary_structure.tar.gz: train/valid -> train/dev, cb513/casp12/ts115 -> tests; labels =
    the `ss8` ids (NetSurfP order GHIBESTC) as digits. raw key: archive.
    """
    require(raw, SECSTR.canonical_artefacts, "secstr", "canonical")
    archive = raw["archive"]
    names = ("train", "valid", "cb513", "casp12", "ts115")
    members = tar_members(archive, {s: f"secondary_structure_{s}.json" for s in names})
    out = {}
    for split, member in members.items():
        recs = []
        for n, (ident, seq, ss8) in enumerate(tape_json(archive, member, "ss8", split, "secondary_structure"), 1):
            if not isinstance(ss8, list) or len(ss8) != len(seq):
                raise InputError(
                    f"{archive}:{member.name}: record {n} ({ident}): ss8 length != sequence length"
                )
            if any(not isinstance(v, int) or not 0 <= v < 8 for v in ss8):
                raise InputError(f"{archive}:{member.name}: record {n} ({ident}): ss8 value outside 0-7")
            recs.append((ident, seq, "".join(map(str, ss8))))
        out[split] = recs
    return write_split_task(outdir, SECSTR.kind, Converted(
        "secstr", "canonical", raw, seed, max_train, list(SS8),
        train=subsample(out["train"], max_train, seed), dev=out["valid"],
        tests={name: out[name] for name in ("cb513", "casp12", "ts115")},
        rules={"splits": "TAPE/NetSurfP-2.0 train/valid as train/dev; CB513, CASP12, TS115 tests"},
        extra={"label_chars": SS8_DIGITS},
    ))


SECSTR = TaskData(
    "residue", convert_secstr_embedded, convert_secstr_canonical,
    {f"{name.lower()}_csv": f"netsurfp2_hhblits_csv/{name}_HHblits.csv.gz" for name in ("CB513", "TS115", "CASP12")},
    {"archive": "tape_secondary_structure"},
    {"train": 8678, "dev": 2170, "test": {"cb513": 513, "casp12": 21, "ts115": 115}},
)
