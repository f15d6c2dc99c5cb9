"""Users' own tasks from config alone (custom_tasks:): conversion, its one-line errors, the registry entries
of the three kinds, training and evaluation through the `plus` command, and the workflow's config checks."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from plus import cli
from plus.data.converters import DATA
from plus.data.tasks import load_manifest, read_split
from plus.tasks import custom
from plus.tasks.registry import SUPPORTED, TASKS

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "data/examples/membrane"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@pytest.fixture(autouse=True)
def registry_restored():
    """Registering a user's task changes the process-wide registry: restore it after each test."""
    tasks, data, supported = dict(TASKS), dict(DATA), set(SUPPORTED)
    yield
    SUPPORTED.clear()
    SUPPORTED.update(supported)
    TASKS.clear()
    TASKS.update(tasks)
    DATA.clear()
    DATA.update(data)


def write_csv(path: Path, rows, header=("sequence", "label")) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def convert(tmp_path, kind, train, test, dev=None, name="mytask"):
    """`plus --custom-task NAME=KIND data convert ...`: (exit code, stderr, output directory)."""
    out = tmp_path / "out"
    raw = [f"train={train}", *(f"test_{k}={v}" for k, v in test.items())] if isinstance(test, dict) else \
        [f"train={train}", f"test={test}"]
    raw += [f"dev={dev}"] if dev else []
    argv = ["--custom-task", f"{name}={kind}", "data", "convert", "--task", name, "--source", "embedded",
            "--raw", *raw, "--outdir", str(out), "--seed", "0"]
    return cli.main(argv), out


def example_rows(split: str) -> list[dict]:
    with gzip.open(EXAMPLE / f"{split}.csv.gz", "rt") as fh:
        return list(csv.DictReader(fh))


def test_the_membrane_example_converts_with_a_seeded_dev_tenth(tmp_path, capsys):
    train_rows, test_rows = example_rows("train"), example_rows("test")
    code, out = convert(tmp_path, "protein_classification", EXAMPLE / "train.csv.gz", EXAMPLE / "test.csv.gz")
    assert code == 0, capsys.readouterr().err
    manifest = load_manifest(out)
    assert manifest["kind"] == "protein" and manifest["labels"] == sorted({r["label"] for r in train_rows})
    n_dev = round(0.1 * len(train_rows))
    assert manifest["counts"] == {"train": len(train_rows) - n_dev, "dev": n_dev, "test": {"test": len(test_rows)}}
    test = read_split(out, manifest["splits"]["test"]["test"], manifest)
    assert [r[0] for r in test] == [r["id"] for r in test_rows]  # the CSV's id column names the records
    assert [manifest["labels"][r[2]] for r in test] == [r["label"] for r in test_rows]
    again = tmp_path / "again"
    again.mkdir()
    assert convert(again, "protein_classification", EXAMPLE / "train.csv.gz", EXAMPLE / "test.csv.gz")[0] == 0
    assert (again / "out/dev.fa").read_bytes() == (out / "dev.fa").read_bytes()  # seeded


def test_residue_and_regression_tasks_convert_with_a_dev_csv_and_named_test_sets(tmp_path, capsys):
    rows = [("MKVLA", "HHHEC"), ("MKLLW", "CCHHH"), ("AAKKR", "EEEEC")]
    train, dev = write_csv(tmp_path / "train.csv", rows), write_csv(tmp_path / "dev.csv", rows[:1])
    tests = {"a": write_csv(tmp_path / "a.csv", rows[1:]), "b": write_csv(tmp_path / "b.csv", rows[:2])}
    code, out = convert(tmp_path, "residue_classification", train, tests, dev)
    assert code == 0, capsys.readouterr().err
    manifest = load_manifest(out)
    assert manifest["label_chars"] == "".join(sorted({c for _, labels in rows for c in labels}))
    assert manifest["counts"] == {"train": 3, "dev": 1, "test": {"a": 2, "b": 2}}
    assert read_split(out, manifest["splits"]["test"]["a"], manifest)[0][1:] == rows[1]
    values = [("MKV", "1.5"), ("MKL", "-2"), ("MKW", "3e-1")]
    reg = tmp_path / "reg"
    reg.mkdir()
    train = write_csv(reg / "train.csv", values)
    code, out = convert(reg, "protein_regression", train, train, train)
    assert code == 0, capsys.readouterr().err
    manifest = load_manifest(out)
    assert manifest["labels"] is None
    assert [r[2] for r in read_split(out, manifest["splits"]["train"], manifest)] == [float(v) for _, v in values]


