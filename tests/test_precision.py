"""Mixed precision (`precision: bf16`): bfloat16 autocast of forward passes and losses in pre-training and
fine-tuning, close to float32, with float32 parameters, and resumable. On CPU (here) the LSTMs stay float32."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_pretrain import HP, corpus, golden_step, tiny_hparams  # noqa: F401 - corpus: the session fixture
from test_workflow import ROOT, snakemake, workdir

from plus.data import convert as C
from plus.io import read_json
from plus.models import PlusTFM
from plus.tasks.registry import get_task
from plus.train.common import autocast, build_optimizer
from plus.train.evaluate import evaluate
from plus.train.finetune import finetune
from plus.train.finetune_batches import make_batch as ft_batch
from plus.train.finetune_losses import combined_loss
from plus.train.finetune_model import FinetuneModel
from plus.train.hparams import finetune_hp
from plus.train.pretrain import forward_losses, pretrain
from plus.train.pretrain_batches import make_batch

EMB = Path(__file__).parents[1] / "data" / "embedded"
TFM = {"family": "tfm", "hidden_dim": 32, "num_layers": 2, "num_heads": 4, "ff_dim": 64, "max_len": 64,
       "dropout": 0.0}


def test_autocast_is_off_for_fp32_bf16_for_bf16_and_refuses_fp16():
    with autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with pytest.raises(SystemExit, match="precision.*fp16"):
        autocast("cpu", "fp16")


def pretrain_case(case):
    if case.startswith("rnn"):
        model, batch, _ = golden_step()
        model.lstm_impl = case.split("-")[1]
        return model, batch, "rnn"
    torch.manual_seed(0)
    model = PlusTFM(**{k: v for k, v in TFM.items() if k != "family"})
    rng = np.random.default_rng(0)
    a, b = ([rng.integers(1, 21, n) for n in lens] for lens in ((20, 25, 30, 18), (22, 15, 28, 30)))
    return model, make_batch("tfm", a, b, [1, 0, 1, 0], rng, HP, TFM["max_len"]), "tfm"


def grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("case", ["rnn-flip", "rnn-packed", "tfm"])
def test_bf16_pretraining_step_is_close_to_fp32_with_float32_parameters(case):
    model, batch, family = pretrain_case(case)
    fp32 = forward_losses(model, batch, family, HP, {}, "cpu", True)
    fp32["loss"].backward()
    g32 = grads(model)
    model.zero_grad(set_to_none=True)
    bf16 = forward_losses(model, batch, family, replace(HP, precision="bf16"), {}, "cpu", True)
    for key in ("loss", "mlm_loss", "sfp_loss"):
        assert bf16[key].dtype == torch.float32 and torch.isfinite(bf16[key]), key
        assert bf16[key].item() == pytest.approx(fp32[key].item(), rel=5e-2), key
    assert bf16["loss"].item() != fp32["loss"].item()  # the bf16 path did run in bf16
    bf16["loss"].backward()
    g16 = grads(model)
    assert torch.isfinite(g16).all() and torch.nn.functional.cosine_similarity(g16, g32, 0) > 0.99
    opt, _, _ = build_optimizer(model, HP, 1, {})
    opt.step()
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())


def run(corpus_dir, out: Path, hp):
    return pretrain(corpus_dir, 3, hp, out / "state", out / "model.pt", out / "metrics.json", out / "curve.csv",
                    progress=False)


@pytest.mark.parametrize("family", ["rnn", "tfm"])
def test_bf16_pretraining_runs_and_resumes_to_the_same_model(corpus, tmp_path, family,  # noqa: F811
                                                            signal_after_save):
    hp = tiny_hparams(epochs=1, eval_every=5, precision="bf16")  # 15 steps, evaluations at 5, 10 and 15
    hp["save_every_steps"] = 10
    if family == "tfm":
        hp["model"] = {**TFM, "corpus": "rnn"}
    run(corpus, tmp_path / "straight", hp)
    signal_after_save(1)  # SIGTERM after the save at step 10: the run stops there
    with pytest.raises(SystemExit):
        run(corpus, tmp_path / "resumed", hp)
    signal_after_save(0)
    assert torch.load(tmp_path / "resumed/state/last.pt", weights_only=True)["payload"]["step"] == 10
    run(corpus, tmp_path / "resumed", hp)
    a = torch.load(tmp_path / "straight/model.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed/model.pt", weights_only=True)
    assert all(v.dtype == torch.float32 and torch.equal(v, b[k]) for k, v in a.items())
    m = read_json(tmp_path / "straight/metrics.json")
    assert m["precision"] == "bf16" and m["provenance"]["hparams"]["train"]["precision"] == "bf16"
    assert np.isfinite(m["test"]["loss"]) and m["steps"] == 15
    curve = pd.read_csv(tmp_path / "straight/curve.csv")
    assert np.isfinite(curve["loss"]).all()


@pytest.mark.parametrize("family", ["rnn", "tfm"])
def test_bf16_finetuning_loss_is_close_to_fp32(family):
    torch.manual_seed(0)
    model_cfg = {**TFM} if family == "tfm" else {"family": "rnn", "hidden_dim": 16, "num_layers": 1, "proj_dim": 8}
    model = FinetuneModel(get_task("solubility"), model_cfg, ("h", 16), {})
    rng = np.random.default_rng(0)
    records = [(f"p{i}", "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 30 + 5 * i)), i % 2) for i in range(6)]
    hp = finetune_hp(family, lr=1e-3, batch_size=6, max_epochs=1, lambda_task=0.7, lambda_mlm=0.3, mask_ratio=0.15,
                     max_pred=10)
    batch = ft_batch(model.task, family, records, rng, hp, model.max_len, mask=True)
    losses = []
    for precision in ("fp32", "bf16"):
        with autocast("cpu", precision):
            out, h = model(batch)
            losses.append(combined_loss(model, out, h, batch, hp, {}))
    assert losses[1].dtype == torch.float32 and torch.isfinite(losses[1])
    assert losses[1].item() == pytest.approx(losses[0].item(), rel=5e-2) and losses[1].item() != losses[0].item()


def test_bf16_finetuning_resumes_and_records_its_precision(tmp_path, signal_after_save):
    C.convert_task("solubility", "embedded", C.embedded_raw("solubility", EMB), tmp_path / "data", 0, max_train=48)
    train = {"lr": 3e-3, "batch_size": 16, "eval_batch_size": 64, "max_epochs": 2, "patience": -1,
             "lambda_mlm": 0.3, "lambda_task": 0.7, "max_pred": 10, "max_dev": 30, "precision": "bf16"}
    hp = {"model": {"family": "rnn", "hidden_dim": 16, "num_layers": 1, "proj_dim": 8}, "train": train,
          "head": ["h", 16], "fidelity": {}, "allow_cpu": True, "threads": 1, "save_every_minutes": 10}

    def tune(out, hparams):
        finetune("solubility", tmp_path / "data", 0, hparams, out / "state", out / "model.pt", out / "curve.csv")

    tune(tmp_path / "straight", hp)
    signal_after_save(1)  # SIGTERM after the first save (end of epoch 1)
    with pytest.raises(SystemExit):
        tune(tmp_path / "resumed", hp)
    signal_after_save(0)
    assert torch.load(tmp_path / "resumed/state/last.pt", weights_only=True)["payload"]["st"]["epoch"] == 1
    tune(tmp_path / "resumed", hp)
    a, b = (torch.load(tmp_path / d / "model.pt", weights_only=True) for d in ("straight", "resumed"))
    assert all(v.dtype == torch.float32 and torch.equal(v, b[k]) for k, v in a.items())
    m = evaluate("solubility", tmp_path / "data", tmp_path / "straight/model.pt", 0, hp, tmp_path / "metrics.json",
                 tmp_path / "pred.npz", n_boot=0)
    assert m["precision"] == "bf16" and np.isfinite(m["dev_loss"])


def test_config_precision_reaches_the_training_jobs(tmp_path):
    wd = workdir(tmp_path)
    (wd / "bf16.yaml").write_text("pretrain:\n  rnn: {precision: bf16}\nfinetune:\n  rnn: {precision: bf16}\n")
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "bf16.yaml", "-n", "-p",
                    "results/finetune/solubility/plus-rnn_tiny/plus/seed0/model.pt", cwd=wd)
    jobs = [line for line in res.stdout.splitlines() if "plus pretrain " in line or "plus finetune " in line]
    assert len(jobs) == 2 and all('"precision":"bf16"' in line for line in jobs)
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "demo/config.yaml", "-n", "-p",
                    "results/finetune/solubility/plus-rnn_tiny/plus/seed0/model.pt", cwd=wd)
    assert res.stdout.count('"precision":"fp32"') == 2  # the schema default
