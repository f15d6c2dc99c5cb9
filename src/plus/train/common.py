"""Pieces shared by pre-training and fine-tuning: device and DDP set-up, mixed precision, model construction,
optimisers (the reference's BertAdam included), and the CSV training curve (resumable state: plus.train.state)."""

from __future__ import annotations

import csv
import math
import os
import random

import numpy as np
import torch
import torch.distributed as dist

from plus.io import InputError, atomic_path, atomic_write


# ------------------------------------------------------------------ device / distributed
class Runtime:
    """Device, rank and world size of this process (torchrun sets RANK/WORLD_SIZE/LOCAL_RANK)."""

    def __init__(self, allow_cpu: bool, threads: int | None = None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        elif allow_cpu:
            self.device = torch.device("cpu")
        else:
            raise SystemExit(
                "error: this job asks for a GPU but CUDA is not available "
                "(set pretrain.allow_cpu: true in the config to run on CPU on purpose)"
            )
        if threads and self.device.type == "cpu":
            torch.set_num_threads(threads)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def close(self):
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device | str, precision: str = "fp32"):
    """The context for forward passes and losses (never the optimiser step): bfloat16 autocast for "bf16",
    a no-op for "fp32". Parameters, gradients and optimiser state stay float32, and bf16 has float32's
    exponent range, so no gradient scaler is needed (the resumable state has no AMP scaler to save)."""
    if precision not in PRECISIONS:
        raise SystemExit(f"error: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------ evaluation batches
EVAL_RESIDUES_PER_RECORD = 200


def eval_batches(size, batch_size):
    """Record indices in batches of similar `size` (shortest first), each with at most `batch_size` records and
    at most batch_size x EVAL_RESIDUES_PER_RECORD padded residues: long records go in smaller batches, so a batch
    spanning short and long records never pads every record to the longest (outputs are batch-invariant)."""
    budget = batch_size * EVAL_RESIDUES_PER_RECORD
    batch = []
    for i in sorted(range(len(size)), key=size.__getitem__):
        if batch and (len(batch) == batch_size or (len(batch) + 1) * size[i] > budget):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


# ------------------------------------------------------------------ models
def build_encoder(model_cfg: dict, fidelity: dict, n_thresholds: int = 1, n_classes: int = 2):
    """Construct the encoder named by `model_cfg['family']` with sizes from the config (for P-ELMo: the
    encoder on top of the LM, see `build_lm`)."""
    from plus.models import PElmo, PlusRNN, PlusTFM

    fam = model_cfg["family"]
    if fam == "rnn":
        return PlusRNN(hidden_dim=model_cfg["hidden_dim"], num_layers=model_cfg["num_layers"],
                       proj_dim=model_cfg["proj_dim"], n_thresholds=n_thresholds)
    if fam == "tfm":
        return PlusTFM(hidden_dim=model_cfg["hidden_dim"], num_layers=model_cfg["num_layers"],
                       num_heads=model_cfg["num_heads"], ff_dim=model_cfg["ff_dim"],
                       max_len=model_cfg["max_len"], dropout=model_cfg.get("dropout", 0.1),
                       n_classes=n_classes,
                       layernorm="reference" if fidelity.get("b10_tfm_layernorm", True) else "standard")
    if fam == "pelmo":
        return PElmo(lm_dim=2 * model_cfg["lm_num_layers"] * model_cfg["lm_hidden_dim"],
                     lm_proj_dim=model_cfg.get("lm_proj_dim", 512), hidden_dim=model_cfg["hidden_dim"],
                     num_layers=model_cfg["num_layers"], proj_dim=model_cfg["proj_dim"], n_thresholds=n_thresholds)
    raise InputError(f"model family {fam!r}: pre-training/fine-tuning is implemented for rnn, tfm and pelmo")


def build_lm(model_cfg: dict):
    """P-ELMo's bidirectional language model (pre-trained by `plus pretrain`, frozen downstream)."""
    from plus.models import PElmoLM

    return PElmoLM(hidden_dim=model_cfg["lm_hidden_dim"], num_layers=model_cfg["lm_num_layers"])


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A state_dict saved by this package or by the reference (plain tensors; weights_only load)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: pre-trained model not found") from exc
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is bad input
        raise InputError(f"{path}: not a weights-only PyTorch state_dict ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: expected a dict of tensors (a state_dict)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_compatible(model: torch.nn.Module, state: dict, path) -> None:
    """Refuse a checkpoint of another architecture before any work starts (encoder tensors must match)."""
    own = model.state_dict()
    shared = [k for k in state if k in own]
    encoder_keys = [k for k in own if k.startswith(("rnn.", "transformer.", "embed."))]
    missing = [k for k in encoder_keys if k not in state]
    bad = [k for k in shared if own[k].shape != state[k].shape and k.startswith(("rnn.", "transformer.", "embed."))]
    if missing or bad:
        detail = f"missing {missing[:3]}" if missing else (
            f"{bad[0]}: checkpoint {tuple(state[bad[0]].shape)} vs model {tuple(own[bad[0]].shape)}")
        raise InputError(f"{path}: checkpoint does not fit this model's architecture ({detail})")


# ------------------------------------------------------------------ optimisers
class BertAdam(torch.optim.Optimizer):
    """The reference's BertAdam: Adam without bias correction, decoupled weight decay, per-tensor
    gradient clipping, learning rate scaled by a warm-up/linear-decay schedule (spec §2.4, B11)."""

    def __init__(self, params, lr, warmup, t_total, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                 max_grad_norm=1.0):
        super().__init__(params, dict(lr=lr, warmup=warmup, t_total=t_total, betas=betas, eps=eps,
                                      weight_decay=weight_decay, max_grad_norm=max_grad_norm))

    @staticmethod
    def schedule(progress: float, warmup: float) -> float:
        if progress < warmup:
            return progress / warmup
        return max((1.0 - progress) / max(1.0 - warmup, 1e-12), 0.0)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                grad = p.grad
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                b1, b2 = group["betas"]
                state["m"].mul_(b1).add_(grad, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
                update = state["m"] / (state["v"].sqrt() + group["eps"])
                if group["weight_decay"] > 0:
                    update = update + group["weight_decay"] * p
                lr = group["lr"]
                if group["t_total"] > 0:
                    lr = lr * self.schedule(state["step"] / group["t_total"], group["warmup"])
                p.add_(update, alpha=-lr)
                state["step"] += 1


def build_optimizer(model: torch.nn.Module, hp, total_steps: int, fidelity: dict):
    """Optimizer and LR scheduler (or None) per the settings (hparams.PretrainHP); returns (opt, sched, clip_global)."""
    name = hp.optimizer
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=hp.lr), None, True
    decay_all = fidelity.get("b11_decay_all_params", True)
    if name == "bertadam" and decay_all:
        opt = BertAdam(model.parameters(), lr=hp.lr, warmup=hp.warmup, t_total=total_steps,
                       weight_decay=hp.weight_decay, max_grad_norm=hp.clip_grad_norm)
        return opt, None, False
    # corrected BERT optimiser: AdamW, no decay on biases/LayerNorm, warm-up + linear decay, global clip
    no_decay = [p for n, p in model.named_parameters() if n.endswith(("bias", "gamma", "beta")) or ".norm" in n]
    ids = {id(p) for p in no_decay}
    decay = [p for p in model.parameters() if id(p) not in ids]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr, eps=1e-6)
    warm = hp.warmup
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: BertAdam.schedule(s / max(total_steps, 1), warm) if warm > 0 else
        max(1.0 - s / max(total_steps, 1), 0.0))
    return opt, sched, True


# ------------------------------------------------------------------ outputs
def write_curve(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write the training curve rows as CSV (union of keys, in first-seen order)."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with atomic_write(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in fields})


def _fmt(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def save_model(path: str | os.PathLike, state_dict: dict) -> None:
    """Write a plain-tensor state_dict (loadable with weights_only=True), atomically. Saved through a file
    object, the archive's inner name is fixed, so the same tensors give the same bytes on every rerun."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save({k: v.detach().cpu().clone() for k, v in state_dict.items()}, fh)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model
