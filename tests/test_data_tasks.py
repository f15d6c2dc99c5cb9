"""Task converters and readers (plus.data.converters, plus.data.convert, plus.data.tasks) on the real embedded
data."""

import argparse
import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from plus.data import convert as C
from plus.data.converters import DATA, register
from plus.data.converters.tape import TAPE_RAW_URL
from plus.data.tasks import (
    LOCALIZATION_CLASSES,
    load_manifest,
    load_task,
    read_domains,
    read_split,
    scop_level,
)
from plus.io import InputError, read_3line, read_fasta, umask

ROOT = Path(__file__).resolve().parents[1]
EMB = ROOT / "data" / "embedded"
FIX = Path(__file__).parent / "fixtures" / "canonical"

EXPECTED = {
    "solubility": (6248, 694, {"deepsol": 2001}),
    "localization": (1510, 168, {"deeploc": 2768}),  # the 23 Cytoplasm-Nucleus records labelled Cytoplasm
    "stability": (53614, 2512, {"tape": 12851}),
    "fluorescence": (4290, 536, {"tape_valid_resplit": 536}),
    "secstr": (358, 51, {"cb513": 102, "ts115": 115, "casp12": 20}),
    "transmembrane": (418, 60, {"topcons2_3d": 120}),
    "homology": (377, 269, {"id40": 939, "id25": 1000}),
}


def _convert(task, outdir, seed=0, **kw):
    return C.convert_task(task, "embedded", C.embedded_raw(task, EMB), outdir, seed, **kw)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    return {task: (root / task, _convert(task, root / task)) for task in list(DATA)}


def _all(task_dir, manifest, split):
    return read_split(task_dir, manifest["splits"][split])


@pytest.mark.parametrize("task", list(DATA))
def test_counts_and_disjoint_splits(converted, task):
    task_dir, manifest = converted[task]
    train, dev, tests = EXPECTED[task]
    assert load_manifest(task_dir) == manifest
    assert (manifest["counts"]["train"], manifest["counts"]["dev"], manifest["counts"]["test"]) == (
        train,
        dev,
        tests,
    )
    data = load_task(task_dir)
    sizes = {name: len(data.read(f)) for name, f in data.tests.items()}
    assert sizes == tests
    if manifest["kind"] != "pair":
        ids = [{r[0] for r in data.read(f)} for f in [manifest["splits"]["train"], manifest["splits"]["dev"]]]
        ids += [{r[0] for r in data.read(f)} for f in data.tests.values()]
        assert sum(map(len, ids)) == len(set().union(*ids))


def test_solubility_records(converted):
    task_dir, m = converted["solubility"]
    test = {r[0]: r for r in read_split(task_dir, m["splits"]["test"]["deepsol"])}
    assert test["deepsol_test_266"][1:] == ("MKLKQVADKLEEVASKLYHNANELARVAKLLGER", 1)
    assert {r[2] for r in test.values()} == {0, 1}
    assert sum(r[2] for r in test.values()) == 1000


def test_localization_labels_and_truncation(converted):
    task_dir, m = converted["localization"]
    test = {r[0]: r for r in read_split(task_dir, m["splits"]["test"]["deeploc"])}
    assert test["Q9H400"][2] == LOCALIZATION_CLASSES.index("Cell.membrane") == 0
    assert test["P53747"][2] == 5  # Lysosome/Vacuole-M
    assert sorted({r[2] for r in test.values()}) == list(range(10))
    dual = [h.split()[0] for _, h, _ in read_fasta(EMB / "localization/deeploc_our_val_set.fasta.gz")
            if h.split()[1].startswith("Cytoplasm-Nucleus")]
    assert len(dual) == 23 and m["dropped"] == {}
    assert m["relabelled"] == {"train_fasta: Cytoplasm-Nucleus -> Cytoplasm": len(dual)}
    assert m["fidelity"] == {"data_localization_dual_as_first": True}
    pool = {r[0]: r[2] for f in (m["splits"]["train"], m["splits"]["dev"]) for r in read_split(task_dir, f)}
    assert {pool[k] for k in dual} == {LOCALIZATION_CLASSES.index("Cytoplasm")}
    raw = {h.split()[0]: s for _, h, s in read_fasta(EMB / "localization/deeploc_test_set.fasta.gz")}
    long_ids = [k for k, s in raw.items() if len(s) > 1000]
    assert long_ids and all(test[k][1] == raw[k][:500] + raw[k][-500:] for k in long_ids)
    assert max(len(r[1]) for r in test.values()) == 1000


