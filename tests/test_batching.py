"""Speed features of the training loops, checked for what they must not change: evaluation batches by
padded size, length-bucketed training batches, and the glibc allocator tuning of the `plus` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from plus import cli
from plus.io import read_3line, read_fasta
from plus.tasks.registry import get_task
from plus.train.common import EVAL_RESIDUES_PER_RECORD, eval_batches
from plus.train.finetune_batches import bucket_order
from plus.train.finetune_model import FinetuneModel
from plus.train.hparams import finetune_hp
from plus.train.inference import predict

EMB = Path(__file__).parents[1] / "data" / "embedded"


def deeploc_records(n: int):
    """The first n real DeepLoc test proteins (sequence lengths 40..1000+), with a dummy label."""
    out = []
    for _, header, seq in read_fasta(EMB / "localization" / "deeploc_test_set.fasta.gz"):
        out.append((header.split()[0], seq[:1000], 0))
        if len(out) == n:
            return out
    return out


def test_eval_batches_cover_every_record_once_within_the_padding_budget():
    size = [len(r[1]) for r in deeploc_records(300)]
    order = sorted(range(len(size)), key=size.__getitem__)
    batches = list(eval_batches(size, 64))
    assert [i for b in batches for i in b] == order
    for b in batches:
        assert len(b) <= 64
        assert len(b) == 1 or len(b) * max(size[i] for i in b) <= 64 * EVAL_RESIDUES_PER_RECORD
    assert len(batches) > len(size) // 64 + 1  # long proteins went into smaller batches


@pytest.mark.parametrize("family", ["rnn", "tfm"])
def test_predictions_do_not_depend_on_the_evaluation_batch_size(family):
    torch.manual_seed(0)
    cfg = ({"family": "rnn", "hidden_dim": 16, "num_layers": 2, "proj_dim": 8} if family == "rnn" else
           {"family": "tfm", "hidden_dim": 16, "num_layers": 1, "num_heads": 2, "ff_dim": 32, "max_len": 512,
            "dropout": 0.0})
    model = FinetuneModel(get_task("localization"), cfg, ("h", 8), {"b2_sum_pooling": False})
    records = deeploc_records(40)
    settings = {"lr": 1e-3, "batch_size": 8, "max_epochs": 1}
    big, _ = predict(model, records, finetune_hp(family, **settings, eval_batch_size=256), torch.device("cpu"))
    small, _ = predict(model, records, finetune_hp(family, **settings, eval_batch_size=3), torch.device("cpu"))
    np.testing.assert_allclose(small, big, atol=1e-5)


def test_bucket_order_groups_similar_lengths_and_keeps_every_record():
    size = [len(seq) for _, _, seq, _ in read_3line(EMB / "transmembrane" / "3D_struct_DB.3line.gz")][:200]
    perm = np.random.default_rng(0).permutation(len(size))
    out = bucket_order(perm, size, 32, 4, np.random.default_rng(1))
    assert sorted(out.tolist()) == list(range(len(size)))
    batches = [out[k:k + 32] for k in range(0, len(out), 32)]
    assert len(batches[-1]) == len(size) % 32  # the short batch stays last
    padded = sum(len(b) * max(size[i] for i in b) for b in batches)
    random_padded = sum(len(b) * max(size[i] for i in b) for b in (perm[k:k + 32] for k in range(0, len(perm), 32)))
    assert padded < 0.8 * random_padded
    assert np.array_equal(out, bucket_order(perm, size, 32, 4, np.random.default_rng(1)))


def test_allocator_tuning_reexecs_once_and_respects_an_existing_setting(monkeypatch):
    calls = []

    def fake_execv(path, argv):
        calls.append((path, argv, os.environ.get("GLIBC_TUNABLES")))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", fake_execv)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
        pytest.skip("not glibc")
    with pytest.raises(SystemExit):
        cli.tune_allocator(["-m", "plus.cli", "finetune", "--task", "secstr"])
    assert calls == [(sys.executable, [sys.executable, "-m", "plus.cli", "finetune", "--task", "secstr"],
                      cli.MALLOC_TUNABLES)]
    monkeypatch.setenv("GLIBC_TUNABLES", "")  # the user's own setting (even empty) wins
    cli.tune_allocator(["-m", "plus.cli", "finetune"])
    assert len(calls) == 1


@pytest.mark.parametrize("family", ["rnn", "tfm", "pelmo"])
def test_allocator_setting_follows_the_model_family_of_the_command(family):
    """The measured policy (README "Speed on CPUs"): PLUS-TFM's jobs keep the 4 GiB mmap threshold, every other
    command the 256 MiB one; both spellings of --hparams are read, a malformed one leaves it to argparse."""
    hp = json.dumps({"model": {"family": family, "hidden_dim": 8}, "train": {}})
    want = cli.MALLOC_TUNABLES_BY_FAMILY.get(family, cli.MALLOC_TUNABLES)
    assert cli.malloc_tunables(["-m", "plus.cli", "pretrain", "--hparams", hp, "--seed", "0"]) == want
    assert cli.malloc_tunables(["pretrain", f"--hparams={hp}"]) == want
    assert cli.malloc_tunables(["pfam", "preprocess", "--input", "x"]) == cli.MALLOC_TUNABLES
    assert cli.malloc_tunables(["pretrain", "--hparams", "{not json"]) == cli.MALLOC_TUNABLES
    assert cli.malloc_tunables(["pretrain", "--hparams"]) == cli.MALLOC_TUNABLES
    assert (want == cli.MALLOC_TUNABLES) == (family != "tfm")


def test_plus_command_reruns_itself_with_the_tuned_allocator(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\nprint('GLIBC_TUNABLES=%s' % os.environ.get('GLIBC_TUNABLES'), file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    res = subprocess.run([sys.executable, "-m", "plus.cli", "--version"], env=env, capture_output=True, text=True)
    assert res.returncode == 0 and "plus-workflow" in res.stdout
    if os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):  # the second start sees the variable
        assert res.stderr.splitlines() == ["GLIBC_TUNABLES=None", f"GLIBC_TUNABLES={cli.MALLOC_TUNABLES}"]
