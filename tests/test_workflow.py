"""The Snakemake workflow itself: paper-scale DAG, config validation, targeted runs, lint, and one small
end-to-end run of the whole chain on the embedded real data."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from plus.tasks.registry import TASKS as TASK_REGISTRY

ROOT = Path(__file__).parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
TASKS = list(TASK_REGISTRY)  # the paper tasks; the test configs run them all


def snakemake(*args, cwd=ROOT, check=True, timeout=600):
    res = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def job_counts(output: str) -> dict[str, int]:
    counts, table = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            table = True
            continue
        if table:
            m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
            if m:
                counts[m.group(1)] = int(m.group(2))
            elif counts and not line.strip().startswith("-"):
                break
    return counts


def workdir(tmp_path: Path) -> Path:
    """A working directory that sees the repository's config and data, with its own results/."""
    for name in ("config.yaml", "data", "demo", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def test_paper_scale_dry_run_lists_the_complete_dag_quickly(tmp_path):
    start = time.monotonic()
    res = snakemake("-s", str(ROOT / "Snakefile"), "-n", "--quiet", "all", cwd=workdir(tmp_path))
    elapsed = time.monotonic() - start
    counts = job_counts(res.stdout)
    counts.pop("total", None)
    print(f"paper-scale dry run: {sum(counts.values())} jobs in {elapsed:.1f} s: {counts}")
    assert elapsed < 10
    assert counts["download_pfam"] == 1 and counts["pfam_preprocess"] == 3  # rnn, tfm and elmo corpus variants
    assert counts["download_artefact"] == 12  # 7 canonical releases (DeepSol as its 6 files)
    assert counts["convert_task"] == 7 + 2  # + localization, transmembrane for `corrected` (data_* switches)
    # experiments: base x 5 ablations, large x 2, tfm, p-elmo; 'none' is not pre-trained; 3 seeds
    assert counts["pretrain"] == (4 + 1 + 1 + 1) * 3
    assert counts["finetune"] == counts["evaluate"] == 9 * 7 * 3
    assert counts["task_table"] == 7 and counts["summary_table"] == 1
    assert counts["finetune_curves_plot"] == 7 and counts["embed"] == counts["embedding_plot"] == 1
    assert counts["leakage_audit"] == 1


def test_single_table_target_schedules_only_its_chain(tmp_path):
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "-n", "-p",
                    "results/tables/secstr.csv", cwd=workdir(tmp_path))
    counts = job_counts(res.stdout)
    assert counts["finetune"] == 4 and counts["evaluate"] == 4  # rnn plus/mlm_only/none + tfm plus
    assert counts["pretrain"] == 3 and counts.get("task_table") == 1
    outputs = re.findall(r"results/finetune/(\w+)/", res.stdout)
    assert set(outputs) == {"secstr"}
    assert "summary_table" not in counts and "ablation_plot" not in counts


def test_max_train_per_task_reaches_each_converter(tmp_path):
    wd = workdir(tmp_path)
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "-n", "-p",
                    *(f"results/data/{t}/manifest.json" for t in ("localization", "solubility")), cwd=wd)
    per_task = yaml.safe_load((ROOT / "demo/config.yaml").read_text())["data"]["max_train"]
    assert per_task["localization"] != per_task["solubility"]
    for task in ("localization", "solubility"):
        assert re.search(rf"--task {task} .*--max-train {per_task[task]} ", res.stdout)
    (wd / "bad.yaml").write_text("data:\n  max_train: {solubilty: 10}\n")  # a typo in a task name
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "bad.yaml", "-n", cwd=wd,
                    check=False)
    assert res.returncode != 0 and "solubilty" in res.stdout + res.stderr


def test_embedding_plot_schedules_embed_and_only_its_pretraining(tmp_path):
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "-n", "-p",
                    "results/plots/embeddings.png", cwd=workdir(tmp_path))
    counts = job_counts(res.stdout)
    assert counts["embed"] == counts["embedding_plot"] == counts["pretrain"] == counts["convert_task"] == 1
    assert "finetune" not in counts and "evaluate" not in counts
    # the first PLUS-RNN experiment with ablation plus, first seed; the homology test domains
    assert "results/pretrain/plus-rnn_tiny/plus/seed0/model.pt" in res.stdout
    assert "plus embed --data results/data/homology --model results/pretrain/plus-rnn_tiny/plus/seed0" in res.stdout
    assert "results/embeddings/plus-rnn_tiny/plus/seed0/homology_test.npz" in res.stdout


def test_leakage_target_schedules_only_corpus_conversions_and_audit(tmp_path):
    wd = workdir(tmp_path)
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "-n",
                    "results/tables/leakage.csv", cwd=wd)
    counts = job_counts(res.stdout)
    assert counts == {"demo_search_space": 3, "demo_pfam_corpus": 1, "pfam_preprocess": 1, "convert_task": 7,
                      "leakage_audit": 1, "total": 13}
    assert "results/pfam/rnn/stats.json" in res.stdout
    (wd / "corpus.yaml").write_text("leakage: {corpus: rnn_huge}\n")
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "corpus.yaml", "-n",
                    "results/tables/leakage.csv", cwd=wd, check=False)
    assert res.returncode != 0 and "rnn_huge" in res.stdout + res.stderr