def test_regression_records(converted):
    task_dir, m = converted["stability"]
    dev = read_split(task_dir, m["splits"]["dev"])
    assert dev[0][:2] == ("tape_valid_1", "GRVEYGNKEWEFDDDKQVEEFVKKLASKLNVQVEEHNGTFKLKLESSGGS")
    assert dev[0][2] == pytest.approx(-0.009999999776482)
    task_dir, m = converted["fluorescence"]
    assert "NOT TAPE's test set" in m["notes"]
    assert all(isinstance(r[2], float) for r in read_split(task_dir, m["splits"]["train"]))


def test_secstr_digits(converted):
    task_dir, m = converted["secstr"]
    recs = [
        r
        for f in [m["splits"]["train"], m["splits"]["dev"], *m["splits"]["test"].values()]
        for r in read_split(task_dir, f)
    ]
    hit = [r for r in recs if r[1] == "TTYADFIASGRTGRRNAIHD"]
    assert [r[2] for r in hit] == ["71111116557757777777"]  # DSSP CHHHHHHTSSCCSCCCCCCC
    assert set("".join(r[2] for r in recs)) == set("01234567")
    train_seqs = {r[1] for r in read_split(task_dir, m["splits"]["train"])}
    assert not train_seqs & {r[1] for r in read_split(task_dir, m["splits"]["test"]["cb513"])}


def test_transmembrane_records(converted):
    task_dir, m = converted["transmembrane"]
    assert m["dropped"] == {"records with L": 45, "records with X": 37}
    recs = {
        r[0]: r
        for f in [m["splits"]["train"], m["splits"]["dev"], m["splits"]["test"]["topcons2_3d"]]
        for r in read_split(task_dir, f)
    }
    assert "3D_P60844|2abmA" not in recs  # has L (re-entrant loop) labels: dropped, not relabelled
    raw = {h: (s, lab) for _, h, s, lab in read_3line(EMB / "transmembrane/3D_struct_DB.3line.gz")}
    assert recs["3D_P23979|4pirA"][1:] == raw["3D_P23979|4pirA"]
    assert recs["3D_P23979|4pirA"][2].startswith("O" * 60)
    assert set("".join(r[2] for r in recs.values())) == set("IOM")


def test_homology_pairs(converted):
    task_dir, m = converted["homology"]
    assert scop_level("a.1.1.1", "a.1.1.2") == 3  # d1dlya_ vs d1sctb_: same superfamily
    assert scop_level("a.1.1.1", "a.1.1.1") == 4 and scop_level("a.1.1.1", "b.1.1.1") == 0
    doms = {n: read_domains(task_dir / f) for n, f in m["domains"].items()}
    train_ids = {d[0] for d in doms["train"]}
    for name in ("dev", "id40", "id25"):
        assert not train_ids & {d[0] for d in doms[name]}
    for name, f in [("dev", m["splits"]["dev"]), *m["splits"]["test"].items()]:
        sccs = {d[0]: d[1] for d in doms[name]}
        pairs = read_split(task_dir, f)
        assert {p[4] for p in pairs} == {0, 1, 2, 3, 4}
        assert all(p[4] == scop_level(sccs[p[0]], sccs[p[1]]) and p[0] != p[1] for p in pairs)
    assert m["contact_maps"] is None and "contact-map loss is unavailable" in m["notes"]
    header = (task_dir / "dev_pairs.tsv").read_text().splitlines()[0]
    assert header == "pdb_id_A\tpdb_id_B\tsequence_A\tsequence_B\tsimilarity"


