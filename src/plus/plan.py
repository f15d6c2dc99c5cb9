"""`plus plan`: price the DAG a config defines before anything runs.

The job list and each job's SLURM request come from Snakemake's own dry run of the workflow (`snakemake -n`),
so they are what `snakemake --profile slurm all` submits. Each GPU job is priced from its model's training
FLOPs per token (plus.resources) and the tokens it processes: pre-training 2 x training residues x epochs of
the Pfam corpus (pairs: anchor and partner; P-ELMo's LM: 1 x); fine-tuning training examples x mean length
x max_epochs (an upper bound: early stopping ends sooner), homology epoch_pairs x 2 x mean length x max_epochs;
evaluation a forward pass (2 FLOPs per parameter and token) over the test examples. Sizes: the preprocessed corpus's
stats.json where it exists, else the config's `plan` section (tasks: always the config).
One row per job class, then `total`.
"""

from __future__ import annotations

import csv
import io
import math
import re
import subprocess
import sys
from pathlib import Path

from plus import resources
from plus.io import InputError
from plus.train.hparams import model_hparams

PRICED = ("pretrain", "finetune", "evaluate")  # GPU rules with a cost model; others (embed: one small
# forward pass over a few hundred sequences) are listed with their request, unpriced
COLUMNS = ["job_class", "jobs", "params", "tokens", "flops_per_token", "gpu_hours", "gpu", "mem_mb",
           "slurm_request", "runtime_min", "attempts", "covered_min", "covers_estimate"]


