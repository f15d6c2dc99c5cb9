"""Results layer: tables from fixture metrics.json files, plots, provenance, CLI."""

import argparse
import csv
import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plus.io import InputError, read_fasta
from plus.provenance import PROVENANCE_KEYS, collect_provenance
from plus.report import cli, plots, provenance, render, tables

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "data" / "published" / "published_results.csv"
SECSTR_MAP = {"cb513": "CB513", "casp12": "CASP12", "ts115": "TS115"}

# secstr fixture: (ablation, seed) -> {test_set: (acc8, acc3)}
SECSTR = {
    ("plus", 0): {"cb513": (0.60, 0.75), "casp12": (0.55, 0.70), "ts115": (0.65, 0.78)},
    ("plus", 1): {"cb513": (0.62, 0.78), "casp12": (0.57, 0.71), "ts115": (0.66, 0.80)},
    ("mlm_only", 0): {"cb513": (0.58, 0.72), "casp12": (0.50, 0.69), "ts115": (0.61, 0.76)},
}


def _write(path: Path, obj) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return str(path)


def _prov(seed):
    return {"package_version": "0.1.0", "git_commit": None, "python": "3.11", "torch": "2.13.0",
            "cuda": None, "device": "CPU: test", "hostname": "h", "slurm_job_id": None, "seed": seed,
            "hparams": {"lr": 5e-4}}


def _secstr_run(root: Path, model, ablation, seed, values) -> str:
    test_sets = {ts: {"acc8": a8, "acc3": a3, "n": 100,
                      "ci95": {"acc8": [a8 - 0.02, a8 + 0.01], "acc3": [a3 - 0.03, a3 + 0.02]}}
                 for ts, (a8, a3) in values.items()}
    d = {"task": "secstr", "model": model, "ablation": ablation, "seed": seed, "test_sets": test_sets,
         "dev": {"acc8": 0.5}, "provenance": _prov(seed)}
    return _write(root / "finetune" / "secstr" / model / ablation / f"seed{seed}" / "metrics.json", d)


@pytest.fixture
def secstr_runs(tmp_path):
    present = [_secstr_run(tmp_path, "plus_rnn_base", a, s, v) for (a, s), v in SECSTR.items()]
    expected = [str(tmp_path / "finetune/secstr/plus_rnn_base" / a / f"seed{s}" / "metrics.json")
                for a in ("plus", "mlm_only", "none") for s in (0, 1)]
    trivial = {"task": "secstr", "model": "trivial", "ablation": "-", "seed": 0,
               "test_sets": {ts: {"acc8": 0.3, "acc3": 0.45, "n": 100} for ts in SECSTR_MAP},
               "dev": {}, "provenance": _prov(0)}
    baseline = _write(tmp_path / "baselines/secstr/trivial/metrics.json", trivial)
    paper = tmp_path / "plus_paper.csv"
    paper.write_text(
        "paper,model,task,test_set,metric,value,pretrained,status,source\n"
        "fixture,PLUS-RNN BASE,secstr,CB513,q3,0.8,yes,verified,test fixture\n"
        "fixture,PLUS-RNN BASE,secstr,CB513,q8,,yes,verified,unknown value\n")
    return present, expected, [baseline], [str(PUBLISHED), str(paper)]


def _secstr_table(secstr_runs):
    present, expected, baselines, published = secstr_runs
    return tables.build_task_table("secstr", present, baselines, published, SECSTR_MAP,
                                   {"plus_rnn_base": "PLUS-RNN BASE"}, expected_runs=expected)