@pytest.mark.parametrize("task", ["solubility", "secstr", "transmembrane", "homology", "fluorescence"])
def test_deterministic(converted, tmp_path, task):
    task_dir, _ = converted[task]
    _convert(task, tmp_path / "again")
    files = sorted(p.name for p in task_dir.iterdir())
    assert files == sorted(p.name for p in (tmp_path / "again").iterdir())
    assert all((task_dir / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in files)
    _convert(task, tmp_path / "other", seed=1)
    train = next(task_dir.glob("train.*")).name
    assert (task_dir / train).read_bytes() != (tmp_path / "other" / train).read_bytes()


def test_max_train(converted, tmp_path):
    m = _convert("stability", tmp_path / "s", max_train=100)
    small = read_split(tmp_path / "s", "train.fa")
    assert m["counts"]["train"] == len(small) == 100
    full = {r[0]: r for r in read_split(converted["stability"][0], "train.fa")}
    assert all(full[r[0]] == r for r in small)
    assert _convert("stability", tmp_path / "t", max_train=100)["counts"] == m["counts"]
    assert (tmp_path / "s/train.fa").read_bytes() == (tmp_path / "t/train.fa").read_bytes()


# -- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, split, text, needle",
    [
        ("solubility", "dev.fa", ">a 1\nMKV\n>b\nMKV\n", "record 2 (b): no label"),
        ("solubility", "dev.fa", ">a 1\nMKV\n>b 2\nMKV\n", "record 2 (b): label '2'"),
        ("stability", "dev.fa", ">a 0.5\nMKV\n>b nan\nMKV\n", "record 2 (b): label 'nan'"),
        ("solubility", "dev.fa", ">a 1\nMKV\n>a 0\nMKV\n", "record 2 (a): duplicate identifier"),
        ("solubility", "dev.fa", "", "empty file"),
        (
            "secstr",
            "dev.3line",
            ">a\nMKV\n777\n>b\nMKV\n77\n",
            "record 2 (b): sequence length 3 != label length 2",
        ),
        ("secstr", "dev.3line", ">a\nMKV\n778\n", "record 1 (a): labels '8'"),
        ("transmembrane", "dev.3line", ">a\nMKV\nIOS\n", "record 1 (a): labels 'S'"),
        (
            "homology",
            "dev_pairs.tsv",
            "pdb_id_A\tpdb_id_B\tsequence_A\tsequence_B\tsimilarity\na\tb\tMK\tMV\t5\n",
            "record 1 (line 2, a/b): similarity '5'",
        ),
        ("homology", "train.fa", ">d1 a.1.1.1\nMKV\n>d2\nMKV\n", "record 2 (d2): no sccs label"),
    ],
)
def test_reader_errors(converted, tmp_path, task, split, text, needle):
    task_dir = tmp_path / task
    shutil.copytree(converted[task][0], task_dir)
    (task_dir / split).write_text(text)
    with pytest.raises(InputError) as err:
        read_split(task_dir, split)
    assert str(task_dir / split) in str(err.value) and needle in str(err.value)


def _corrupt_raw(tmp_path, task, key, text):
    raw = C.embedded_raw(task, EMB)
    bad = tmp_path / f"bad_{key}"
    bad.write_text(text)
    return {**raw, key: bad}, bad


@pytest.mark.parametrize(
    "task, key, make, needle",
    [
        ("solubility", "test_tgt", lambda: "1\n" * 2000 + "2\n", "record 2001 (line 2001): label '2'"),
        ("solubility", "test_tgt", lambda: "1\n" * 10, "2001 sequences but"),
        (
            "localization",
            "test_fasta",
            lambda: ">P1 Nucleus-U test\nMKV\n>P2 Nucleolus-U test\nMKV\n",
            "record 2 (P2): location 'Nucleolus-U'",
        ),
        (
            "localization",
            "test_fasta",
            lambda: ">P1 Nucleus-U test\nMKV\n>P1 Nucleus-U test\nMKV\n",
            "record 2 (P1): duplicate identifier",
        ),
        ("stability", "test_csv", lambda: "seq,label\nMKV,0.1\nMKV,\n", "record 2 (line 3)"),
        (
            "secstr",
            "casp12_csv",
            lambda: "input, dssp3, dssp8, disorder, cb513_mask\nM K V,C C C,C X C,1 1 1,1 1 1\n",
            "record 1 (casp12_1): DSSP state(s) 'X'",
        ),
        (
            "secstr",
            "casp12_csv",
            lambda: "input, dssp3, dssp8, disorder, cb513_mask\nM K V,C C,C C,1 1,1 1\n",
            "record 1 (casp12_1): sequence length 3 != label length 2",
        ),
        ("transmembrane", "threeline", lambda: ">a\nMKV\nIOM\n>b\nMKV\nIOZ\n", "record 2 (b): label(s) 'Z'"),
        (
            "transmembrane",
            "threeline",
            lambda: ">a\nMKV\nIOM\n>b\nMKV\nIO\n",
            "record 2 (b): sequence length",
        ),
        (
            "homology",
            "id25",
            lambda: ">d1 a.1.1.1\nMKV\n>d1 a.1.1.2\nMKV\n",
            "record 2 (d1): duplicate identifier",
        ),
        ("homology", "id40", lambda: "", "empty file"),
    ],
)
def test_converter_errors_leave_no_output(tmp_path, task, key, make, needle):
    raw, bad = _corrupt_raw(tmp_path, task, key, make())
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        C.convert_task(task, "embedded", raw, out, 0)
    assert needle in str(err.value)
    assert str(bad) in str(err.value)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]