def dry_run_jobs(workdir: Path, snakefile: Path, configfiles: list[Path], target: str = "all") -> list[dict]:
    """Jobs of `snakemake -n --forceall` (every job, whatever exists already) on the workflow in `workdir`:
    rule, wildcards, resources."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--forceall", "--configfile",
           *(str(c.resolve()) for c in configfiles), "--directory", str(workdir), "--snakefile",
           str(snakefile), "--", target]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        why = next((x for x in lines if re.search(r"Error|Exception", x)), lines[-1] if lines else done.returncode)
        raise InputError(f"{' '.join(map(str, configfiles))}: snakemake dry run failed: {why}")
    jobs, job = [], None
    for line in done.stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            job = {"rule": m.group(1), "wildcards": {}, "resources": {}}
            jobs.append(job)
        elif job is not None and line.startswith("    wildcards: "):
            job["wildcards"] = dict(kv.split("=", 1) for kv in line[len("    wildcards: "):].split(", "))
        elif job is not None and line.startswith("    resources: "):
            job["resources"] = dict(kv.split("=", 1) for kv in line[len("    resources: "):].split(", "))
    return jobs


def _custom_size(spec: dict) -> dict:
    """A user's task's sizes, read off its CSVs (custom_tasks: entry)."""
    from plus.data.converters.custom import read_csv

    tests = spec["test"] if isinstance(spec["test"], dict) else {"test": spec["test"]}
    train = read_csv(Path(spec["train"]), spec["kind"], "train")
    test = [r for path in tests.values() for r in read_csv(Path(path), spec["kind"], "test")]
    return {"train_examples": len(train), "test_examples": len(test),
            "mean_length": sum(len(r[1]) for r in train) / len(train)}


def _size(config: dict, task: str) -> dict:
    """train/test examples and mean length of a task: config plan.tasks.<task> (the manifests hold no lengths),
    or a user's task's CSVs."""
    sizes = (config.get("plan") or {}).get("tasks", {}).get(task)
    if not sizes and task in (config.get("custom_tasks") or {}):
        return _custom_size(config["custom_tasks"][task])
    if not sizes or any(sizes.get(k) is None for k in ("train_examples", "test_examples", "mean_length")):
        raise InputError(f"plan.tasks.{task}: no data sizes (train_examples, test_examples, mean_length)")
    return sizes


def _corpus_params(config: dict, variant: str) -> dict:
    """The preprocessing settings of a Pfam variant, as its stats.json records them."""
    pf, filters = config["pfam"], config["pfam"]["variants"][variant].get("filters", True)
    return {"seed": pf["split_seed"], "test_fraction": pf["test_fraction"], "val_fraction": pf["val_fraction"],
            "max_len": config["pfam"]["variants"][variant].get("max_len"),
            "min_len": pf["min_len"] if filters else 1, "min_family_size": pf["min_family_size"] if filters else 1}


def _corpus(config: dict, workdir: Path, variant: str) -> tuple[int, float]:
    """(training sequences, mean length) of a Pfam variant: its stats.json when it was made with this config's
    settings (not, say, the demo's corpus in the same directory), else config plan.pfam."""
    import json

    stats = workdir / "results/pfam" / variant / "stats.json"
    if stats.exists():
        made = json.loads(stats.read_text())
        wanted = _corpus_params(config, variant)
        if {k: made["params"].get(k) for k in wanted} == wanted:
            kept = made["after_family_filter"]
            return kept["train"], kept["train_tokens"] / kept["train"]
    pf = (config.get("plan") or {}).get("pfam", {}).get(variant)
    if not pf or any(pf.get(k) is None for k in ("train_sequences", "mean_length")):
        raise InputError(f"plan.pfam.{variant}: no corpus size (train_sequences, mean_length)")
    return pf["train_sequences"], pf["mean_length"]


def _model(config: dict, name: str) -> dict:
    try:
        return model_hparams(config["models"][name])
    except KeyError:
        raise InputError(f"models.{name}: unknown model") from None


def price_job(job: dict, config: dict, workdir: Path, gpu: str, efficiency: float) -> dict:
    """Tokens, FLOPs per token and GPU-hours of one GPU job (rule pretrain, finetune or evaluate)."""
    wc, rule = job["wildcards"], job["rule"]
    cfg = _model(config, wc["model"])
    params = resources.n_params(cfg)
    fam = cfg["family"]
    if rule == "pretrain":
        hp = config["pretrain"][fam]
        n, mean_len = _corpus(config, workdir, cfg["corpus"])
        tokens = (1 if fam == "pelmo" else 2) * n * mean_len * hp["epochs"]  # P-ELMo's LM: single sequences
        context, flops_scale, precision = (2 * mean_len if fam == "tfm" else mean_len), 1.0, hp.get("precision", "fp32")
    else:
        ft = dict(config["finetune"][fam])
        ft.update((ft.pop("tasks", None) or {}).get(wc["task"], {}))
        size = _size(config, wc["task"])
        mean_len, precision = size["mean_length"], ft.get("precision", "fp32")
        if rule == "finetune":
            examples = 2 * ft["epoch_pairs"] if "epoch_pairs" in ft else size["train_examples"]
            tokens, flops_scale = examples * mean_len * ft["max_epochs"], 1.0
        else:
            tokens, flops_scale = size["test_examples"] * mean_len, 1 / 3  # forward only: 2N of 6N
        context = mean_len
    flops = resources.flops_per_token(cfg, params, context) * flops_scale
    hours = resources.gpu_hours(tokens, flops, precision, gpu, efficiency)
    return {"params": params, "tokens": tokens, "flops_per_token": flops, "gpu_hours": hours}


def load_config(workdir: Path, configfiles: list[Path]) -> dict:
    """The workflow's config.yaml with each --configfile merged over it, dictionaries key by key (as Snakemake)."""
    import yaml
    from snakemake.utils import update_config

    config = {}
    for path in [workdir / "config.yaml", *configfiles]:
        try:
            update_config(config, yaml.safe_load(path.read_text()) or {})
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"{path}: {exc}") from None
    return config