# each malformed case: (kind, training CSV text, the one-line error's tail); the test CSV is a valid one
BAD = {
    "missing column": ("protein_classification", "seq,label\nMKV,a\n", "line 1: missing column(s) sequence"),
    "empty sequence": ("protein_classification", "sequence,label\nMKV,a\n,b\n", "line 3: empty sequence"),
    "bad residues": ("protein_classification", "sequence,label\nMK1V,a\nMKL,b\n",
                     "line 2: sequence has characters other than amino-acid letters"),
    "regression label": ("protein_regression", "sequence,label\nMKV,1.0\nMKL,high\n",
                         "line 3: label 'high' is not a finite number"),
    "regression nan": ("protein_regression", "sequence,label\nMKV,nan\n", "line 2: label 'nan' is not a finite number"),
    "empty label": ("protein_classification", "sequence,label\nMKV,\nMKL,b\n", "line 2: empty label"),
    "length mismatch": ("residue_classification", "sequence,label\nMKVL,HHEC\nMKV,HH\n",
                        "line 3: 2 residue labels for a sequence of 3 residues"),
    "fields": ("protein_classification", "sequence,label\nMKV,a,extra\n", "line 2: 3 fields, the header has 2"),
    "one class": ("protein_classification", "sequence,label\nMKV,a\nMKL,a\n", "one class ('a') only"),
    "header only": ("protein_classification", "sequence,label\n", "no records after the header"),
    "empty file": ("protein_classification", "", "empty file"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_malformed_csv_stops_with_one_line_naming_file_and_line(case, tmp_path, capsys):
    kind, text, tail = BAD[case]
    train = tmp_path / "train.csv"
    train.write_text(text)
    valid = {"protein_classification": "sequence,label\nMKV,a\nMKL,b\n",
             "protein_regression": "sequence,label\nMKV,1\n", "residue_classification": "sequence,label\nMKV,HHE\n"}
    (tmp_path / "test.csv").write_text(valid[kind])
    code, out = convert(tmp_path, kind, train, tmp_path / "test.csv")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {train}: ") and tail in err[0], err[0]
    assert not out.exists()  # nothing half-written


def test_a_test_label_outside_the_training_labels_is_named(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", [("MKV", "a"), ("MKL", "b")] * 10)
    test = write_csv(tmp_path / "test.csv", [("MKV", "a"), ("MKW", "c")])
    assert convert(tmp_path, "protein_classification", train, test)[0] == 2
    assert capsys.readouterr().err.strip() == f"error: {test}: line 3: label(s) 'c' not among the training CSV's (a, b)"
    res_train = write_csv(tmp_path / "rtrain.csv", [("MKV", "HHE"), ("MKL", "EEC")] * 10)
    res_test = write_csv(tmp_path / "rtest.csv", [("MKV", "HXE")])
    assert convert(tmp_path, "residue_classification", res_train, res_test)[0] == 2
    assert f"{res_test}: line 2: label(s) 'X' not among" in capsys.readouterr().err


def test_unknown_kind_and_paper_task_names_are_refused(capsys):
    assert cli.main(["--custom-task", "mine=protein_ranking", "data", "convert", "--help"]) == 2
    assert "--custom-task mine=protein_ranking: unknown kind 'protein_ranking'" in capsys.readouterr().err
    paper = next(iter(TASKS))
    assert cli.main(["--custom-task", f"{paper}=protein_regression", "data", "convert", "--help"]) == 2
    assert f"'{paper}' is a paper task's name" in capsys.readouterr().err


def test_the_kinds_entries_score_with_their_standard_metrics():
    rng = np.random.default_rng(0)
    binary = custom.register("two", "protein_classification").for_data({"labels": ["a", "b"]})
    assert binary.n_out == 2 and binary.kind == "protein"
    logits, targets = rng.normal(size=(40, 2)), rng.integers(0, 2, 40)
    assert set(binary.report(binary.metrics(logits, targets, {}))) == {"acc", "mcc"}
    multi = custom.register("three", "protein_classification").for_data({"labels": ["a", "b", "c"]})
    logits, targets = rng.normal(size=(60, 3)), rng.integers(0, 3, 60)
    values = multi.report(multi.metrics(logits, targets, {}))
    assert set(values) == {"acc", "f1_macro"}
    assert values["acc"] == pytest.approx(float((logits.argmax(1) == targets).mean()))
    perfect = multi.metrics(np.eye(3)[targets], targets, {})
    assert perfect["acc"] == perfect["f1_macro"] == 1.0
    residue = custom.register("states", "residue_classification").for_data({"label_chars": "CEH"})
    assert residue.n_out == 3 and residue.label_chars == "CEH" and residue.kind == "residue"
    outs = [np.eye(3)[[0, 1, 2]], np.eye(3)[[2, 2]]]
    assert residue.metrics(outs, [np.array([0, 1, 1]), np.array([2, 0])], {})["acc"] == pytest.approx(3 / 5)
    reg = custom.register("value", "protein_regression").for_data({"labels": None})
    assert reg.n_out == 1 and reg.loss == "mse" and reg.headline_metric == "spearman"


def test_a_residue_task_trains_evaluates_and_gets_its_trivial_baseline(tmp_path, capsys):
    """The same `plus` commands as a paper task's jobs, from the CSVs alone (random init, tiny model)."""
    rng = np.random.default_rng(1)
    rows = []
    for _ in range(40):
        seq = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), int(rng.integers(15, 30))))
        rows.append((seq, "".join("H" if c in "AELMQKRH" else "C" for c in seq)))
    train, test = write_csv(tmp_path / "train.csv", rows[:30]), write_csv(tmp_path / "test.csv", rows[30:])
    code, data = convert(tmp_path, "residue_classification", train, test)
    assert code == 0, capsys.readouterr().err
    flag = ["--custom-task", "mytask=residue_classification"]
    hp = {"model": {"family": "rnn", "hidden_dim": 16, "num_layers": 1, "proj_dim": 8, "corpus": "rnn"},
          "train": {"lr": 3e-3, "batch_size": 8, "eval_batch_size": 16, "max_epochs": 2, "patience": -1,
                    "lambda_mlm": -1, "lambda_task": 1.0, "max_pred": 10},
          "head": None, "fidelity": {}, "allow_cpu": True, "threads": 1, "save_every_minutes": 10}
    run = tmp_path / "run"
    assert cli.main([*flag, "finetune", "--task", "mytask", "--data", str(data), "--seed", "0", "--hparams",
                     json.dumps(hp), "--state-dir", str(run / "state"), "--out-model", str(run / "model.pt"),
                     "--out-curve", str(run / "curve.csv"), "--out-run", str(run / "run.json")]) == 0
    assert cli.main([*flag, "evaluate", "--task", "mytask", "--data", str(data), "--model", str(run / "model.pt"),
                     "--seed", "0", "--hparams", json.dumps(hp), "--out-metrics", str(run / "metrics.json"),
                     "--out-predictions", str(run / "predictions.npz"), "--run", str(run / "run.json"),
                     "--bootstrap", "20"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test_sets"]["test"]["acc"] <= 1
    assert cli.main([*flag, "baseline", "--task", "mytask", "--kind", "trivial", "--data", str(data),
                     "--out-metrics", str(tmp_path / "trivial.json")]) == 0
    trivial = json.loads((tmp_path / "trivial.json").read_text())
    labels = "".join(lab for _, lab in rows[30:])
    majority = max("CH", key="".join(lab for _, lab in rows[:30]).count)
    assert trivial["test_sets"]["test"]["acc"] == pytest.approx(labels.count(majority) / len(labels))


def dry_run(tmp_path, text: str) -> subprocess.CompletedProcess:
    for name in ("config.yaml", "data", "demo"):
        if not (tmp_path / name).exists():
            (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "custom.yaml").write_text(text)
    return subprocess.run([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml",
                           "custom.yaml", "-n", "results/tables/membrane.csv"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)


ENTRY = ("custom_tasks:\n  {name}:\n    kind: {kind}\n    train: {train}\n"
         "    test: data/examples/membrane/test.csv.gz\n"
         "tasks: [{name}]\n")


@pytest.mark.parametrize("name,kind,train,expected", [
    ("membrane", "protein_ranking", "data/examples/membrane/train.csv.gz", "protein_ranking"),
    ("membrane", "protein_classification", "data/examples/membrane/nope.csv", "config: custom_tasks: membrane: "
     "train: 'data/examples/membrane/nope.csv' is not a file"),
    ("solubility", "protein_classification", "data/examples/membrane/train.csv.gz",
     "config: custom_tasks: solubility: 'solubility' is a paper task's name"),
    ("membrane", "protein_classification", "data/examples/membrane/train.csv.gz\n    devv: x.csv", "devv"),
])
def test_the_workflow_checks_a_custom_task_before_any_job(tmp_path, name, kind, train, expected):
    """An unknown kind, a missing CSV, a paper task's name, an unknown key: the run stops, naming it."""
    res = dry_run(tmp_path, ENTRY.format(name=name, kind=kind, train=train))
    assert res.returncode != 0 and expected in res.stdout + res.stderr, (res.stdout + res.stderr)[-2000:]
    assert "Job stats" not in res.stdout


def test_the_custom_table_target_schedules_only_its_chain(tmp_path):
    for name in ("config.yaml", "data", "demo"):
        (tmp_path / name).symlink_to(ROOT / name)
    res = subprocess.run([*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml",
                          "demo/custom_task.yaml",
                          "-n", "-p", "results/tables/membrane.csv"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = [line.split()[1].rstrip(":") for line in res.stdout.splitlines() if line.startswith(("rule ", "localrule "))]
    finetunes = [line for line in res.stdout.splitlines() if line.strip().startswith("output: results/finetune/")]
    assert jobs.count("convert_task") == 1 and jobs.count("baseline_trivial") == 1
    assert finetunes and all("results/finetune/membrane/" in line for line in finetunes)
    assert "--custom-task membrane=protein_classification finetune --task membrane" in res.stdout
