"""Fine-tuning losses: the task loss of each task kind, the auxiliary MLM loss, P-ELMo's contact-map loss and
their lambda-weighted sum (with the reference's B1 weighting)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plus.tasks.registry import Task
from plus.train.finetune_model import FinetuneModel
from plus.train.hparams import FinetuneHP
from plus.train.masking import loss_active


def task_loss(task: Task, family: str, outputs, batch, fidelity):
    """The task loss in float32 (outputs may be bf16 under autocast)."""
    t, outputs = batch["targets"], outputs.float()
    if task.kind == "pair":
        if family in ("rnn", "pelmo"):
            cum = (t[:, None] > torch.arange(4, device=t.device)[None, :]).float()
            return F.binary_cross_entropy_with_logits(outputs, cum)
        return F.cross_entropy(outputs, t)
    if task.kind == "residue":
        lengths = [len(x) for x in t]
        logits = torch.cat([outputs[i, :n] for i, n in enumerate(lengths)])
        return F.cross_entropy(logits, torch.cat(t).to(logits.device))
    if task.loss == "mse":
        return F.mse_loss(outputs[:, 0], t)
    return F.cross_entropy(outputs, t)


def mlm_loss(model: FinetuneModel, h, batch, fidelity):
    logp = model.encoder.mlm_logprobs(h, batch["masked_pos"])
    nll = -logp.gather(-1, batch["masked_tokens"].unsqueeze(-1)).squeeze(-1)
    w = batch["masked_weights"].float()
    if model.task.kind == "pair" and model.family == "rnn":
        n = batch["n_pairs"]
        la = (nll[:n] * w[:n]).sum() / w[:n].sum().clamp(min=1)
        lb = (nll[n:] * w[n:]).sum() / w[n:].sum().clamp(min=1)
        return la, lb
    loss = (nll * w).sum() / w.sum().clamp(min=1)
    return loss, loss


def contact_loss(model: FinetuneModel, h, batch):
    """P-ELMo contact-map BCE over the non-ignored entries of the selected pairs: (loss A, loss B)."""
    z = model.encoder.project(h)
    res_len, sel, n = (batch["lengths"] - 2).tolist(), batch["cm_index"].tolist(), batch["n_pairs"]
    out = []
    for side, offset in enumerate((0, n)):
        logits = torch.cat([model.contact(z[offset + i, :res_len[offset + i]][None]).flatten() for i in sel])
        labels = torch.cat([m.flatten() for m in batch["cmaps"][side * len(sel):(side + 1) * len(sel)]])
        keep = labels >= 0
        out.append(F.binary_cross_entropy_with_logits(logits[keep].float(), labels[keep].float())
                   if keep.any() else logits.sum() * 0)
    return out


def combined_loss(model, outputs, h, batch, hp: FinetuneHP, fidelity):
    lt, lm, lc = hp.lambda_task, hp.lambda_mlm, hp.lambda_contact
    b1 = model.task.kind == "pair" and fidelity.get("b1_drop_second_mlm_loss", True)
    total = lt * task_loss(model.task, model.family, outputs, batch, fidelity)
    if loss_active(lm) and batch["masked_weights"].any():
        la, lb = mlm_loss(model, h, batch, fidelity)
        total = total + ((lm + lm**2) * la if b1 else lm * (la + lb) / 2)  # B1, as in pre-training
    if loss_active(lc) and "cmaps" in batch:
        la, lb = contact_loss(model, h, batch)
        total = total + ((lc + lc**2) * la if b1 else lc * (la + lb) / 2)  # B1: the reference's contact branch too
    return total