def plan(config: dict, configfiles: list[Path], workdir: Path, snakefile: Path, gpu: str = resources.REFERENCE_GPU,
         efficiency: float = resources.GPU_EFFICIENCY, retries: int = 2) -> list[dict]:
    if gpu not in resources.GPU_PEAK_TFLOPS:
        raise InputError(f"--gpu {gpu}: unknown (known: {', '.join(resources.GPU_PEAK_TFLOPS)})")
    for exp in config.get("experiments", []):  # bad input stops here, before the dry run
        cfg = _model(config, exp["model"])
        _corpus(config, workdir, cfg["corpus"])
    for task in config.get("tasks", []):
        _size(config, task)
    rows: dict[str, dict] = {}
    for job in dry_run_jobs(workdir, snakefile, configfiles):
        wc, res = job["wildcards"], job["resources"]
        gpu_job = int(res.get("gpu", 0) or 0) > 0
        key = job["rule"]
        if gpu_job:
            key += "[" + ",".join(f"{k}={wc[k]}" for k in ("model", "ablation", "task") if k in wc) + "]"
        row = rows.setdefault(key, {"job_class": key, "jobs": 0, "params": "", "tokens": 0.0,
                                    "flops_per_token": "", "gpu_hours": 0.0, "gpu": gpu if gpu_job else "",
                                    "mem_mb": int(res.get("mem_mb", 0) or 0),
                                    "runtime_min": int(res.get("runtime", 0) or 0),
                                    "slurm_request": _request(res), "max_job_hours": 0.0})
        row["jobs"] += 1
        if gpu_job and job["rule"] in PRICED:
            priced = price_job(job, config, workdir, gpu, efficiency)
            row.update(params=priced["params"], flops_per_token=round(priced["flops_per_token"]))
            row["tokens"] += priced["tokens"]
            row["gpu_hours"] += priced["gpu_hours"]  # the same work on more GPUs: the same GPU-hours, ideally
            row["max_job_hours"] = max(row["max_job_hours"], priced["gpu_hours"] / int(res["gpu"]))  # wall
    out = []
    for row in sorted(rows.values(), key=lambda r: (r["params"] == "", r["job_class"])):
        # runtime is base x attempt (rules/common.smk runtime_minutes); every attempt resumes from the state
        attempts = retries + 1
        covered = row["runtime_min"] * attempts * (attempts + 1) // 2
        need = row.pop("max_job_hours") * 60
        out.append({**row, "tokens": round(row["tokens"]), "gpu_hours": round(row["gpu_hours"], 2),
                    "attempts": attempts, "covered_min": covered,
                    "covers_estimate": ("yes" if covered >= need else "NO") if row["params"] != "" else ""})
    total = {c: "" for c in COLUMNS}
    total.update(job_class="total", jobs=sum(r["jobs"] for r in out), tokens=sum(r["tokens"] for r in out),
                 gpu_hours=round(sum(r["gpu_hours"] for r in out), 2), gpu=gpu,
                 covers_estimate="yes" if all(r["covers_estimate"] != "NO" for r in out) else "NO")
    return [*out, total]


def _request(res: dict) -> str:
    keys = ("gpu", "cpus_per_gpu", "mem_mb", "runtime")
    return " ".join(f"{k}={res[k]}" for k in keys if k in res)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="price the DAG a config defines (GPU-hours per job class), before running")
    p.add_argument("--configfile", type=Path, nargs="+", required=True,
                   help="merged over the workflow's config.yaml, as `snakemake --configfile`")
    p.add_argument("--out", type=Path, default=None, help="CSV (default: stdout)")
    p.add_argument("--workdir", type=Path, default=Path("."),
                   help="where the workflow runs (its config.yaml, results/)")
    p.add_argument("--snakefile", type=Path, default=None, help="default: Snakefile in --workdir")
    p.add_argument("--gpu", default=resources.REFERENCE_GPU, help="reference GPU for the peak figures")
    p.add_argument("--efficiency", type=float, default=resources.GPU_EFFICIENCY,
                   help=f"sustained share of the GPU's peak (default {resources.GPU_EFFICIENCY})")
    p.add_argument("--retries", type=int, default=2, help="the profile's retries (slurm/config.yaml)")
    p.set_defaults(func=run)


def run(args) -> None:
    from plus.io import atomic_path

    if not math.isfinite(args.efficiency) or not 0 < args.efficiency <= 1:
        raise InputError(f"--efficiency {args.efficiency}: must be in (0, 1]")
    workdir = args.workdir.resolve()
    snakefile = (args.snakefile or workdir / "Snakefile").resolve()
    rows = plan(load_config(workdir, args.configfile), args.configfile, workdir, snakefile, args.gpu,
                args.efficiency, args.retries)
    text = to_csv(rows)
    if args.out is None:
        sys.stdout.write(text)
    else:
        with atomic_path(args.out) as tmp:
            Path(tmp).write_text(text)
