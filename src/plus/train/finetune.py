"""`plus finetune` and `plus evaluate`: every task through one loop, driven by the task registry.

Protocol (spec §3.0): full fine-tuning with the auxiliary MLM loss where lambda_mlm != -1 (one masked
forward pass feeds both losses), dev loss selects the model after each epoch, patience, resumable state.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plus.data.alphabet import encode
from plus.data.tasks import load_manifest, read_split
from plus.io import InputError, atomic_path, write_json
from plus.models import MLPHead, load_state_dict_reference
from plus.models.plus_rnn import collate_rnn
from plus.models.plus_tfm import tfm_pair_input, tfm_single_input
from plus.tasks import metrics as M
from plus.tasks.registry import SUPPORTED, Task, get_task
from plus.train.common import (
    Runtime,
    StateFile,
    build_encoder,
    check_compatible,
    load_checkpoint,
    save_model,
    seed_everything,
    set_rng_state,
    write_curve,
)
from plus.train.homology_sampler import HomologySampler
from plus.train.masking import loss_active, mask_tokens, pad_targets


# ------------------------------------------------------------------ model
class FinetuneModel(nn.Module):
    """Encoder + task head. RNN: MLP head on h or z (ordinal SSA head for homology); TFM: its classifier."""

    def __init__(self, task: Task, model_cfg: dict, head_cfg, fidelity: dict):
        super().__init__()
        self.task, self.family = task, model_cfg["family"]
        n_thr = 4 if task.name == "homology" else 1
        n_cls = 5 if task.name == "homology" else task.n_out
        self.encoder = build_encoder(model_cfg, fidelity, n_thresholds=n_thr, n_classes=n_cls)
        self.max_len = model_cfg.get("max_len", 512)
        self.use_z = False
        if self.family == "rnn" and task.kind != "pair":
            src, hidden = head_cfg or ("h", 512)
            self.use_z = src == "z"
            d_in = model_cfg["proj_dim"] if self.use_z else 2 * model_cfg["hidden_dim"]
            pooling = None if task.kind == "residue" else (
                "reference_sum" if fidelity.get("b2_sum_pooling", True) else "attention")
            self.head = MLPHead(d_in, hidden, task.n_out, pooling)

    def forward(self, batch):
        """Task outputs and the encoder states (for the auxiliary MLM loss)."""
        enc = self.encoder
        if self.family == "rnn":
            h = enc(batch["tokens"], batch["lengths"])
            res_len = batch["lengths"] - 2
            if self.task.kind == "pair":
                n = batch["n_pairs"]
                z = enc.project(h)
                return enc.ordinal_logits(enc.ssa_score(z[:n], res_len[:n], z[n:], res_len[n:])), h
            x = enc.project(h) if self.use_z else h
            mask = torch.arange(h.shape[1], device=h.device)[None, :] < res_len[:, None]
            return self.head(x, mask), h
        h = enc(batch["tokens"], batch["segments"], batch["input_mask"])
        if self.task.kind == "residue":
            return enc.token_logits(h)[:, 1:-1], h
        return enc.cls_logits(h), h


# ------------------------------------------------------------------ batches
def make_batch(task: Task, family: str, records, rng, hp, max_len, mask: bool):
    """Collate records of one task kind; MLM-mask the inputs when `mask`."""
    do_mask = mask and loss_active(hp.get("lambda_mlm")) and hp.get("max_pred", 50) > 0
    if task.kind == "pair":
        seqs = [encode(r[2]) for r in records] + [encode(r[3]) for r in records]
        targets = torch.tensor([r[4] for r in records], dtype=torch.long)
    else:
        seqs = [encode(r[1]) for r in records]
        if task.kind == "residue":
            targets = [torch.tensor([task.label_chars.index(c) for c in r[2]]) for r in records]
        else:
            targets = torch.tensor([r[2] for r in records],
                                   dtype=torch.float32 if task.loss == "mse" else torch.long)
    batch = {"targets": targets, "n_pairs": len(records)}
    if family == "rnn":
        pos, orig, masked = [], [], []
        for s in seqs:
            m, p, o = (mask_tokens(s, rng, hp.get("mask_ratio", 0.15), hp.get("max_pred", 50)) if do_mask
                       else (np.asarray(s, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)))
            masked.append(m)
            pos.append(p)
            orig.append(o)
        batch["tokens"], batch["lengths"] = collate_rnn(masked)
    else:
        from plus.data.alphabet import TFM_MASK

        toks, segs, msks, pos, orig = [], [], [], [], []
        for k in range(len(records)):
            if task.kind == "pair":
                t, s, m = tfm_pair_input(seqs[k], seqs[k + len(records)], max_len)
            else:
                t, s, m = tfm_single_input(seqs[k], max_len)
            p, o = np.zeros(0, np.int64), np.zeros(0, np.int64)
            if do_mask:
                inner = np.flatnonzero(m)[1:-1]
                inner = inner[(t[inner] != 23) & (t[inner] != 24)]
                n_pred = min(hp.get("max_pred", 76), int(hp.get("mask_ratio", 0.15) * int(m.sum())))
                mt, p, o = mask_tokens(t[inner], rng, 0.15, n_pred, TFM_MASK, n_pred=n_pred)
                t = t.copy()
                t[inner] = mt
                p = inner[p]
            toks.append(t)
            segs.append(s)
            msks.append(m)
            pos.append(p)
            orig.append(o)
        width = max(int(m.sum()) for m in msks)
        batch.update(tokens=torch.as_tensor(np.stack(toks)[:, :width]),
                     segments=torch.as_tensor(np.stack(segs)[:, :width]),
                     input_mask=torch.as_tensor(np.stack(msks)[:, :width]).bool())
    batch.update(pad_targets(pos, orig))
    return batch


def chunk_records(task: Task, family: str, records, max_len):
    """PLUS-TFM reads at most max_len - 2 residues: residue-level records are cut into chunks (stitched back
    by `stitch`), protein-level records truncated (spec §3.0)."""
    if family != "tfm" or task.kind != "residue":
        return records, None
    size = max_len - 2
    out, owner = [], []
    for i, (ident, seq, lab) in enumerate(records):
        for s in range(0, max(len(seq), 1), size):
            out.append((ident, seq[s:s + size], lab[s:s + size]))
            owner.append(i)
    return out, owner


# ------------------------------------------------------------------ losses
def task_loss(task: Task, family: str, outputs, batch, fidelity):
    t = batch["targets"]
    if task.kind == "pair":
        if family == "rnn":
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


def combined_loss(model, outputs, h, batch, hp, fidelity):
    lt, lm = hp.get("lambda_task", 1.0), hp.get("lambda_mlm", -1)
    total = lt * task_loss(model.task, model.family, outputs, batch, fidelity)
    if loss_active(lm) and batch["masked_weights"].any():
        la, lb = mlm_loss(model, h, batch, fidelity)
        if model.task.kind == "pair" and fidelity.get("b1_drop_second_mlm_loss", True):
            total = total + (lm + lm**2) * la  # B1, as in pre-training
        else:
            total = total + lm * (la + lb) / 2
    return total


def _to(batch, device):
    return {k: (v.to(device) if torch.is_tensor(v) else [x.to(device) for x in v] if isinstance(v, list) else v)
            for k, v in batch.items()}


# ------------------------------------------------------------------ inference
@torch.no_grad()
def predict(model: FinetuneModel, records, hp, device, with_loss=False, seed=0):
    """Per-example outputs (numpy) of unmasked inputs, plus the dev loss (task on clean input, MLM on masked
    input, lambda-weighted) when `with_loss`."""
    model.eval()
    task, family = model.task, model.family
    recs, owner = chunk_records(task, family, records, model.max_len)
    # batches of similar lengths: padding costs time (and, for pairs, an L0 x L1 alignment per pair)
    order = sorted(range(len(recs)), key=lambda i: max(len(recs[i][2]), len(recs[i][3])) if task.kind == "pair"
                   else len(recs[i][1]))
    bs = hp.get("eval_batch_size", 64)
    outs = [None] * len(recs)
    loss_sum, n_sum = 0.0, 0
    rng = np.random.default_rng([seed, 104729])
    for s in range(0, len(order), bs):
        idx = order[s:s + bs]
        chunk = [recs[i] for i in idx]
        batch = _to(make_batch(task, family, chunk, rng, hp, model.max_len, mask=False), device)
        out, h = model(batch)
        if with_loss:
            loss = hp.get("lambda_task", 1.0) * task_loss(task, family, out, batch, {})
            if loss_active(hp.get("lambda_mlm")):
                mb = _to(make_batch(task, family, chunk, rng, hp, model.max_len, mask=True), device)
                _, hm = model(mb)
                la, lb = mlm_loss(model, hm, mb, {})
                loss = loss + hp["lambda_mlm"] * (la + lb) / 2
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


def targets_of(task: Task, records):
    if task.kind == "pair":
        return np.array([r[4] for r in records])
    if task.kind == "residue":
        return [np.array([task.label_chars.index(c) for c in r[2]]) for r in records]
    return np.array([r[2] for r in records])


# ------------------------------------------------------------------ fine-tuning
def subsample_dev(records, hp, seed):
    """Seeded subsample of the dev split for model selection (`max_dev`, a demo-scale knob; off by default)."""
    n = hp.get("max_dev")
    if not n or n >= len(records):
        return records
    keep = np.sort(np.random.default_rng([seed, 31337]).choice(len(records), n, replace=False))
    return [records[i] for i in keep]


def build_model(task: Task, hparams: dict, pretrained=None) -> FinetuneModel:
    model_cfg, fidelity = hparams["model"], hparams.get("fidelity", {})
    if (task.name, model_cfg["family"]) not in SUPPORTED:
        raise SystemExit(f"error: task {task.name!r} with model family {model_cfg['family']!r} "
                         "was not run in the paper and is not supported")
    model = FinetuneModel(task, model_cfg, hparams.get("head"), fidelity)
    if pretrained:
        state = load_checkpoint(pretrained)
        check_compatible(model.encoder, state, pretrained)
        skip = ("cls",) if model.family == "tfm" else ()
        loaded, skipped = load_state_dict_reference(model.encoder, state, skip=skip)
        print(f"loaded {len(loaded)} tensors from {pretrained}; kept fresh: {skipped}", file=sys.stderr)
    return model


def finetune(task_name, data_dir, seed, hparams, state_dir, out_model, out_curve, pretrained=None,
             progress=True) -> None:
    task = get_task(task_name)
    manifest = load_manifest(data_dir)
    rt = Runtime(hparams.get("allow_cpu", False), hparams.get("threads"))
    hp, fidelity = hparams["train"], hparams.get("fidelity", {})
    seed_everything(seed)
    model = build_model(task, hparams, pretrained).to(rt.device)
    train_recs = read_split(data_dir, manifest["splits"]["train"], manifest)
    dev_recs = subsample_dev(read_split(data_dir, manifest["splits"]["dev"], manifest), hp, seed)
    sampler = HomologySampler(train_recs, fidelity.get("b4_broken_homology_sampler", True)) \
        if task.kind == "pair" else None
    if task.kind != "pair":
        train_recs, _ = chunk_records(task, model.family, train_recs, model.max_len)
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"])
    state_file = StateFile(state_dir, hparams.get("save_every_minutes", 10), hparams.get("save_every_steps"))
    st = {"epoch": 0, "batch": 0, "best": math.inf, "best_epoch": -1, "bad": 0, "curve": [], "best_state": None,
          "train_loss": 0.0, "train_n": 0}
    saved = state_file.load()
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        st = saved["st"]
        set_rng_state(saved["rng"])
        print(f"resumed from {state_file.path} at epoch {st['epoch']} batch {st['batch']}", file=sys.stderr)
    t0 = time.monotonic() - (st["curve"][-1]["elapsed_s"] if st["curve"] else 0.0)
    patience, bs = hp.get("patience", 3), hp["batch_size"]
    shuffle = task.name != "secstr"  # the reference's SecStr loader is not shuffled
    while st["epoch"] < hp["max_epochs"] and (patience < 0 or st["bad"] < patience):
        ep = st["epoch"]
        rng_ep = np.random.default_rng([seed, ep])
        if sampler is not None:
            epoch_recs = sampler.sample(hp.get("epoch_pairs", 100000), rng_ep)
        else:
            perm = rng_ep.permutation(len(train_recs)) if shuffle else np.arange(len(train_recs))
            epoch_recs = [train_recs[i] for i in perm]
        n_batches = math.ceil(len(epoch_recs) / bs)
        for b in range(st["batch"], n_batches):
            rng = np.random.default_rng([seed, ep, b])
            torch.manual_seed(seed * 1_000_003 + ep * 100_003 + b)
            batch = _to(make_batch(task, model.family, epoch_recs[b * bs:(b + 1) * bs], rng, hp,
                                   model.max_len, mask=True), rt.device)
            out, h = model(batch)
            loss = combined_loss(model, out, h, batch, hp, fidelity)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if model.family == "rnn" and task.kind == "pair" and not fidelity.get("b3_unclamped_ordinal_weight", True):
                with torch.no_grad():
                    model.encoder.ordinal_weight.clamp_(min=0)
            st["train_loss"] += loss.item() * batch["n_pairs"]
            st["train_n"] += batch["n_pairs"]
            st["batch"] = b + 1
            if state_file.due(b + 1) and b + 1 < n_batches:
                state_file.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "st": st})
        dev_out, dev_loss = predict(model, dev_recs, hp, rt.device, with_loss=True, seed=seed)
        row = {"epoch": ep + 1, "train_loss": st["train_loss"] / max(st["train_n"], 1), "dev_loss": dev_loss}
        dev_metrics = task.metrics(dev_out, targets_of(task, dev_recs), fidelity)
        row.update({f"dev_{k}": v for k, v in dev_metrics.items() if isinstance(v, float)})
        row["elapsed_s"] = time.monotonic() - t0
        st["curve"].append(row)
        print(f"epoch {ep + 1}: " + " ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)),
              file=sys.stderr, flush=True)
        if dev_loss < st["best"]:
            st.update(best=dev_loss, best_epoch=ep + 1, bad=0,
                      best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        else:
            st["bad"] += 1
        st.update(epoch=ep + 1, batch=0, train_loss=0.0, train_n=0)
        state_file.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "st": st})
    save_model(out_model, st["best_state"])
    write_curve(out_curve, st["curve"])
    rt.close()


# ------------------------------------------------------------------ evaluation
def evaluate(task_name, data_dir, model_path, seed, hparams, out_metrics, out_predictions,
             model_name="", ablation="", n_boot=500) -> dict:
    from plus.report.provenance import collect_provenance

    task = get_task(task_name)
    manifest = load_manifest(data_dir)
    rt = Runtime(hparams.get("allow_cpu", False), hparams.get("threads"))
    hp, fidelity = hparams["train"], hparams.get("fidelity", {})
    model = build_model(task, hparams).to(rt.device)
    state = load_checkpoint(model_path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{model_path}: not a fine-tuned {task_name} model of this architecture ({exc})") from exc
    dev_recs = read_split(data_dir, manifest["splits"]["dev"], manifest)
    dev_out, dev_loss = predict(model, dev_recs, hp, rt.device, with_loss=True, seed=seed)
    dev_metrics = task.metrics(dev_out, targets_of(task, dev_recs), fidelity)
    cutoffs = None
    if task.name == "homology" and not fidelity.get("b6_cutoffs_on_eval_set", True):
        cutoffs = np.asarray(dev_metrics["cutoffs"])  # corrected: fitted on dev, applied to test
    results, arrays = {}, {}
    for name, fname in manifest["splits"]["test"].items():
        recs = read_split(data_dir, fname, manifest)
        out, _ = predict(model, recs, hp, rt.device, seed=seed)
        tgt = targets_of(task, recs)
        res = task.metrics(out, tgt, fidelity, cutoffs=cutoffs)
        res = {**task.report(res), "n": len(recs)}
        res["ci95"] = bootstrap_all(task, out, tgt, res, fidelity, seed, n_boot, cutoffs)
        results[name] = res
        _store_predictions(arrays, name, task, recs, out, tgt)
    metrics = {"task": task_name, "model": model_name, "ablation": ablation, "seed": seed,
               "test_sets": results, "dev": task.report(dev_metrics),
               "dev_loss": dev_loss,
               "provenance": collect_provenance(seed=seed, hparams=hparams)}
    with atomic_path(out_predictions) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    write_json(out_metrics, metrics)
    rt.close()
    return metrics


def _store_predictions(arrays, name, task, recs, out, tgt):
    arrays[f"{name}__ids"] = np.array([r[0] if task.kind != "pair" else f"{r[0]}|{r[1]}" for r in recs])
    if task.kind == "residue":
        arrays[f"{name}__lengths"] = np.array([len(t) for t in tgt])
        arrays[f"{name}__outputs"] = np.concatenate(out) if out else np.zeros((0, task.n_out))
        arrays[f"{name}__targets"] = np.concatenate(tgt) if tgt else np.zeros(0)
    else:
        arrays[f"{name}__outputs"], arrays[f"{name}__targets"] = out, tgt


def _ratio(correct, total):
    return correct.sum() / total.sum()


def bootstrap_all(task: Task, out, tgt, point, fidelity, seed, n_boot, cutoffs) -> dict:
    """95 % percentile bootstrap intervals over test examples (proteins or pairs) for the task's metrics."""
    keys = [k for k in task.reported if k in point and k != "argmax_acc"]
    if len(tgt) < 2 or n_boot <= 0:
        return {}
    if task.name == "transmembrane":  # reuse per-protein verdicts and counts: Viterbi once
        full = M.transmembrane_metrics(out, tgt, reference=fidelity.get("b12_tm_region_quirk", True))
        correct = np.array([int((np.asarray(o).argmax(1) == t).sum()) for o, t in zip(out, tgt)])
        lengths = np.array([len(t) for t in tgt])
        verdict = np.asarray(full["protein_correct"], dtype=float)
        return {"acc": list(M.bootstrap_ci(_ratio, correct, lengths, n=n_boot, seed=seed)),
                "acc_p": list(M.bootstrap_ci(lambda v: v.mean(), verdict, n=n_boot, seed=seed))}
    if task.name == "secstr":
        def per(o, t):
            p8 = np.asarray(o).argmax(1)
            e = np.exp(o - o.max(1, keepdims=True))
            prob = e / e.sum(1, keepdims=True)
            groups = np.stack([prob[:, :3].sum(1), prob[:, 3:5].sum(1), prob[:, 5:].sum(1)], 1).argmax(1)
            return int((p8 == t).sum()), int((groups == np.asarray(M.SS8_TO_SS3)[t]).sum())
        counts = np.array([per(np.asarray(o), np.asarray(t)) for o, t in zip(out, tgt)])
        lengths = np.array([len(t) for t in tgt])
        return {key: list(M.bootstrap_ci(_ratio, counts[:, k], lengths, n=n_boot, seed=seed))
                for k, key in enumerate(("acc8", "acc3"))}
    # protein / pair level: every metric from the same resamples (one metrics call per resample);
    # homology refits its level cut-offs inside each resample, as the reference fits them on the evaluated set
    out, tgt = np.asarray(out), np.asarray(tgt)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in keys}
    for _ in range(n_boot):
        idx = rng.integers(0, len(tgt), len(tgt))
        values = task.metrics(out[idx], tgt[idx], fidelity, cutoffs=cutoffs)
        for k in keys:
            draws[k].append(values.get(k, np.nan))
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in draws.items()}
