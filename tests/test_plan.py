"""`plus plan`: the DAG's job classes priced from FLOPs per token and data sizes, checked against arithmetic
done here by hand from the test's own config; bad input stops with one line naming the key."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from plus import resources
from plus.train.pretrain import residue_counts

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "experiments": [{"model": "plus-rnn_tiny", "ablations": ["plus"]}],
    "seeds": [0],
    "plan": {"pfam": {"rnn": {"train_sequences": 1000, "mean_length": 200.0}},
             "tasks": {"stability": {"train_examples": 300, "test_examples": 50, "mean_length": 40.0}}},
}


def run_plan(tmp_path, overlay, *extra):
    """`plus plan` in a working directory that sees the repository's config and data, with no results/ (so
    the sizes come from the overlay's `plan` section, not from a corpus built by an earlier demo run)."""
    for name in ("config.yaml", "data", "demo"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(overlay))
    out = tmp_path / "plan.csv"
    proc = subprocess.run([sys.executable, "-m", "plus.cli", "plan", "--configfile", "demo/config.yaml",
                           "tiny.yaml", "--snakefile", str(ROOT / "Snakefile"), "--out", str(out), *extra],
                          cwd=tmp_path, capture_output=True, text=True)
    rows = {r["job_class"]: r for r in csv.DictReader(out.open())} if proc.returncode == 0 else None
    return proc, rows


def test_plan_arithmetic_on_a_tiny_config(tmp_path):
    proc, rows = run_plan(tmp_path, TINY, "--efficiency", "0.5", "--gpu", "H100")
    assert proc.returncode == 0, proc.stderr
    demo = yaml.safe_load((ROOT / "demo/config.yaml").read_text())
    epochs = demo["pretrain"]["rnn"]["epochs"]
    ft = {**yaml.safe_load((ROOT / "config.yaml").read_text())["finetune"]["rnn"], **demo["finetune"]["rnn"]}
    max_epochs = {**ft, **ft["tasks"]["stability"]}.get("max_epochs")
    seconds_per_flop = 1 / (resources.GPU_PEAK_TFLOPS["H100"]["tf32"] * 1e12 * 0.5)

    pre = rows["pretrain[model=plus-rnn_tiny,ablation=plus]"]
    params = int(pre["params"])
    assert int(pre["jobs"]) == 1 and int(pre["flops_per_token"]) == 6 * params
    tokens = 2 * 1000 * 200.0 * epochs  # pairs: anchor + partner per training sequence and epoch
    assert int(pre["tokens"]) == round(tokens)
    assert float(pre["gpu_hours"]) == round(tokens * 6 * params * seconds_per_flop / 3600, 2)

    fine = [r for k, r in rows.items() if k.startswith("finetune[") and "task=stability" in k]
    assert {r["job_class"] for r in fine} == {"finetune[model=plus-rnn_tiny,ablation=plus,task=stability]"}
    for r in fine:
        assert int(r["tokens"]) == round(300 * 40.0 * max_epochs)
    ev = rows["evaluate[model=plus-rnn_tiny,ablation=plus,task=stability]"]
    assert int(ev["tokens"]) == 50 * 40 and int(ev["flops_per_token"]) == 2 * params

    total = rows["total"]
    body = [r for k, r in rows.items() if k != "total"]
    assert int(total["jobs"]) == sum(int(r["jobs"]) for r in body)
    assert abs(float(total["gpu_hours"]) - sum(float(r["gpu_hours"]) for r in body)) < 0.01 * len(body) + 1e-9
    # the request is what the rule asks for; covered = runtime x (1 + 2 + 3) with two retries
    assert "mem_mb=" in pre["slurm_request"]
    assert int(pre["covered_min"]) == 6 * int(pre["runtime_min"]) and pre["covers_estimate"] == "yes"