def test_a_registered_task_reaches_the_dispatcher_and_the_cli(tmp_path):
    """`register` adds a declaration at run time (here solubility's converters under another name)."""
    declared = list(DATA)
    register("solubility_copy", DATA["solubility"])
    try:
        with pytest.raises(ValueError, match="already declared"):
            register("solubility_copy", DATA["solubility"])
        raw = C.embedded_raw("solubility", EMB)
        m = C.convert_task("solubility_copy", "embedded", raw, tmp_path / "copy", 0, max_train=10)
        assert m["counts"]["train"] == 10
        parser = argparse.ArgumentParser()
        C.add_parser(parser.add_subparsers())
        args = parser.parse_args(["convert", "--task", "solubility_copy", "--source", "embedded", "--raw",
                                  *[f"{k}={v}" for k, v in raw.items()], "--outdir", str(tmp_path / "cli")])
        assert args.func(args) == 0
        assert load_manifest(tmp_path / "cli")["counts"] == {**m["counts"], "train": EXPECTED["solubility"][0]}
    finally:
        del DATA["solubility_copy"]
    assert list(DATA) == declared


def test_missing_raw_key(tmp_path):
    with pytest.raises(InputError, match="missing --raw key"):
        C.convert_task("secstr", "embedded", {"cb513_csv": EMB / "secstr"}, tmp_path / "o", 0)


# -- canonical formats (tiny fixtures of real records in the releases' layouts) ----------------------------

CANONICAL_RAW = {
    "solubility": {k: FIX / "deepsol" / k for k in DATA["solubility"].canonical_artefacts},
    "localization": {"fasta": FIX / "deeploc_data.fasta"},
    "stability": {"archive": FIX / "stability.tar.gz"},
    "fluorescence": {"archive": FIX / "fluorescence.tar.gz"},
    "secstr": {"archive": FIX / "secondary_structure.tar.gz"},
    "transmembrane": {"archive": FIX / "transmembrane.tar.gz"},
    "homology": {"archive": FIX / "scope.tar.gz"},
}
CANONICAL_COUNTS = {
    "solubility": (6, 4, {"deepsol": 4}),
    "localization": (6, 1, {"deeploc": 3}),
    "stability": (3, 3, {"tape": 3}),
    "fluorescence": (3, 3, {"tape": 3}),
    "secstr": (3, 2, {"cb513": 2, "casp12": 2, "ts115": 2}),
    "transmembrane": (3, 1, {"topcons2": 1}),  # the SP+TM and Globular+SP records (with S) dropped
    "homology": (6, 3, {"2.06": 3, "2.07": 15}),
}


def _scope_member(suffix: str) -> str:
    with tarfile.open(FIX / "scope.tar.gz") as tf:
        (member,) = [m for m in tf.getmembers() if m.name.endswith(suffix)]
        return tf.extractfile(member).read().decode()


def _topcons2_sets() -> dict[str, list[tuple[str, str]]]:
    """{set: [(id, labels)]} of the TOPCONS2 fixture, read from the archive itself."""
    out = {}
    with tarfile.open(FIX / "transmembrane.tar.gz") as tf:
        for m in tf.getmembers():
            lines = tf.extractfile(m).read().decode().split()
            out[Path(m.name).stem] = [(lines[k][1:], lines[k + 2]) for k in range(0, len(lines), 3)]
    return out


