"""Typed training hyper-parameters: one default per key, agreeing with the config schema and config.yaml; the
workflow's own settings resolve; an unknown key stops the run with a one-line error naming it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from plus.cli import main
from plus.io import InputError
from plus.train.hparams import (
    FINETUNE_HP,
    PRETRAIN_HP,
    FinetuneHP,
    PretrainHP,
    finetune_settings,
    pretrain_settings,
)

ROOT = Path(__file__).parents[1]
SCHEMA = yaml.safe_load((ROOT / "schemas/config.schema.yaml").read_text())["$defs"]
PAPER = yaml.safe_load((ROOT / "config.yaml").read_text())
DEMO = yaml.safe_load((ROOT / "demo/config.yaml").read_text())


def defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def test_pretraining_defaults_are_the_schema_defaults():
    schema = {k: v["default"] for k, v in SCHEMA["pretrain_family"]["properties"].items()}
    ours = defaults(PretrainHP)
    assert {k: ours[k] for k in schema} == schema
    assert set(ours) - set(schema) == {"log_every"}  # a code-only knob (tests, benchmarks)


def test_pelmo_language_model_defaults_are_its_config_values():
    lm = PRETRAIN_HP["pelmo"]
    changed = {k: v for k, v in defaults(lm).items() if v != defaults(PretrainHP)[k]}
    assert changed and all(PAPER["pretrain"]["pelmo"][k] == v for k, v in changed.items())


def test_finetuning_keys_are_the_schema_keys():
    keys = set(SCHEMA["finetune_settings"]["properties"]) | {"precision"}
    assert {f.name for f in dataclasses.fields(FinetuneHP)} == keys
    assert defaults(FinetuneHP)["precision"] == SCHEMA["finetune_family"]["properties"]["precision"]["default"]
    assert defaults(FINETUNE_HP["tfm"])["max_pred"] == PAPER["finetune"]["tfm"]["max_pred"]  # the reference TFM's


@pytest.mark.parametrize("config", [PAPER, DEMO], ids=["paper", "demo"])
def test_every_configured_family_and_task_resolves(config):
    for fam, train in PAPER["pretrain"].items():
        if isinstance(train, dict):
            merged = {**train, **config["pretrain"].get(fam, {})}
            assert pretrain_settings({"model": {"family": fam}, "train": merged}).train.lr == merged["lr"]
    for fam, block in PAPER["finetune"].items():
        base = {**block, **config["finetune"].get(fam, {})}
        tasks = {**block.get("tasks", {}), **config["finetune"].get(fam, {}).get("tasks", {})}
        base.pop("tasks", None)
        for task in PAPER["tasks"]:
            train = {**base, **tasks.get(task, {})}
            hp = finetune_settings({"model": {"family": fam}, "train": train, "head": None}).train
            assert dataclasses.asdict(hp) == {**defaults(FINETUNE_HP[fam]), **train}


@pytest.mark.parametrize("hparams, key", [
    ({"model": {"family": "rnn"}, "train": {"lr": 1e-3, "batch_size": 8, "max_epochs": 1, "lamda_mlm": 0.3}},
     "'lamda_mlm'"),
    ({"model": {"family": "rnn"}, "train": {"lr": 1e-3, "batch_size": 8, "max_epochs": 1}, "fidelty": {}}, "'fidelty'"),
    ({"model": {"family": "rnn"}, "train": {"lr": 1e-3, "batch_size": 8}}, "'max_epochs'"),
    ({"model": {"family": "rnn"}, "train": {"lr": "fast", "batch_size": 8, "max_epochs": 1}}, "lr must be"),
])
def test_bad_finetuning_settings_name_the_key(hparams, key):
    with pytest.raises(InputError, match=key):
        finetune_settings(hparams)


def test_an_unknown_key_stops_the_cli_with_one_line(tmp_path, capsys):
    hp = {"model": {"family": "rnn", "hidden_dim": 8, "num_layers": 1, "proj_dim": 8},
          "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "eval_every": 1, "lamda_sfp": 0.3}, "allow_cpu": True}
    rc = main(["pretrain", "--corpus", str(tmp_path / "none"), "--seed", "0", "--hparams", json.dumps(hp),
               "--state-dir", str(tmp_path / "s"), "--out-model", str(tmp_path / "m.pt"),
               "--out-metrics", str(tmp_path / "m.json"), "--out-curve", str(tmp_path / "c.csv")])
    err = capsys.readouterr().err.strip().splitlines()  # (after a lock-drift warning, if any)
    assert rc == 2 and err[-1].startswith("error: --hparams train") and "'lamda_sfp'" in err[-1]
    assert not any(tmp_path.iterdir())  # nothing written
