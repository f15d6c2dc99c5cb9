"""Pre-training engine: the reference loss on the golden step, the ablations, resume after SIGKILL, DDP,
and that a short run on the embedded Pfam corpus learns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from golden_set import GOLDEN, pretrain_hparams, rnn_kwargs

from plus.models import PlusRNN
from plus.train.common import build_optimizer
from plus.train.hparams import pretrain_hp
from plus.train.pretrain import forward_losses

ROOT = Path(__file__).parents[1]
HP = pretrain_hp("rnn", **pretrain_hparams())  # the recorded step's settings (golden pretrain_step.json run_config)


def golden_step():
    d = np.load(GOLDEN / "pretrain_step_inputs.npz")
    cat = {k: torch.as_tensor(np.concatenate([d[f"{k}0"], d[f"{k}1"]]))
           for k in ("tokens", "lengths", "masked_pos", "masked_tokens", "masked_weights")}
    labels = d["labels"][:, 0].astype(np.float32)
    batch = {**cat, "labels": torch.as_tensor(labels), "n_pairs": len(labels)}
    model = PlusRNN(**rnn_kwargs())
    model.load_state_dict(torch.load(GOLDEN / "plus_rnn_sfp_state_dict.pt", weights_only=True))
    return model, batch, d


@pytest.mark.parametrize("impl", ["flip", "packed"])
def test_golden_step_reference_loss_gradients_and_update(impl):
    model, batch, d = golden_step()
    model.lstm_impl = impl
    ref = json.loads((GOLDEN / "pretrain_step.json").read_text())
    out = forward_losses(model, batch, "rnn", HP, {"b1_drop_second_mlm_loss": True}, "cpu", True)
    assert out["mlm_loss_a"].item() == pytest.approx(ref["mlm_loss_A_unscaled"], rel=1e-5)
    assert out["mlm_loss_b"].item() == pytest.approx(ref["mlm_loss_B_unscaled"], rel=1e-5)
    assert out["sfp_loss"].item() == pytest.approx(ref["sfp_bce_unscaled"], rel=1e-5)
    assert out["loss"].item() == pytest.approx(ref["ref_total_loss"], rel=1e-5)
    assert out["mlm_correct"] == ref["mlm_correct_A"] + ref["mlm_correct_B"]
    assert out["sfp_correct"] == ref["sfp_correct_ref_threshold_logit_gt_0.5"]
    out["loss"].backward()
    for name, p in model.named_parameters():
        g = d[f"grad__{name}"]
        np.testing.assert_allclose(p.grad.numpy(), g, atol=1e-7, rtol=1e-4, err_msg=name)
    opt, _, _ = build_optimizer(model, HP, 1, {})
    torch.nn.utils.clip_grad_norm_(model.parameters(), HP.clip_grad_norm)
    opt.step()
    after = torch.load(GOLDEN / "pretrain_step_state_dict_after.pt", weights_only=True)
    for name, p in model.state_dict().items():
        if name == "fc.bias":  # analytically zero gradient: ill-conditioned (golden README)
            continue
        keep = np.abs(d[f"grad__{name}"]) >= 1e-6
        np.testing.assert_allclose(p.numpy()[keep], after[name].numpy()[keep], atol=1e-6, err_msg=name)


def test_golden_step_corrected_loss_counts_both_sequences():
    model, batch, _ = golden_step()
    ref = json.loads((GOLDEN / "pretrain_step.json").read_text())
    out = forward_losses(model, batch, "rnn", HP, {"b1_drop_second_mlm_loss": False}, "cpu", True)
    assert out["loss"].item() == pytest.approx(ref["fixed_total_mean_AB"], rel=1e-5)


def test_mlm_only_gives_no_sfp_gradient_and_sfp_only_no_decoder_gradient():
    model, batch, _ = golden_step()
    out = forward_losses(model, batch, "rnn", replace(HP, lambda_sfp=-1), {}, "cpu", True, want_sfp=False)
    out["loss"].backward()
    assert model.ordinal_weight.grad is None and model.fc.weight.grad is None
    assert model.decoder.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    out = forward_losses(model, batch, "rnn", replace(HP, lambda_mlm=-1), {}, "cpu", True, want_mlm=False)
    out["loss"].backward()
    assert model.decoder.weight.grad is None and model.fc.weight.grad.abs().sum() > 0


def test_config_reproduces_spec_pretraining_hyperparameters():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())["pretrain"]
    spec = {  # spec §2.2-2.4
        "rnn": dict(epochs=5, batch_size=64, eval_batch_size=512, optimizer="adam", lr=1e-3, weight_decay=0.0,
                    clip_grad_norm=1.0, mask_ratio=0.15, max_pred=50, lambda_mlm=0.7, lambda_sfp=0.3,
                    eval_every=20000),
        "tfm": dict(epochs=10, batch_size=128, eval_batch_size=128, optimizer="bertadam", lr=1e-4, warmup=0.01,
                    weight_decay=0.01, clip_grad_norm=1.0, mask_ratio=0.15, max_pred=76, lambda_mlm=0.7,
                    lambda_sfp=0.3, eval_every=20000),
        "pelmo": dict(epochs=5, batch_size=64, eval_batch_size=128, optimizer="adam", lr=1e-3, lambda_mlm=1.0,
                      clip_grad_norm=1.0),
    }
    for family, values in spec.items():
        for key, value in values.items():
            assert cfg[family][key] == value, (family, key)
    models = yaml.safe_load((ROOT / "config.yaml").read_text())["models"]
    assert (models["plus-rnn_base"]["hidden_dim"], models["plus-rnn_large"]["hidden_dim"]) == (512, 1024)
    assert models["plus-tfm"]["num_layers"] == 12 and models["plus-tfm"]["hidden_dim"] == 768


# ------------------------------------------------------------------ runs on the embedded Pfam corpus
@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    from plus.data.pfam import preprocess
    from plus.data.pfam_demo import build_demo_corpus

    tmp = tmp_path_factory.mktemp("pfam")
    seeds = sorted(p for p in (ROOT / "data/embedded/pfam").glob("*/*") if p.suffix != ".hmm")
    build_demo_corpus(seeds, [], tmp / "Pfam-A.fasta.gz", enlarge=False)
    preprocess(tmp / "Pfam-A.fasta.gz", tmp / "rnn", seed=2020, test_fraction=0.2, min_len=20, max_len=400,
               min_family_size=10, val_fraction=0.1, n_test_pairs=200, n_val_pairs=200)
    return tmp / "rnn"


def tiny_hparams(**train):
    hp = {"epochs": 2, "batch_size": 16, "eval_batch_size": 64, "optimizer": "adam", "lr": 3e-3,
          "clip_grad_norm": 1.0, "mask_ratio": 0.15, "max_pred": 50, "lambda_mlm": 0.7, "lambda_sfp": 0.3,
          "eval_every": 10, "max_eval_pairs": 64, "log_every": 5}
    hp.update(train)
    return {"model": {"family": "rnn", "hidden_dim": 16, "num_layers": 1, "proj_dim": 8, "corpus": "rnn"},
            "train": hp, "fidelity": {}, "allow_cpu": True, "save_every_minutes": 10, "threads": 1}


def run_pretrain(corpus, out: Path, hparams, env=None):
    cmd = [sys.executable, "-m", "plus.cli", "pretrain", "--corpus", str(corpus), "--seed", "3",
           "--hparams", json.dumps(hparams), "--state-dir", str(out / "state"), "--out-model",
           str(out / "model.pt"), "--out-metrics", str(out / "metrics.json"), "--out-curve", str(out / "curve.csv")]
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_then_resume_gives_bitwise_identical_model(corpus, tmp_path):
    hp = tiny_hparams()
    hp["save_every_steps"] = 3
    assert run_pretrain(corpus, tmp_path / "straight", hp).wait() == 0
    proc = run_pretrain(corpus, tmp_path / "killed", hp)
    state = tmp_path / "killed/state/last.pt"
    kill_after = np.random.default_rng().integers(1, 4)  # a random number of saves
    saves, last = 0, None
    while proc.poll() is None and saves < kill_after:
        if state.exists() and state.stat().st_mtime_ns != last:
            last, saves = state.stat().st_mtime_ns, saves + 1
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed/model.pt").exists()
    resumed = run_pretrain(corpus, tmp_path / "killed", hp)
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    assert "resumed from" in err
    a = torch.load(tmp_path / "straight/model.pt", weights_only=True)
    b = torch.load(tmp_path / "killed/model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_two_process_torchrun_keeps_ranks_in_sync_and_loss_falls(corpus, tmp_path):
    hp = tiny_hparams(epochs=3)
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m",
           "plus.cli", "pretrain", "--corpus", str(corpus), "--seed", "0", "--hparams", json.dumps(hp),
           "--state-dir", str(tmp_path / "state"), "--out-model", str(tmp_path / "model.pt"),
           "--out-metrics", str(tmp_path / "metrics.json"), "--out-curve", str(tmp_path / "curve.csv")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    import pandas as pd

    train = pd.read_csv(tmp_path / "curve.csv").query("split == 'train'")
    assert train["loss"].iloc[-1] < train["loss"].iloc[0]


@pytest.mark.slow
def test_short_pretraining_learns_mlm_and_sfp(corpus, tmp_path):
    hp = tiny_hparams(epochs=24, eval_every=100, lr=5e-3)
    hp["model"] = {"family": "rnn", "hidden_dim": 64, "num_layers": 2, "proj_dim": 32, "corpus": "rnn"}
    hp["threads"] = 2
    proc = run_pretrain(corpus, tmp_path, hp)
    _, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    print(f"MLM acc {m['test']['mlm_acc']:.3f} (frequency baseline {m['baselines']['mlm_freq_acc']:.3f}), "
          f"SFP acc {m['test']['sfp_acc']:.3f} (chance 0.5)")
    assert m["test"]["mlm_acc"] > m["baselines"]["mlm_freq_acc"] + 0.03
    assert m["test"]["sfp_acc"] > 0.6
