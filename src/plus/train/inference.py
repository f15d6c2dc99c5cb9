"""Inference of a fine-tuned model: per-example outputs on unmasked inputs and, for model selection, the
lambda-weighted dev loss."""

from __future__ import annotations

import numpy as np
import torch

from plus.train.common import autocast, eval_batches
from plus.train.finetune_batches import chunk_records, make_batch, to_device
from plus.train.finetune_losses import contact_loss, mlm_loss, task_loss
from plus.train.finetune_model import FinetuneModel
from plus.train.hparams import FinetuneHP
from plus.train.masking import loss_active
from plus.train.state import Preemption


@torch.no_grad()
def predict(model: FinetuneModel, records, hp: FinetuneHP, device, with_loss=False, seed=0, contacts=None,
            stop: Preemption | None = None):
    """Per-example outputs (numpy) of unmasked inputs, plus the dev loss (task and, with `contacts`, contact
    maps on clean input, MLM on masked input, lambda-weighted) when `with_loss`. With `stop`: Interrupted
    between batches once a stop signal arrived."""
    model.eval()
    task, family = model.task, model.family
    recs, owner = chunk_records(task, family, records, model.max_len)
    # batches of similar lengths: padding costs time (and, for pairs, an L0 x L1 alignment per pair)
    size = [max(len(r[2]), len(r[3])) if task.kind == "pair" else len(r[1]) for r in recs]
    outs = [None] * len(recs)
    loss_sum, n_sum = 0.0, 0
    rng = np.random.default_rng([seed, 104729])
    precision = hp.precision
    for idx in eval_batches(size, hp.eval_batch_size):
        if stop is not None:
            stop.check()
        chunk = [recs[i] for i in idx]
        batch = to_device(make_batch(task, family, chunk, rng, hp, model.max_len, mask=False,
                               contacts=contacts if with_loss else None), device)
        with autocast(device, precision):
            out, h = model(batch)
            if with_loss:
                loss = hp.lambda_task * task_loss(task, family, out, batch, {})
                if "cmaps" in batch and loss_active(hp.lambda_contact):
                    loss = loss + hp.lambda_contact * sum(contact_loss(model, h, batch)) / 2
                if loss_active(hp.lambda_mlm):
                    mb = to_device(make_batch(task, family, chunk, rng, hp, model.max_len, mask=True), device)
                    _, hm = model(mb)
                    la, lb = mlm_loss(model, hm, mb, {})
                    loss = loss + hp.lambda_mlm * (la + lb) / 2
                loss_sum += float(loss) * len(idx)
                n_sum += len(idx)
        out = out.float().cpu().numpy()
        for k, i in enumerate(idx):
            outs[i] = out[k, :len(recs[i][1])] if task.kind == "residue" else out[k]
    model.train()
    if owner is not None:  # stitch TFM chunks back together
        merged = [[] for _ in records]
        for o, i in zip(outs, owner):
            merged[i].append(o)
        outs = [np.concatenate(m) for m in merged]
    if task.kind != "residue":
        outs = np.stack(outs) if outs else np.zeros((0, task.n_out))
    return outs, (loss_sum / max(n_sum, 1) if with_loss else None)
