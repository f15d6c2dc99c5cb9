"""The golden set the golden tests check (tests/golden/README.md): its directory and the sizes, seeds and
settings it recorded, read from its own files. No size, count, seed or configuration value of a particular
recorded set is written into a test: any set recorded by the same generator can replace tests/golden/
(or be named by PLUS_GOLDEN_DIR) and the same tests check it."""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path

import numpy as np

GOLDEN = Path(os.environ.get("PLUS_GOLDEN_DIR") or Path(__file__).parent / "golden")


@cache
def read(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text())


def numbered(npz_name: str, prefix: str) -> int:
    """How many arrays `prefix0`, `prefix1`, ... the .npz holds (proteins, inputs)."""
    with np.load(GOLDEN / npz_name) as f:
        return len([k for k in f.files if re.fullmatch(rf"{re.escape(prefix)}\d+", k)])


def rnn_kwargs(n_thresholds: int | None = None) -> dict:
    """PlusRNN arguments of the recorded PLUS-RNN (its reference config JSON); default: the SFP model's
    number of ordinal thresholds."""
    cfg = read("plus_rnn_config.json")
    ref = cfg["model_config_json"]
    k = cfg["sfp_model_num_thresholds"] if n_thresholds is None else n_thresholds
    return {"hidden_dim": ref["hidden_dim"], "num_layers": ref["num_layers"], "proj_dim": ref["embedding_dim"],
            "n_thresholds": k}


def hom_thresholds() -> int:
    return read("plus_rnn_config.json")["hom_model_num_thresholds"]


def tfm_kwargs() -> dict:
    """PlusTFM arguments of the recorded PLUS-TFM."""
    cfg = read("plus_tfm_config.json")
    ref = cfg["model_config_json"]
    return {"hidden_dim": ref["hidden_dim"], "num_layers": ref["num_layers"], "num_heads": ref["num_heads"],
            "ff_dim": ref["feedforward_dim"], "max_len": ref["max_len"], "dropout": ref["dropout"],
            "n_classes": cfg["num_classes"]}


def padded_length() -> int:
    return read("plus_tfm_config.json")["padded_length"]


def init_seed() -> int:
    """The torch seed set right before the recorded PLUS-RNN was constructed (pretrain_step.json model_init)."""
    found = re.search(r"torch\.manual_seed\((\d+)\)", read("pretrain_step.json")["model_init"])
    if not found:
        raise ValueError(f"{GOLDEN / 'pretrain_step.json'}: model_init names no torch.manual_seed")
    return int(found.group(1))


def pretrain_hparams() -> dict:
    """The recorded pre-training step's settings (the reference run config) as this package's hparams."""
    run = read("pretrain_step.json")["run_config"]
    return {"lambda_mlm": run["lm_loss_lambda"], "lambda_sfp": run["cls_loss_lambda"], "mask_ratio": run["mask_ratio"],
            "max_pred": run["max_pred"], "lr": run["learning_rate"], "optimizer": "adam",
            "clip_grad_norm": 1.0}  # the reference Trainer's constant, not a setting of the recorded set