@pytest.mark.parametrize("task", list(DATA))
def test_canonical_converters(tmp_path, task):
    m = C.convert_task(task, "canonical", CANONICAL_RAW[task], tmp_path / task, 0)
    counts = (m["counts"]["train"], m["counts"]["dev"], m["counts"]["test"])
    assert counts == CANONICAL_COUNTS[task]
    expected = DATA[task].expected_counts
    assert set(expected["test"]) == set(m["splits"]["test"])
    data = load_task(tmp_path / task)
    assert all(len(data.read(f)) == n for f, n in zip(data.tests.values(), counts[2].values(), strict=True))


def test_canonical_records(tmp_path):
    m = C.convert_task("localization", "canonical", CANONICAL_RAW["localization"], tmp_path / "loc", 0)
    assert m["relabelled"] == {"fasta: Cytoplasm-Nucleus -> Cytoplasm": 2} and m["dropped"] == {}
    test = read_split(tmp_path / "loc", "test_deeploc.fa")
    assert test[0][0] == "Q9H400" and test[0][2] == 0
    assert max(len(r[1]) for r in read_split(tmp_path / "loc", "train.fa")) == 1000
    C.convert_task("secstr", "canonical", CANONICAL_RAW["secstr"], tmp_path / "ss", 0)
    with tarfile.open(FIX / "secondary_structure.tar.gz") as tf:
        first = json.load(tf.extractfile("secondary_structure/secondary_structure_cb513.json"))[0]
    rec = read_split(tmp_path / "ss", "test_cb513.3line")[0]
    assert rec[1:] == (first["primary"], "".join(map(str, first["ss8"])))
    m = C.convert_task("homology", "canonical", CANONICAL_RAW["homology"], tmp_path / "h", 0)
    assert m["contact_maps"]["2.06"] == {"dir": "cmap_2.06", "pngs": 1}
    assert (tmp_path / "h/cmap_2.06/dl/d1dlya_.png").read_bytes().startswith(b"\x89PNG")
    made = tmp_path / "made"
    made.mkdir()
    assert (tmp_path / "h/cmap_2.06").stat().st_mode == made.stat().st_mode  # built in a tempdir, umask's mode
    for path in (tmp_path / "h").iterdir():  # manifest.json and the split files too (atomic writes)
        if path.is_file():
            assert path.stat().st_mode & 0o777 == 0o666 & ~umask(), path.name
    pairs = read_split(tmp_path / "h", "test_2.07_pairs.tsv")
    raw_pairs = _scope_member("2.07-new.allpairs.txt").splitlines()
    assert raw_pairs[0].split("\t") == ["pdb_id_A", "pdb_id_B", "sequence_A", "sequence_B", "scop_A", "scop_B",
                                        "similarity"]  # Bepler's 7 columns
    assert [(p[0], p[1], p[4]) for p in pairs] == [(r.split("\t")[0], r.split("\t")[1], int(r.split("\t")[6]))
                                                  for r in raw_pairs[1:]]
    # the test domains themselves (for embeddings): 2.06 test and 2.07-new FASTAs, with their sccs
    assert m["domains"] == {"train": "train.fa", "test_2.06": "test_2.06.fa", "test_2.07": "test_2.07.fa"}
    new = read_split(tmp_path / "h", "test_2.07.fa")
    assert {r[0] for r in new} == {p[0] for p in pairs} | {p[1] for p in pairs}
    assert all(len(r[2].split(".")) == 4 for r in new)


def test_cli(tmp_path):
    parser = argparse.ArgumentParser()
    C.add_parser(parser.add_subparsers())
    raw = [f"{k}={v}" for k, v in C.embedded_raw("secstr", EMB).items()]
    args = parser.parse_args(
        [
            "convert",
            "--task",
            "secstr",
            "--source",
            "embedded",
            "--raw",
            *raw,
            "--outdir",
            str(tmp_path / "ss"),
            "--seed",
            "3",
            "--max-train",
            "50",
        ]
    )
    assert args.func(args) == 0
    m = load_manifest(tmp_path / "ss")
    assert (m["seed"], m["counts"]["train"]) == (3, 50)
    args = parser.parse_args(
        [
            "convert",
            "--task",
            "secstr",
            "--source",
            "embedded",
            "--raw",
            "cb513_csv",
            "--outdir",
            str(tmp_path / "x"),
        ]
    )
    with pytest.raises(InputError, match="expected KEY=PATH"):
        args.func(args)


