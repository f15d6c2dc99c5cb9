"""Training hyper-parameters, resolved once from the `--hparams` JSON into frozen dataclasses with one default per
key (pre-training: the defaults of schemas/config.schema.yaml, which config.yaml spells out per family; P-ELMo's
language model has its own). A key these classes do not know stops the run with a one-line error naming it.

The run's fingerprint (common.run_definition) is taken over the JSON as given, not over the resolved values, so
that the state files saved before these classes existed still resume.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from plus.io import InputError


@dataclass(frozen=True, kw_only=True)
class PretrainHP:
    """`train` of `plus pretrain` (config pretrain.<family>): MLM + same-family prediction."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    eval_every: int = 20000
    eval_batch_size: int = 256
    optimizer: str = "adam"
    weight_decay: float = 0.0
    warmup: float = 0.0  # fraction of the steps
    clip_grad_norm: float = 1.0
    mask_ratio: float = 0.15
    max_pred: int = 50
    lambda_mlm: float = 0.7  # -1: MLM loss off
    lambda_sfp: float = 0.3  # -1: SFP loss off
    max_steps: int | None = None
    max_eval_pairs: int | None = None
    max_eval_seqs: int | None = None  # P-ELMo LM: held-out sequences per evaluation
    max_train_seqs: int | None = None
    precision: str = "fp32"
    num_workers: int = 0
    log_every: int = 10  # steps per training row of the curve


@dataclass(frozen=True, kw_only=True)
class LMPretrainHP(PretrainHP):
    """P-ELMo's bidirectional LM: single sequences, no masking, no SFP; lambda_mlm weighs the LM NLL."""

    eval_batch_size: int = 128
    mask_ratio: float = 0.0
    max_pred: int = 0
    lambda_mlm: float = 1.0
    lambda_sfp: float = -1


@dataclass(frozen=True, kw_only=True)
class FinetuneHP:
    """`train` of `plus finetune` / `plus evaluate` (config finetune.<family>, with the task's overrides)."""

    lr: float
    batch_size: int
    max_epochs: int
    eval_batch_size: int = 64
    patience: int = 3  # -1: run every epoch
    mask_ratio: float = 0.15
    max_pred: int = 50
    lambda_mlm: float = -1  # auxiliary MLM loss; -1: off
    lambda_task: float = 1.0
    lambda_contact: float = -1  # P-ELMo homology contact-map loss; -1: off
    contact_batch: int = 10  # pairs per batch whose contact maps enter the loss
    augment: float = 0.0  # residue resampling probability (training only)
    epoch_pairs: int = 100000  # homology training pairs per epoch
    clip_grad_norm: float | None = None  # None: no clipping
    max_dev: int | None = None  # seeded dev subsample for model selection (None: the whole dev split)
    bucket_batches: int = 0  # 0: random batches (the reference); N: length-sorted windows of N batches
    precision: str = "fp32"


@dataclass(frozen=True, kw_only=True)
class TFMFinetuneHP(FinetuneHP):
    """PLUS-TFM fine-tuning: the reference's TFM masks at most 76 tokens per input."""

    max_pred: int = 76


PRETRAIN_HP = {"rnn": PretrainHP, "tfm": PretrainHP, "pelmo": LMPretrainHP}
FINETUNE_HP = {"rnn": FinetuneHP, "tfm": TFMFinetuneHP, "pelmo": FinetuneHP}
_NUMBER = (int, float)
_TYPES = {"int": (int,), "float": _NUMBER, "str": (str,), "int | None": (int, type(None)),
          "float | None": (*_NUMBER, type(None))}


def resolve(cls, train, where: str):
    """`train` (a dict) as an instance of `cls`: unknown or missing keys and values of the wrong type are an
    InputError naming the key. Values are kept as given (an int weight stays an int), so the arithmetic is that of
    the JSON."""
    if not isinstance(train, dict):
        raise InputError(f"{where}: expected an object of training settings, got {type(train).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in train.items():
        if key not in fields:
            raise InputError(f"{where}: unknown setting {key!r} (known: {', '.join(fields)})")
        allowed = _TYPES[fields[key].type]
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise InputError(f"{where}: {key} must be {fields[key].type}, got {value!r}")
    missing = [name for name, f in fields.items()
               if name not in train and f.default is dataclasses.MISSING]
    if missing:
        raise InputError(f"{where}: missing setting {missing[0]!r}")
    return cls(**train)


# Keys of a config.yaml model that describe the workflow's use of it (table label, fine-tuning heads, SLURM host
# memory), not the network: they stay out of --hparams' model, and so out of a run's definition.
NOT_MODEL_KEYS = ("heads", "label", "pretrain_mem_mb", "finetune_mem_mb")


def model_hparams(model_cfg: dict) -> dict:
    """The network part of a config.yaml model: --hparams' model."""
    return {k: v for k, v in model_cfg.items() if k not in NOT_MODEL_KEYS}


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """The whole `--hparams` object of a training or evaluation job."""

    model: dict
    train: PretrainHP | FinetuneHP
    fidelity: dict
    head: tuple | None = None  # fine-tuning: (source "h"/"z", hidden size) of the MLP head
    allow_cpu: bool = False
    threads: int | None = None
    save_every_minutes: float = 10
    save_every_steps: int | None = None

    @property
    def family(self) -> str:
        return self.model["family"]


_RUN_KEYS = {f.name for f in dataclasses.fields(RunSettings)}


def _settings(hparams, table: dict, what: str, head: bool) -> RunSettings:
    if not isinstance(hparams, dict):
        raise InputError(f"--hparams: expected a JSON object, got {type(hparams).__name__}")
    known = _RUN_KEYS - ({"head"} if not head else set())
    unknown = [k for k in hparams if k not in known]
    if unknown:
        raise InputError(f"--hparams: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    for key in ("model", "train"):
        if key not in hparams:
            raise InputError(f"--hparams: missing key {key!r}")
    model = hparams["model"]
    if not isinstance(model, dict) or model.get("family") not in table:
        raise InputError(f"--hparams: model.family must be one of {', '.join(table)}, got "
                         f"{model.get('family') if isinstance(model, dict) else model!r}")
    cls = table[model["family"]]
    run = {k: v for k, v in hparams.items() if k not in ("train", "fidelity", "head")}
    fidelity = hparams.get("fidelity") or {}
    if not isinstance(fidelity, dict):
        raise InputError(f"--hparams: fidelity must be an object, got {fidelity!r}")
    head_cfg = hparams.get("head")
    return RunSettings(**run, train=resolve(cls, hparams["train"], f"--hparams train ({what} {model['family']})"),
                       fidelity=fidelity, head=tuple(head_cfg) if head_cfg else None)


def pretrain_settings(hparams) -> RunSettings:
    """The settings of `plus pretrain`."""
    return _settings(hparams, PRETRAIN_HP, "pretrain", head=False)


def finetune_settings(hparams) -> RunSettings:
    """The settings of `plus finetune` and `plus evaluate`."""
    return _settings(hparams, FINETUNE_HP, "finetune", head=True)


def pretrain_hp(family: str, **train) -> PretrainHP:
    """Pre-training settings of one family from keyword arguments (tests, benchmarks)."""
    return resolve(PRETRAIN_HP[family], train, f"pretrain {family}")


def finetune_hp(family: str, **train) -> FinetuneHP:
    """Fine-tuning settings of one family from keyword arguments (tests, benchmarks)."""
    return resolve(FINETUNE_HP[family], train, f"finetune {family}")