def test_host_memory_requests_follow_the_model(tmp_path):
    """mem_mb: the family's measured figure (rules/common.smk), x gpus for pre-training; a model's
    pretrain_mem_mb / finetune_mem_mb replace it and stay out of its --hparams (so out of its run definition)."""
    _, rows = run_plan(tmp_path, TINY)
    mem = {k.split("[")[0]: int(r["mem_mb"]) for k, r in rows.items() if "task=stability" in k or "pretrain[" in k}
    assert mem["pretrain"] > mem["finetune"] == mem["evaluate"] > 0  # the corpus pages and loader workers
    demo = yaml.safe_load((ROOT / "demo/config.yaml").read_text())
    model = {**demo["models"]["plus-rnn_tiny"], "gpus": 2, "pretrain_mem_mb": 1234, "finetune_mem_mb": 777}
    override = tmp_path / "override"
    override.mkdir()
    _, rows = run_plan(override, {**TINY, "models": {"plus-rnn_tiny": model}})
    assert int(rows["pretrain[model=plus-rnn_tiny,ablation=plus]"]["mem_mb"]) == 2 * 1234
    assert int(rows["finetune[model=plus-rnn_tiny,ablation=plus,task=stability]"]["mem_mb"]) == 777
    assert int(rows["evaluate[model=plus-rnn_tiny,ablation=plus,task=stability]"]["mem_mb"]) == 777
    from plus.train.hparams import model_hparams

    assert set(model_hparams(model)) == set(model) - {"heads", "label", "pretrain_mem_mb", "finetune_mem_mb"}


def test_plan_unknown_model_names_the_key(tmp_path):
    proc, _ = run_plan(tmp_path, {**TINY, "experiments": [{"model": "plus-rnn_huge", "ablations": ["plus"]}]})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: models.plus-rnn_huge: unknown model"


def test_plan_task_without_sizes_names_the_key(tmp_path):
    bad = {**TINY, "plan": {**TINY["plan"], "tasks": {**TINY["plan"]["tasks"], "secstr": {"mean_length": None}}}}
    proc, _ = run_plan(tmp_path, bad)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: plan.tasks.secstr: no data sizes")


def test_residue_counts_in_chunks_equal_one_bincount(tmp_path):
    """The pre-training frequency baseline counts a memory-mapped corpus in chunks (a bincount over the whole
    Pfam 27.0 corpus made a 24 GiB int64 copy): same counts, at a chunk size that splits the array unevenly."""
    rng = np.random.default_rng(0)
    tokens = np.lib.format.open_memmap(tmp_path / "t.npy", mode="w+", dtype=np.uint8, shape=(100_003,))
    tokens[:] = rng.integers(1, 22, tokens.shape)
    end = 99_991
    expected = np.bincount(np.asarray(tokens[:end]), minlength=22)
    assert np.array_equal(residue_counts(tokens, end, chunk=4096), expected)
    assert residue_counts(tokens, end, chunk=4096).sum() == end


def test_plan_reads_a_corpus_stats_json_only_when_made_with_the_config_settings(tmp_path):
    """A corpus another config built in the same directory (say the demo's) must not price this config's DAG."""
    pf = yaml.safe_load((ROOT / "demo/config.yaml").read_text())["pfam"]
    params = {"seed": pf["split_seed"], "test_fraction": pf["test_fraction"], "val_fraction": pf["val_fraction"],
              "max_len": pf["variants"]["rnn"]["max_len"], "min_len": pf["min_len"],
              "min_family_size": pf["min_family_size"]}
    stats = tmp_path / "results/pfam/rnn/stats.json"
    stats.parent.mkdir(parents=True)
    for made, expected in [({**params, "min_family_size": params["min_family_size"] + 1}, 2 * 1000 * 200.0),
                           (params, 2 * 7 * 50.0)]:
        stats.write_text(json.dumps({"params": made, "after_family_filter": {"train": 7, "train_tokens": 350}}))
        work = tmp_path / f"w{len(list(tmp_path.glob('w*')))}"
        work.mkdir()
        (work / "results").symlink_to(tmp_path / "results")
        proc, rows = run_plan(work, TINY)
        assert proc.returncode == 0, proc.stderr
        epochs = yaml.safe_load((ROOT / "demo/config.yaml").read_text())["pretrain"]["rnn"]["epochs"]
        assert int(rows["pretrain[model=plus-rnn_tiny,ablation=plus]"]["tokens"]) == round(expected * epochs)


def test_plan_sizes_a_users_task_from_its_csvs(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("sequence,label\nMKVLA,a\nMKL,b\nMKWWWWW,a\n")
    test.write_text("sequence,label\nMKV,a\nMKLL,b\n")
    overlay = {**TINY, "tasks": ["mine"],
               "custom_tasks": {"mine": {"kind": "protein_classification", "train": str(train), "test": str(test)}}}
    proc, rows = run_plan(tmp_path / "w", overlay) if (tmp_path / "w").mkdir() is None else (None, None)
    assert proc.returncode == 0, proc.stderr
    ev = rows["evaluate[model=plus-rnn_tiny,ablation=plus,task=mine]"]
    assert int(ev["tokens"]) == round(2 * (5 + 3 + 7) / 3)  # test examples x the training CSV's mean length