# -- reference behaviour vs `corrected` (reference_fidelity data_* switches) ------------------------------


def _dual_records(path) -> list[str]:
    return [h.split()[0] for _, h, _ in read_fasta(path) if h.split()[1].startswith("Cytoplasm-Nucleus")]


@pytest.mark.parametrize("source", ["embedded", "canonical"])
def test_localization_dual_locations_reference_and_corrected(tmp_path, source):
    raw = C.embedded_raw("localization", EMB) if source == "embedded" else CANONICAL_RAW["localization"]
    dual = sum(len(_dual_records(p)) for p in raw.values())
    assert dual > 0
    ref = C.convert_task("localization", source, raw, tmp_path / "ref", 0)
    fixed = C.convert_task("localization", source, raw, tmp_path / "fixed", 0,
                           fidelity={"data_localization_dual_as_first": False})
    assert sum(ref["relabelled"].values()) == dual and ref["dropped"] == {}
    assert sum(fixed["dropped"].values()) == dual and fixed["relabelled"] == {}
    assert all("-> Cytoplasm" in k for k in ref["relabelled"]) and all(k.endswith("Cytoplasm-Nucleus")
                                                                      for k in fixed["dropped"])
    assert fixed["fidelity"] == {"data_localization_dual_as_first": False}
    n = {m["fidelity"]["data_localization_dual_as_first"]: m["counts"]["train"] + m["counts"]["dev"]
         + sum(m["counts"]["test"].values()) for m in (ref, fixed)}
    assert n[True] - n[False] == dual
    assert "first part" in ref["rules"]["dual locations"] and "dropped" in fixed["rules"]["dual locations"]


def test_transmembrane_signal_peptides_reference_and_corrected(tmp_path):
    sets = _topcons2_sets()
    with_s = {name: sum("S" in lab for _, lab in recs) for name, recs in sets.items()}
    assert with_s["SP+TM"] == len(sets["SP+TM"]) > 0 and with_s["Globular+SP"] == len(sets["Globular+SP"]) > 0
    assert with_s["TM"] == with_s["Globular"] == 0
    raw = CANONICAL_RAW["transmembrane"]
    ref = C.convert_task("transmembrane", "canonical", raw, tmp_path / "ref", 0)
    fixed = C.convert_task("transmembrane", "canonical", raw, tmp_path / "fixed", 0,
                           fidelity={"data_transmembrane_drop_signal_peptides": False})
    # the reference's I/O/M-only data: every record with S dropped, so both SP sets vanish
    assert ref["dropped"] == {f"{name}: records with S": n for name, n in with_s.items() if n}
    assert ref["rules"]["sets kept"] == {name: len(recs) - with_s[name] for name, recs in sets.items()}
    assert ref["relabelled"] == {}
    # corrected: all four sets, full length, S residues labelled O
    assert fixed["dropped"] == {} and fixed["rules"]["sets kept"] == {n: len(r) for n, r in sets.items()}
    residues = {name: sum(lab.count("S") for _, lab in recs) for name, recs in sets.items()}
    for name, n in with_s.items():
        if n:
            assert fixed["relabelled"][f"{name}: records with S: signal peptide labelled O"] == n
            assert fixed["relabelled"][f"{name}: residues S -> O"] == residues[name]
    total = {m["fidelity"]["data_transmembrane_drop_signal_peptides"]: m["counts"]["train"] + m["counts"]["dev"]
             + m["counts"]["test"]["topcons2"] for m in (ref, fixed)}
    assert total == {True: sum(len(r) - with_s[n] for n, r in sets.items()), False: sum(map(len, sets.values()))}
    recs = {r[0]: r for f in ("train.3line", "dev.3line", "test_topcons2.3line")
            for r in read_split(tmp_path / "fixed", f)}
    ident, labels = sets["SP+TM"][0]
    assert recs[f"SP+TM:{ident}"][2] == labels.replace("S", "O")


