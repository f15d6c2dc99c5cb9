"""Allocator policy, measured: the same training jobs under glibc's default allocator and fixed mmap
thresholds (the `plus` command's policy, plus.cli.malloc_tunables, picks one per model family from these
figures). Prints one JSON line; ratios are against the first setting, in the same run.

    python benchmarks/allocator.py --demo-workdir DIR [--paper-corpus DIR] [--paper-models base,large,tfm]
                                   [--setting NAME=GLIBC_TUNABLES ...] [--repeats R]

Demo jobs: forced reruns (`snakemake -f`, the job's resumable state removed first) of demo pre-training and
fine-tuning jobs in a workdir where `make demo` has run; per job its wall time, CPU time and peak RSS from
Snakemake's benchmark file, plus the system (page-fault) time of the whole call. The best of R repeats.
Paper jobs: benchmarks/paper_scale.py's measured run (real `plus pretrain`, the paper's sizes, per-step RSS) on
an already preprocessed corpus (e.g. its 1 M-record one: memory does not grow with the corpus, README "Paper
scale"), --paper-steps steps, at --batch-per-model where the paper's batch does not fit. Every process gets
GLIBC_TUNABLES explicitly, so `plus` does not re-run itself with its own tuning.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "src"))

DEMO_JOBS = {  # name: the job's path under results/ (outputs), results/benchmarks/ and results/state/
    "pretrain_rnn_tiny": "pretrain/plus-rnn_tiny/plus/seed0",
    "pretrain_tfm_tiny": "pretrain/plus-tfm_tiny/plus/seed0",
    "finetune_solubility_rnn_tiny": "finetune/solubility/plus-rnn_tiny/plus/seed0",
    "finetune_secstr_rnn_tiny": "finetune/secstr/plus-rnn_tiny/plus/seed0",
}
DEFAULT_SETTINGS = {"threshold_4g": "glibc.malloc.mmap_threshold=4294967296", "default": "",
                    "threshold_256m": "glibc.malloc.mmap_threshold=268435456"}


def demo_job(workdir: Path, job: str, tunables: str) -> dict:
    """One forced rerun of a demo job: Snakemake's benchmark row, and the call's user/sys CPU seconds."""
    shutil.rmtree(workdir / "results/state" / job, ignore_errors=True)
    target = f"results/{job}/model.pt"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(REPO / "demo/config.yaml"), "--cores", "2", "-f", target, "--quiet", "all"]
    run = subprocess.run(cmd, env={**os.environ, "GLIBC_TUNABLES": tunables}, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"{job}: snakemake failed:\n{run.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(workdir / "results/benchmarks" / f"{job}.tsv") as fh:
        row = next(csv.DictReader(fh, delimiter="\t"))
    return {"s": float(row["s"]), "max_rss_mb": round(float(row["max_rss"])), "cpu_s": float(row["cpu_time"]),
            "call_user_s": round(after.ru_utime - before.ru_utime, 1),
            "call_sys_s": round(after.ru_stime - before.ru_stime, 1)}


def paper_job(corpus: Path, workdir: Path, model: str, steps: int, batch: int | None, tunables: str) -> dict:
    import paper_scale

    hp = paper_scale.paper_hparams(model, steps, 32, 2, batch)
    os.environ["GLIBC_TUNABLES"] = tunables  # inherited by the training process
    run = paper_scale.measured_run(corpus, workdir / f"alloc_{model}", hp)
    return {"batch_pairs": hp["train"]["batch_size"], "step_s": [round(t, 1) for t in run["step_s"]],
            "peak_rss_mb": run["peak_rss_mb"], "per_step_rss_mb": run["per_step_rss_mb"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-workdir", type=Path, help="a workdir where `make demo` has run")
    p.add_argument("--demo-jobs", default=",".join(DEMO_JOBS))
    p.add_argument("--paper-corpus", type=Path, help="a preprocessed corpus (benchmarks/paper_scale.py's)")
    p.add_argument("--paper-models", default="base,large,tfm")
    p.add_argument("--paper-steps", type=int, default=3)
    p.add_argument("--batch-per-model", default="large=32,tfm=8", help="pairs per batch where 24 GB needs it")
    p.add_argument("--paper-workdir", type=Path, default=Path("results/paper_scale"))
    p.add_argument("--setting", action="append", default=[], help="NAME=GLIBC_TUNABLES, the first "
                   "the baseline (default: threshold_4g, default, threshold_256m)")
    p.add_argument("--repeats", type=int, default=1, help="demo jobs: best of R")
    args = p.parse_args()
    settings = dict(s.split("=", 1) for s in args.setting) or DEFAULT_SETTINGS
    batches = {k: int(v) for k, v in (kv.split("=") for kv in args.batch_per_model.split(",") if kv)}
    start = time.monotonic()
    out = {"settings": settings, "demo": {}, "paper": {}}
    if args.demo_workdir:
        for name in args.demo_jobs.split(","):
            job = DEMO_JOBS[name]
            out["demo"][name] = {}
            for label, tunables in settings.items():
                runs = [demo_job(args.demo_workdir.resolve(), job, tunables) for _ in range(args.repeats)]
                out["demo"][name][label] = min(runs, key=lambda r: r["s"])
                print(json.dumps({"partial": name, label: out["demo"][name][label]}), file=sys.stderr, flush=True)
    if args.paper_corpus:
        for model in args.paper_models.split(","):
            out["paper"][model] = {}
            for label, tunables in settings.items():
                res = paper_job(args.paper_corpus, args.paper_workdir, model, args.paper_steps, batches.get(model),
                                tunables)
                out["paper"][model][label] = res
                print(json.dumps({"partial": model, label: res}), file=sys.stderr, flush=True)
    for section in ("demo", "paper"):
        for res in out[section].values():  # against the first setting's run of the same job, in this run
            base = res[next(iter(settings))]
            for r in res.values():
                if section == "demo":
                    r["time_vs_first"] = round(r["s"] / base["s"], 3)
                    r["rss_vs_first"] = round(r["max_rss_mb"] / base["max_rss_mb"], 3)
                else:  # steps after the first (start-up)
                    r["step_time_vs_first"] = round(float(np.mean(r["step_s"][1:] or r["step_s"])) /
                                                    float(np.mean(base["step_s"][1:] or base["step_s"])), 3)
                    r["rss_vs_first"] = round(r["peak_rss_mb"] / base["peak_rss_mb"], 3)
    out["wall_s"] = round(time.monotonic() - start)
    out["load_avg_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