def test_config_typos_stop_the_workflow_naming_the_key(tmp_path):
    wd = workdir(tmp_path)
    (wd / "typo.yaml").write_text("pretrain:\n  rnn:\n    learning_rate: 0.01\n")
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "typo.yaml", "-n", cwd=wd, check=False)
    assert res.returncode != 0
    assert "learning_rate" in res.stdout + res.stderr
    (wd / "type.yaml").write_text("seeds: three\n")
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "type.yaml", "-n", cwd=wd, check=False)
    assert res.returncode != 0 and "seeds" in res.stdout + res.stderr
    (wd / "model.yaml").write_text("experiments:\n  - {model: plus-rnn_huge, ablations: [plus]}\n")
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "model.yaml", "-n", cwd=wd, check=False)
    assert res.returncode != 0 and "plus-rnn_huge" in res.stdout + res.stderr
    (wd / "fp16.yaml").write_text("finetune:\n  tfm:\n    precision: fp16\n")  # bf16 only: fp16 needs a scaler
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "fp16.yaml", "-n", cwd=wd, check=False)
    assert res.returncode != 0 and "['precision']" in res.stdout + res.stderr and "'fp16'" in res.stdout + res.stderr
    # task names are checked against the registry, naming the key
    for name, text, key in [
        ("tasks.yaml", "tasks: [homology, secstrr]\n", "config: tasks: unknown task 'secstrr'"),
        ("ft.yaml", "finetune:\n  rnn:\n    tasks: {solubilty: {lr: 0.1}}\n",
         "config: finetune: rnn: tasks: unknown task 'solubilty'"),
        ("heads.yaml", "models:\n  plus-rnn_tiny:\n    heads: {homology: [z, 16]}\n",
         "config: models: plus-rnn_tiny: heads: 'homology' is not a task with a configurable head"),
    ]:
        (wd / name).write_text(text)
        res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", name, "-n", cwd=wd,
                        check=False)
        assert res.returncode != 0 and key in res.stdout + res.stderr, (name, res.stderr[-1500:])