def test_transmembrane_canonical_rejects_letters_bepler_never_used(tmp_path):
    """TOPCONS2 sets hold I/O/M/S only (Bepler's encoder raises on anything else): an L stops the converter."""
    archive = tmp_path / "transmembrane.tar.gz"
    with tarfile.open(FIX / "transmembrane.tar.gz") as src, tarfile.open(archive, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name.endswith("/TM.3line"):
                lines = data.decode().split("\n")
                lines[2] = "L" + lines[2][1:]
                data = "\n".join(lines).encode()
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    with pytest.raises(InputError, match=r"TM\.3line: record 1 \(TM:.*\): label\(s\) 'L' outside 'IOMS'"):
        C.convert_task("transmembrane", "canonical", {"archive": archive}, tmp_path / "o", 0)
    assert not (tmp_path / "o").exists()


def test_homology_2_07_sampled_by_default_or_all(tmp_path):
    raw_levels = [int(r.split("\t")[6]) for r in _scope_member("2.07-new.allpairs.txt").splitlines()[1:]]
    every = C.convert_task("homology", "canonical", CANONICAL_RAW["homology"], tmp_path / "all", 0,
                           contact_maps=False, test_2_07="all")
    assert every["counts"]["test"]["2.07"] == len(raw_levels)
    sampled = C.convert_task("homology", "canonical", CANONICAL_RAW["homology"], tmp_path / "s", 0,
                             contact_maps=False, n_pairs_test=5)
    quota = 5 // 5
    assert sampled["counts"]["pairs_per_level"]["2.07"] == [min(quota, raw_levels.count(k)) for k in range(5)]
    assert "sampled" in sampled["rules"]["test 2.07"] and "all" in every["rules"]["test 2.07"]
    C.convert_task("homology", "canonical", CANONICAL_RAW["homology"], tmp_path / "s2", 0,
                   contact_maps=False, n_pairs_test=5)
    assert (tmp_path / "s/test_2.07_pairs.tsv").read_bytes() == (tmp_path / "s2/test_2.07_pairs.tsv").read_bytes()


def test_unknown_data_switch_is_rejected(tmp_path):
    with pytest.raises(InputError, match="data_localization_typo=True is not a boolean data switch"):
        C.convert_task("localization", "canonical", CANONICAL_RAW["localization"], tmp_path / "o", 0,
                       fidelity={"data_localization_typo": True})
    with pytest.raises(InputError, match="is not a boolean data switch"):
        C.convert_task("secstr", "canonical", CANONICAL_RAW["secstr"], tmp_path / "o", 0,
                       fidelity={"data_localization_dual_as_first": False})


# -- TAPE archive generations -----------------------------------------------------------------------------


@pytest.mark.parametrize("task, name", [("stability", "stability"), ("fluorescence", "fluorescence"),
                                        ("secstr", "secondary_structure")])
def test_tensorflow_era_tape_archive_names_the_right_url(tmp_path, task, name):
    archive = FIX / "tape_tf_era" / f"{name}.tar.gz"
    with tarfile.open(archive) as tf:  # the fixture really is the old encoding: token ids, same member names
        first = json.load(tf.extractfile(f"{name}/{name}_train.json"))[0]
    assert isinstance(first["primary"], list) and all(isinstance(i, int) for i in first["primary"])
    with pytest.raises(InputError) as err:
        C.convert_task(task, "canonical", {"archive": archive}, tmp_path / task, 0)
    msg = str(err.value)
    assert "\n" not in msg and "TensorFlow-era" in msg
    assert f"http://s3.amazonaws.com/songlabdata/proteindata/data_raw_pytorch/{name}.tar.gz" in msg
    assert not (tmp_path / task).exists()


def test_config_downloads_the_pytorch_tape_archives():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())["downloads"]
    for artefact, name in [("tape_stability", "stability"), ("tape_fluorescence", "fluorescence"),
                           ("tape_secondary_structure", "secondary_structure")]:
        urls = config[artefact].get("urls") or [config[artefact]["url"]]
        assert urls == [TAPE_RAW_URL.format(name)]


def test_tape_member_that_is_a_gzip_file_is_named(tmp_path):
    """TAPE issue #49: stability_test.json once was a gzipped tar; the converter says so in one line."""
    archive = tmp_path / "stability.tar.gz"
    with tarfile.open(FIX / "stability.tar.gz") as src, tarfile.open(archive, "w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name.endswith("_test.json"):
                data = gzip.compress(data)
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    with pytest.raises(InputError, match="stability_test.json: a gzip file, not JSON .*TAPE issue #49"):
        C.convert_task("stability", "canonical", {"archive": archive}, tmp_path / "o", 0)