def _md_table(md: str) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of the first Markdown table in `md`."""
    lines = [x for x in md.splitlines() if x.startswith("|")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", x.strip())[1:-1]] for x in lines]
    return cells[0], cells[2:]


def _empty_columns(md: str) -> list[str]:
    """Columns of a Markdown table without a value in any row ("n/a", "—" and "" are no value)."""
    header, rows = _md_table(md)
    assert rows and all(len(r) == len(header) for r in rows)
    return [h for j, h in enumerate(header) if all(r[j] in ("n/a", "—", "") for r in rows)]


def _row(df, **kw):
    sel = np.ones(len(df), bool)
    for k, v in kw.items():
        sel &= (df[k] == v).to_numpy()
    assert sel.sum() == 1, kw
    return df[sel].iloc[0]


def test_task_table_means_stds_missing_and_deltas(secstr_runs):
    df = _secstr_table(secstr_runs)
    plus = _row(df, kind="run", ablation="plus")
    assert plus["n_runs"] == 2 and plus["missing_runs"] == 0
    assert plus["cb513/acc3/mean"] == pytest.approx((0.75 + 0.78) / 2, abs=1e-12)
    assert plus["cb513/acc3/std"] == pytest.approx(np.std([0.75, 0.78], ddof=1), abs=1e-12)
    assert plus["cb513/acc3/n_seeds"] == 2
    assert plus["cb513/acc3/ci95_low"] == pytest.approx((0.72 + 0.75) / 2, abs=1e-12)
    assert plus["cb513/acc3/ci95_high"] == pytest.approx((0.77 + 0.80) / 2, abs=1e-12)
    assert plus["cb513/acc3/published"] == 0.8
    assert plus["cb513/acc3/delta"] == pytest.approx((0.75 + 0.78) / 2 - 0.8, abs=1e-12)
    assert math.isnan(plus["cb513/acc8/published"]) and math.isnan(plus["cb513/acc8/delta"])

    mlm = _row(df, kind="run", ablation="mlm_only")
    assert mlm["n_runs"] == 1 and mlm["missing_runs"] == 1
    assert mlm["ts115/acc8/mean"] == 0.61 and math.isnan(mlm["ts115/acc8/std"])

    none = _row(df, kind="run", ablation="none")
    assert none["n_runs"] == 0 and none["missing_runs"] == 2
    value_cols = [c for c in df.columns if c.endswith(("/mean", "/std", "/ci95_low"))]
    assert none[value_cols].isna().all()

    trivial = _row(df, kind="baseline", model="trivial")
    assert trivial["casp12/acc3/mean"] == 0.45 and trivial["casp12/acc3/n_seeds"] == 1


def test_every_published_value_equals_its_csv_row(secstr_runs):
    df = _secstr_table(secstr_runs)
    back = {v: k for k, v in SECSTR_MAP.items()}
    ours = {"q3": "acc3", "q8": "acc8"}
    with open(PUBLISHED, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["task"] == "secstr"]
    assert rows
    for r in rows:
        row = _row(df, kind="published", paper=r["paper"], model=r["model"])
        assert row["status"] == r["status"]
        ts = back.get(r["test_set"], r["test_set"])
        assert row[f"{ts}/{ours[r['metric']]}/published"] == float(r["value"])
    # published rows are never given our values, and unmapped published test sets keep their own column
    pub = df[df["kind"] == "published"]
    assert pub[[c for c in df.columns if c.endswith("/mean")]].isna().all().all()
    assert "NetSurfP-2.0 test sets (pooled)/acc3/published" in df.columns


def test_unknown_renders_empty_in_csv_and_na_in_markdown(secstr_runs, tmp_path):
    df = _secstr_table(secstr_runs)
    out_csv, out_md = tmp_path / "t/secstr.csv", tmp_path / "t/secstr.md"
    render.write_table(df, out_csv, out_md, "secstr")
    with open(out_csv, newline="") as fh:
        rec = next(r for r in csv.DictReader(fh) if r["ablation"] == "plus")
    assert rec["cb513/acc8/published"] == "" and rec["cb513/acc3/published"] == "0.8"
    assert rec["cb513/acc8/delta"] == ""
    back = tables.read_table(out_csv)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)

    md = out_md.read_text(encoding="utf-8")
    header = [c.strip() for c in md.splitlines()[2].strip("|").split("|")]
    line = next(x for x in md.splitlines() if x.startswith("| plus_rnn_base (PLUS-RNN BASE) | plus |"))
    cells = dict(zip(header, [c.strip() for c in line.strip("|").split("|")], strict=True))
    assert "cb513 acc8 pub." not in header  # no published Q8 on CB513 for our model: no pub./Δ pair
    assert cells["cb513 acc3 pub."] == "0.8"  # our row's published value, then Δ right after it
    assert header[header.index("cb513 acc3 pub.") + 1] == "Δ"
    assert cells["cb513 acc3"] == f"{(0.75 + 0.78) / 2:.3f} ± {np.std([0.75, 0.78], ddof=1):.3f}"
    missing = next(x for x in md.splitlines() if "| none |" in x)
    assert "0 (2 missing)" in missing and "0.000" not in missing
    assert "| 0.741 |" in md  # PaddleHelix's secondary number, shown as written in the CSV
    paddle = next(x for x in md.splitlines() if "PaddleHelix" in x)
    paddle = dict(zip(header, [c.strip() for c in paddle.strip("|").split("|")], strict=True))
    # a published row's values sit in the metric's own columns (published_results.csv lines 25 and 28)
    assert paddle["cb513 acc3"] == "0.741" and paddle["cb513 acc8"] == "0.595"
    assert _empty_columns(md) == []


def test_summary_and_solubility_published_reference(secstr_runs, tmp_path):
    secstr = _secstr_table(secstr_runs)
    sol = []
    for seed, (acc, mcc) in enumerate([(0.70, 0.40), (0.72, 0.44)]):
        d = {"task": "solubility", "model": "plus_rnn_base", "ablation": "plus", "seed": seed,
             "test_sets": {"test": {"acc": acc, "mcc": mcc, "n": 50}}, "dev": {}, "provenance": _prov(seed)}
        sol.append(_write(tmp_path / f"finetune/solubility/plus_rnn_base/plus/seed{seed}/metrics.json", d))
    plus_paper = ROOT / "data/published/plus_paper.csv"  # header only until a user fills it in
    soltab = tables.build_task_table("solubility", sol, [], [PUBLISHED, plus_paper], {"test": "DeepSol test"},
                                     {"plus_rnn_base": "PLUS-RNN BASE"})
    deepsol = _row(soltab, kind="published", model="DeepSol")
    assert deepsol["test/acc/published"] == 0.77 and deepsol["test/mcc/published"] == 0.55
    run = _row(soltab, kind="run")  # no published PLUS-RNN value is known: published and delta stay unknown
    assert math.isnan(run["test/acc/published"]) and math.isnan(run["test/acc/delta"])

    render.write_table(soltab, tmp_path / "solubility.csv", tmp_path / "solubility.md", "solubility",
                       tmp_path / "solubility.html")
    page = (tmp_path / "solubility.html").read_text()  # what the Snakemake report shows inline
    assert page.count("<tr>") == len(soltab) + 1 and "<h2>solubility</h2>" in page
    # no published value for our model: no pub./Δ columns; DeepSol's values sit in the metric columns
    assert " pub.</th>" not in page and "<th>Δ</th>" not in page
    assert "<th>test acc</th><th>test mcc</th></tr>" in page
    assert "<td>0.710 ± 0.014</td><td>0.420 ± 0.028</td></tr>" in page
    assert "<td>not rerun</td><td>0.77</td><td>0.55</td></tr>" in page
    summary = tables.build_summary_table({"solubility": tmp_path / "solubility.csv", "secstr": secstr})
    assert "secstr:cb513/acc3/mean" in summary.columns and "solubility:test/acc/mean" in summary.columns
    plus = _row(summary, kind="run", ablation="plus")
    assert plus["solubility:test/acc/mean"] == pytest.approx(0.71, abs=1e-12)
    assert plus["secstr:cb513/acc3/published"] == 0.8
    assert plus["n_runs"] == 2  # seeds per task (the largest over tasks), not runs summed over tasks
    assert _row(summary, kind="published", model="DeepSol")["solubility:test/acc/published"] == 0.77
    assert _row(summary, kind="run", ablation="none")["missing_runs"] == 2

    # Markdown: one column per task headline (mean [95 % CI]), seeds once, pub./Δ only where our row has one
    render.write_table(summary, tmp_path / "summary.csv", tmp_path / "summary.md", "summary",
                       layout=render.SUMMARY_LAYOUT)
    md = (tmp_path / "summary.md").read_text(encoding="utf-8")
    header, rows = _md_table(md)
    assert header == ["Model", "Ablation", "Kind", "Seeds", "solubility acc (test)", "secstr acc3 (cb513)",
                      "secstr acc3 (cb513) pub.", "Δ"]
    cells = {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in rows}
    plus = cells[("plus_rnn_base (PLUS-RNN BASE)", "plus")]
    # secstr: mean (0.75 + 0.78) / 2, CI = mean of the seeds' bounds ((0.72 + 0.75) / 2, (0.77 + 0.80) / 2)
    assert plus["secstr acc3 (cb513)"] == "0.765 [0.735, 0.785]"
    assert plus["solubility acc (test)"] == "0.710"  # the solubility fixture runs have no CI
    assert plus["Seeds"] == "2" and plus["secstr acc3 (cb513) pub."] == "0.8" and plus["Δ"] == "-0.035"
    assert cells[("DeepSol", "")]["solubility acc (test)"] == "0.77"
    assert [r[2] for r in rows].index("baseline") < min(i for i, r in enumerate(rows) if r[2].startswith("published"))
    assert _empty_columns(md) == []
    # a published reference row without any headline value (NetSurfP-2.0: pooled test sets only) is left out
    assert "NetSurfP-2.0" in set(summary["model"]) and "NetSurfP-2.0 |" not in md


def test_pretraining_table(tmp_path):
    files = []
    runs = [("plus", 0, 0.30, 0.90), ("plus", 1, 0.32, 0.94), ("mlm_only", 0, 0.33, None)]
    for ablation, seed, mlm, sfp in runs:
        d = {"model": "plus_rnn_base", "ablation": ablation, "seed": seed, "best_step": 100,
             "val": {"mlm_acc": mlm, "sfp_acc": sfp, "loss": 2.0}, "test": {"mlm_acc": mlm, "sfp_acc": sfp},
             "baselines": {"mlm_freq_acc": 0.08, "sfp_chance": 0.5}}
        files.append(_write(tmp_path / f"pretrain/plus_rnn_base/{ablation}/seed{seed}/metrics.json", d))
    df = tables.build_pretraining_table(files)
    plus = _row(df, ablation="plus")
    assert plus["test/mlm_acc/mean"] == pytest.approx(0.31, abs=1e-12)
    assert plus["test/sfp_acc/std"] == pytest.approx(np.std([0.90, 0.94], ddof=1), abs=1e-12)
    assert plus["trivial/mlm_acc/mean"] == 0.08 and plus["trivial/sfp_acc/mean"] == 0.5
    mlm = _row(df, ablation="mlm_only")
    assert math.isnan(mlm["test/sfp_acc/mean"]) and mlm["test/sfp_acc/n_seeds"] == 0

    # Markdown: identical val/test columns collapse into one (B16 footnote), the baselines become a row
    render.write_table(df, tmp_path / "pre.csv", tmp_path / "pre.md", "pre", layout=render.PRETRAINING_LAYOUT)
    md = (tmp_path / "pre.md").read_text(encoding="utf-8")
    header, rows = _md_table(md)
    assert header == ["Model", "Ablation", "Kind", "Seeds", "val = test mlm_acc", "val = test sfp_acc", "val loss"]
    base = dict(zip(header, rows[-1], strict=True))
    assert base["Model"] == "chance / unigram frequency" and base["Kind"] == "baseline"
    assert base["val = test mlm_acc"] == "0.080" and base["val = test sfp_acc"] == "0.500"
    assert len(rows) == 3 and "bug B16" in md and _empty_columns(md) == []
    assert list(tables.read_table(tmp_path / "pre.csv").columns) == list(df.columns)  # the CSV keeps them all

    # a corrected run (validation != test) keeps both columns and no footnote; two corpora give two rows
    d = {"model": "plus_tfm", "ablation": "corrected", "seed": 0, "val": {"mlm_acc": 0.2, "sfp_acc": 0.8},
         "test": {"mlm_acc": 0.21, "sfp_acc": 0.79}, "baselines": {"mlm_freq_acc": 0.09, "sfp_chance": 0.5}}
    files.append(_write(tmp_path / "pretrain/plus_tfm/corrected/seed0/metrics.json", d))
    md = render.to_markdown(tables.build_pretraining_table(files), layout=render.PRETRAINING_LAYOUT)
    header, rows = _md_table(md)
    assert header[4:] == ["val mlm_acc", "val sfp_acc", "val loss", "test mlm_acc", "test sfp_acc"]
    assert "B16" not in md and [r[0] for r in rows[-2:]] == [
        "chance / unigram frequency (corpus of plus_rnn_base)", "chance / unigram frequency (corpus of plus_tfm)"]
    assert _empty_columns(md) == []


def test_bad_inputs_name_the_file(secstr_runs, tmp_path):
    present, _, _, _ = secstr_runs
    with pytest.raises(InputError, match="expected 'solubility'"):
        tables.build_task_table("solubility", present, [], [], {})
    bad = tmp_path / "bad.csv"
    bad.write_text("paper,model,task,test_set,metric,value,pretrained,status,source\n"
                   "p,m,secstr,CB513,q3,zero,yes,verified,s\n")
    with pytest.raises(InputError, match="bad.csv: line 2"):
        tables.build_task_table("secstr", present, [], [bad], SECSTR_MAP)
    with pytest.raises(InputError, match="seed"):
        tables.build_task_table("secstr", present, [], [], SECSTR_MAP, expected_runs=["x/metrics.json"])


def _svg_text(path) -> str:
    return Path(path).read_text(encoding="utf-8")


def _check_files(png, svg):
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Path(png).stat().st_size > 5000
    assert "<svg" in _svg_text(svg)


def test_plot_ablation(secstr_runs, tmp_path):
    present, _, _, _ = secstr_runs
    png, svg = tmp_path / "p/secstr.png", tmp_path / "p/secstr.svg"
    fig = plots.plot_ablation("secstr", present, png, svg)
    _check_files(png, svg)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 6  # 3 test sets x (Q8, Q3)
    assert all(ax.get_xlabel() == "ablation" for ax in axes)
    assert {ax.get_ylabel() for ax in axes} == {plots.METRIC_LABELS["acc8"], plots.METRIC_LABELS["acc3"]}
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["plus_rnn_base"]
    assert "Q3 accuracy (fraction of residues)" in _svg_text(svg)


def test_plot_curves(tmp_path):
    pre = []
    for ablation in ("plus", "mlm_only"):
        path = tmp_path / f"pretrain/plus_rnn_base/{ablation}/seed0/curve.csv"
        path.parent.mkdir(parents=True)
        rows = ["step,split,loss,mlm_loss,sfp_loss,mlm_acc,sfp_acc,lr,elapsed_s"]
        for step in range(0, 50, 10):
            sfp = "" if ablation == "mlm_only" else 0.6 + step / 200
            rows += [f"{step},train,{3 - step / 50},{2.9},{0.7},{0.1 + step / 500},{sfp},0.001,{step}",
                     f"{step},val,{3.1 - step / 50},{3.0},{0.7},{0.1 + step / 600},{sfp},0.001,{step}"]
        path.write_text("\n".join(rows) + "\n")
        pre.append(path)
    fig = plots.plot_pretrain_curves(pre, tmp_path / "pre.png", tmp_path / "pre.svg")
    _check_files(tmp_path / "pre.png", tmp_path / "pre.svg")
    assert [ax.get_xlabel() for ax in fig.axes] == ["optimizer step"] * 3
    assert "SFP accuracy (fraction of pairs)" in _svg_text(tmp_path / "pre.svg")
    assert {t.get_text() for t in fig.legends[0].get_texts()} >= {"plus_rnn_base/plus", "val"}

    ft = []
    for ablation, seed in (("plus", 0), ("plus", 1), ("none", 0)):
        path = tmp_path / f"finetune/secstr/plus_rnn_base/{ablation}/seed{seed}/curve.csv"
        path.parent.mkdir(parents=True)
        path.write_text(f"epoch,train_loss,dev_loss,elapsed_s,dev_acc8\n1,1.2,1.3,10,0.4\n2,1.0,1.1,20,0.{5 + seed}\n")
        ft.append(path)
    fig = plots.plot_finetune_curves("secstr", ft, tmp_path / "ft.png", tmp_path / "ft.svg")
    _check_files(tmp_path / "ft.png", tmp_path / "ft.svg")
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch"] * 3
    assert [ax.get_ylabel() for ax in fig.axes] == ["training loss (nats per example)", "dev loss (nats per example)",
                                                    "dev Q8 accuracy (fraction of residues)"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["plus_rnn_base/plus", "plus_rnn_base/none", "seed 0", "seed 1"]
    styles = {line.get_linestyle() for line in fig.axes[2].get_lines()}
    assert len(fig.axes[2].get_lines()) == 3 and len(styles) == 2  # one line per run, one style per seed
    fig = plots.plot_finetune_curves("stability", ft[:1], tmp_path / "st.png", tmp_path / "st.svg")
    assert fig.axes[0].get_ylabel() == "training loss (MSE, target units²)"


def test_plot_embeddings_real_domains(tmp_path):
    # amino-acid composition of real SCOPe test domains stands in for pooled embeddings
    aa = "ACDEFGHIKLMNPQRSTVWY"
    pooled, labels, ids = [], [], []
    for _, header, seq in read_fasta(ROOT / "data/embedded/homology/Testdata_id25againstTrain.fasta.gz"):
        if len(ids) == 150:
            break
        pooled.append([seq.count(a) / len(seq) for a in aa])
        labels.append(header.split()[1][0])
        ids.append(header.split()[0])
    npz = tmp_path / "emb.npz"
    np.savez(npz, pooled=np.array(pooled), labels=np.array(labels), ids=np.array(ids))
    fig = plots.plot_embeddings(npz, tmp_path / "emb.png", tmp_path / "emb.svg")
    _check_files(tmp_path / "emb.png", tmp_path / "emb.svg")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("PC1 (") and ax.get_ylabel().startswith("PC2 (")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == len(set(labels)) and all("(n=" in t for t in legend)
    coords, frac = plots.pca_2d(np.array(pooled))
    assert coords.shape == (150, 2) and frac[0] >= frac[1] > 0
    np.savez(npz, pooled=np.zeros((2, 3)), labels=np.array(["a", "b"]), ids=np.array(["x", "y"]))
    with pytest.raises(InputError, match="emb.npz"):
        plots.plot_embeddings(npz, tmp_path / "e.png", tmp_path / "e.svg")


def test_provenance_collect_and_merge(secstr_runs, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "f").write_text("x")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
    head = head.strip()
    p = collect_provenance(repo, seed=3, hparams={"lr": 1e-3})
    assert set(p) == set(PROVENANCE_KEYS)
    assert p["git_commit"] == head and p["git_dirty"] is False
    assert p["seed"] == 3 and p["hparams"] == {"lr": 1e-3}
    assert p["torch"] and p["device"]
    assert collect_provenance(tmp_path / "repo/..")["git_commit"] is None

    present, _, _, _ = secstr_runs
    info = _write(Path(present[0]).with_name("run_info.json"), _prov(0))
    merged = provenance.merge_provenance([*present, info], tmp_path / "prov.json", tmp_path / "prov.csv")
    assert json.loads((tmp_path / "prov.json").read_text()) == merged
    assert set(merged["runs"]) == {*present, info} and merged["runs"][present[1]]["seed"] == 1
    csv_rows = pd.read_csv(tmp_path / "prov.csv")
    assert len(csv_rows) == 4 and set(csv_rows["table"]) == {"secstr", "pretraining"}  # run_info.json: no task
    # fixture runs predate the drift check: the note says so instead of guessing
    assert merged["environment"]["not_recorded"] == [*present, info]
    (tmp_path / "nop/metrics.json").parent.mkdir()
    (tmp_path / "nop/metrics.json").write_text("{}")
    with pytest.raises(InputError, match="no 'provenance'"):
        provenance.merge_provenance([tmp_path / "nop/metrics.json"], tmp_path / "x.json")


def test_cli_tables_and_plot(secstr_runs, tmp_path):
    present, expected, baselines, published = secstr_runs
    parser = argparse.ArgumentParser(prog="plus")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    args = parser.parse_args(["tables", "--task", "secstr", "--runs", *present, "--expected", *expected,
                              "--baselines", *baselines, "--published", *published, "--test-set-map",
                              *[f"{k}={v}" for k, v in SECSTR_MAP.items()], "--model-label",
                              "plus_rnn_base=PLUS-RNN BASE", "--out-csv", str(out / "secstr.csv"),
                              "--out-md", str(out / "secstr.md")])
    args.func(args)
    pd.testing.assert_frame_equal(tables.read_table(out / "secstr.csv"), _secstr_table(secstr_runs),
                                  check_dtype=False)
    args = parser.parse_args(["plot", "ablation", "--task", "secstr", "--runs", *present,
                              "--out-png", str(out / "a.png"), "--out-svg", str(out / "a.svg")])
    args.func(args)
    _check_files(out / "a.png", out / "a.svg")
    args = parser.parse_args(["tables-summary", "--tables", str(out / "secstr.csv"), "--out-csv",
                              str(out / "summary.csv"), "--out-md", str(out / "summary.md")])
    args.func(args)
    summary = tables.read_table(out / "summary.csv")
    assert _row(summary, kind="run", ablation="plus")["secstr:cb513/acc3/published"] == 0.8
    args = parser.parse_args(["tables-summary", "--tables", "x/table.csv", "--out-csv", "a", "--out-md", "b"])
    with pytest.raises(InputError, match="TASK=CSV"):
        args.func(args)
    args = parser.parse_args(["tables", "--task", "secstr", "--test-set-map", "cb513", "--out-csv", "a",
                              "--out-md", "b"])
    with pytest.raises(InputError, match="KEY=VALUE"):
        args.func(args)