def test_lint_is_clean():
    res = snakemake("--lint", check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Lints for" not in res.stdout + res.stderr


@pytest.mark.slow
def test_end_to_end_on_embedded_data(tmp_path):
    """The whole chain (corpus -> pre-training -> 7 tasks -> tables, plots, report) at the smallest size."""
    wd = workdir(tmp_path)
    start = time.monotonic()
    snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "tests/ci_config.yaml",
              "--cores", "2", "all", cwd=wd, timeout=1500)
    elapsed = time.monotonic() - start
    results = wd / "results"
    for task in TASKS:
        table = pd.read_csv(results / "tables" / f"{task}.csv")
        runs = table[table["kind"] == "run"]
        assert len(runs) == 2, task  # PLUS-RNN plus and none
        values = runs.filter(like="/mean").to_numpy(dtype=float)
        assert (~pd.isna(values)).any(), task
        assert (results / "plots" / f"{task}_ablation.png").stat().st_size > 0
    summary = pd.read_csv(results / "tables" / "summary.csv")
    assert len(summary) >= 2
    effects = pd.read_csv(results / "tables" / "ablation_effects.csv")  # the one contrast this config runs
    head = effects[effects["headline"]]
    assert sorted(head["task"]) == sorted(TASKS) and set(head["contrast"]) == {"plus - none"}
    assert set(effects["verdict"]) <= {"better", "worse", "inconclusive", "n/a"}
    assert (results / "plots" / "ablation_effects.png").stat().st_size > 0
    for md in (results / "tables").glob("*.md"):  # no Markdown column without a value in any row
        lines = [x for x in md.read_text(encoding="utf-8").splitlines() if x.startswith("|")]
        cells = [[c.strip() for c in re.split(r"(?<!\\)\|", x.strip())[1:-1]] for x in lines]
        empty = [h for j, h in enumerate(cells[0]) if all(r[j] in ("n/a", "—", "") for r in cells[2:])]
        assert not empty, (md.name, empty)
    leakage = pd.read_csv(results / "tables" / "leakage.csv")
    assert len(leakage) == 10 and (leakage["n_test"] <= 25).all()  # every test set of the seven tasks
    metrics = json.loads((results / "finetune/secstr/plus-rnn_tiny/plus/seed0/metrics.json").read_text())
    assert set(metrics["test_sets"]) == {"cb513", "ts115", "casp12"}
    assert 0 < metrics["test_sets"]["ts115"]["acc3"] <= 1
    run_record = json.loads((results / "finetune/secstr/plus-rnn_tiny/plus/seed0/run.json").read_text())
    assert metrics["run_fingerprint"] == run_record["run_fingerprint"] and metrics["model_sha256"]
    pre = json.loads((results / "pretrain/plus-rnn_tiny/plus/seed0/metrics.json").read_text())
    assert pre["provenance"]["torch"].startswith("2.")
    assert pre["run_definition"]["inputs"]["corpus"] and len(pre["run_fingerprint"]) == 64
    assert run_record["run_definition"]["inputs"]["pretrained"] == hashlib.sha256(
        (results / "pretrain/plus-rnn_tiny/plus/seed0/model.pt").read_bytes()).hexdigest()
    prov = json.loads((results / "provenance.json").read_text())  # every job ran under the lock
    assert prov["environment"]["runs"] == len(prov["runs"]) > 2 * len(TASKS)
    assert prov["environment"]["lines"][1].startswith("Every run matches the lock")
    assert "Every run matches the lock" in (results / "environment.html").read_text()
    snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "tests/ci_config.yaml",
              "--report", "results/report.html", cwd=wd)
    assert (results / "report.html").stat().st_size > 10_000
    if shutil.which("chromium"):  # the report renders in a browser: every task's table and ablation plot
        shots = subprocess.run([sys.executable, str(ROOT / "scripts/screenshot_report.py"), "results/report.html",
                                "--outdir", "results/report_screenshots"], cwd=wd, capture_output=True, text=True,
                               timeout=600)
        assert shots.returncode == 0, shots.stdout + shots.stderr
        # landing, a table and an ablation plot per task, summary, pre-training, effects table and forest plot
        assert len(list((results / "report_screenshots").glob("*.png"))) == 1 + 2 * len(TASKS) + 4
    print(f"end-to-end run on embedded data: {elapsed:.0f} s")
    # forcing one ablation's pre-training reruns only what depends on it
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "tests/ci_config.yaml",
                    "-n", "--quiet", "all", "--forcerun", "results/pretrain/plus-rnn_tiny/plus/seed0/model.pt",
                    cwd=wd)  # --forcerun takes every argument after it: the target comes first
    counts = job_counts(res.stdout)
    assert counts["pretrain"] == 1 and counts["finetune"] == counts["evaluate"] == len(TASKS)
    assert "convert_task" not in counts and "baseline_trivial" not in counts
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "tests/ci_config.yaml",
                    "-n", "--quiet", "all", cwd=wd)
    assert "Nothing to be done" in res.stdout + res.stderr
    # a user's own task from config alone (demo/custom_task.yaml, real data): only its chain runs, on the
    # pre-trained models above, and its table has the runs and the trivial baseline
    custom = ("--configfile", "demo/config.yaml", "demo/custom_task.yaml", "tests/ci_config.yaml")
    res = snakemake("-s", str(ROOT / "Snakefile"), *custom, "--cores", "2", "results/tables/membrane.csv", cwd=wd,
                    timeout=900)
    ran = job_counts(res.stdout + res.stderr)
    assert ran.get("pretrain", 0) == 0 and ran["convert_task"] == ran["baseline_trivial"] == 1, ran
    assert ran["finetune"] == ran["evaluate"] == 2, ran  # PLUS-RNN plus and none
    table = pd.read_csv(results / "tables/membrane.csv")
    assert sorted(table["kind"].unique()) == ["baseline", "run"] and len(table[table["kind"] == "run"]) == 2
    assert {"test/acc/mean", "test/mcc/mean"} <= set(table.columns), list(table.columns)
    # a forced rerun of a finished pre-training retrains from step 0 and writes the same model, byte for byte
    run = "plus-rnn_tiny/plus/seed0"
    first = (results / f"pretrain/{run}/model.pt").read_bytes()
    snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "tests/ci_config.yaml",
              "--cores", "2", "-f", f"results/pretrain/{run}/model.pt", cwd=wd, timeout=900)
    log = (wd / f"logs/pretrain/{run}.log").read_text()
    assert "its run finished at step" in log and "starting fresh" in log and "resumed" not in log
    assert (results / f"pretrain/{run}/model.pt").read_bytes() == first
    # a changed setting (the per-task lr) retrains the finished fine-tuning instead of reusing its state
    (wd / "lr.yaml").write_text("finetune:\n  rnn:\n    tasks:\n      transmembrane: {lr: 1.0e-4}\n")
    snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "tests/ci_config.yaml", "lr.yaml",
              "--cores", "2", f"results/finetune/transmembrane/{run}/model.pt", cwd=wd, timeout=900)
    log = (wd / f"logs/finetune/transmembrane/{run}.log").read_text()
    assert "saved by another run definition (changed: hparams.train.lr 0.002 -> 0.0001)" in log, log[-2000:]
    assert "resumed" not in log
    record = json.loads((results / f"finetune/transmembrane/{run}/run.json").read_text())
    assert record["run_definition"]["hparams"]["train"]["lr"] == 1e-4
    shutil.rmtree(results / "state", ignore_errors=True)
