"""TAPE (Rao et al. 2019) regression tasks, stability and fluorescence -> protein tasks; and the readers of
TAPE's raw JSON archives (also secondary structure's) and of ProteinBERT's TAPE CSVs (the embedded files)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from plus.data.converters.archives import tar_members
from plus.data.converters.common import Converted, TaskData, require, seeded_split, subsample, write_split_task
from plus.io import InputError, is_finite_number, iter_lines

# TAPE's raw JSON archives of the PyTorch release (README since March 2020; bucket moved in August 2021, TAPE
# issue #112): <name>/<name>_<split>.json with `primary` as letters. config.yaml downloads these URLs.
TAPE_RAW_URL = "http://s3.amazonaws.com/songlabdata/proteindata/data_raw_pytorch/{}.tar.gz"


def _check_float(where, record, text) -> str:
    if not is_finite_number(text):
        raise InputError(f"{where}: record {record}: label {text!r} is not a finite number")
    return text


def seq_label_csv(path, prefix: str) -> list[tuple[str, str, str]]:
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


def tape_json(
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
    members = tar_members(archive, {s: f"{task}_{s}.json" for s in ("train", "valid", "test")})
    out = {}
    for split, member in members.items():
        recs = []
        for n, (ident, seq, value) in enumerate(
            tape_json(archive, member, value_key, f"tape_{split}", task), 1
        ):
            value = value[0] if isinstance(value, list) and len(value) == 1 else value
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InputError(
                    f"{archive}:{member.name}: record {n}: {value_key} {value!r} is not a number"
                )
            recs.append((ident, seq, _check_float(f"{archive}:{member.name}", n, repr(float(value)))))
        out[split] = recs
    return out


def _tape_canonical(task: str, data: TaskData, value_key: str, raw, outdir, seed, max_train) -> dict:
    """TAPE's train/valid/test JSON splits of `task` (declared by `data`), `value_key` as the label ->
    train/dev/test "tape"."""
    require(raw, data.canonical_artefacts, task, "canonical")
    s = _tape_regression(raw["archive"], task, value_key)
    return write_split_task(outdir, data.kind, Converted(
        task, "canonical", raw, seed, max_train, None,
        train=subsample(s["train"], max_train, seed), dev=s["valid"], tests={"tape": s["test"]},
        rules={"splits": "TAPE train/valid/test as released"},
    ))


# -- stability ---------------------------------------------------------------------------------------------


def convert_stability_embedded(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None) -> dict:
    """TAPE stability train/valid/test (complete) -> train/dev/test "tape".

    raw keys: train_csv, valid_csv, test_csv.
    """
    require(raw, STABILITY.embedded_files, "stability", "embedded")
    train = seq_label_csv(raw["train_csv"], "tape_train")
    dev = seq_label_csv(raw["valid_csv"], "tape_valid")
    test = seq_label_csv(raw["test_csv"], "tape_test")
    rules = {
        "splits": "TAPE train/valid/test as released",
        "max_train": "seeded sample of the training split",
    }
    return write_split_task(outdir, STABILITY.kind, Converted(
        "stability", "embedded", raw, seed, max_train, None,
        train=subsample(train, max_train, seed), dev=dev, tests={"tape": test}, rules=rules,
        notes="TAPE stability splits are complete here.",
    ))


def convert_stability_canonical(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None) -> dict:
    """TAPE raw stability.tar.gz (stability_{train,valid,test}.json, `stability_score`) -> train/dev/test
    "tape".

    raw key: archive.
    """
    return _tape_canonical("stability", STABILITY, "stability_score", raw, outdir, seed, max_train)


# -- fluorescence ------------------------------------------------------------------------------------------


def convert_fluorescence_embedded(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None,
                                  fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict:
    """TAPE fluorescence *validation* split (5,362) -> seeded train/dev/test "tape_valid_resplit".

    This is not TAPE's test set (27,217 genotypes with >= 4 mutations, not embedded). raw key: valid_csv.
    """
    require(raw, FLUORESCENCE.embedded_files, "fluorescence", "embedded")
    recs = seq_label_csv(raw["valid_csv"], "tape_valid")
    s = seeded_split(recs, range(len(recs)), fractions, seed, max_train)
    rules = {
        "splits": "TAPE validation split re-split at random (seeded) into train/dev/test "
        + "/".join(f"{f:g}" for f in fractions)
    }
    notes = (
        "Only TAPE's validation split is embedded; test 'tape_valid_resplit' is NOT TAPE's test set "
        "(which holds genotypes with >= 4 mutations)."
    )
    return write_split_task(outdir, FLUORESCENCE.kind, Converted(
        "fluorescence", "embedded", raw, seed, max_train, None,
        train=s["train"], dev=s["dev"], tests={"tape_valid_resplit": s["test"]}, rules=rules, notes=notes,
    ))


def convert_fluorescence_canonical(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None) -> dict:
    """TAPE raw fluorescence.tar.gz (`log_fluorescence`) -> train/dev/test "tape". raw key: archive."""
    return _tape_canonical("fluorescence", FLUORESCENCE, "log_fluorescence", raw, outdir, seed, max_train)


STABILITY = TaskData(
    "protein", convert_stability_embedded, convert_stability_canonical,
    {"train_csv": "stability.train.csv.gz", "valid_csv": "stability.valid.csv.gz",
     "test_csv": "stability.test.csv.gz"},
    {"archive": "tape_stability"},
    {"train": 53614, "dev": 2512, "test": {"tape": 12851}},
)
FLUORESCENCE = TaskData(
    "protein", convert_fluorescence_embedded, convert_fluorescence_canonical,
    {"valid_csv": "fluorescence.valid.csv.gz"},
    {"archive": "tape_fluorescence"},
    {"train": 21446, "dev": 5362, "test": {"tape": 27217}},
)
