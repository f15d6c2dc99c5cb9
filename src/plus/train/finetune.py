"""`plus finetune` and `plus evaluate`: every task through one loop, driven by the task registry.

Protocol (spec §3.0): full fine-tuning with the auxiliary MLM loss where lambda_mlm != -1 (one masked
forward pass feeds both losses), dev loss selects the model after each epoch, patience, resumable state.
P-ELMo (spec §1.5, §3.1): the pre-trained LM is always frozen; homology trains the encoder and ordinal head
(plus the contact-map head where the data has contact maps); every other task starts from the homology
model of the same run, with LM and encoder frozen: only the MLP head trains (B17: frozen explicitly).
Resumable state as in pre-training (common.StateFile: fingerprinted, saved on SIGTERM/SIGUSR1 too). The run's
fingerprint goes to `run.json` beside model.pt, with the model's sha256; `plus evaluate` checks both and copies
the fingerprint into metrics.json.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plus.alphabet import encode
from plus.data.contacts import ContactMaps
from plus.data.tasks import load_manifest, read_split
from plus.io import InputError, atomic_path, read_json, write_json
from plus.models import ContactHead, MLPHead, load_state_dict_reference
from plus.models.plus_rnn import collate_rnn
from plus.models.plus_tfm import tfm_pair_input, tfm_single_input
from plus.tasks.registry import SUPPORTED, Task, get_task
from plus.train.common import (
    Interrupted,
    Preemption,
    Runtime,
    StateFile,
    autocast,
    build_encoder,
    build_lm,
    check_compatible,
    check_optimizer,
    check_tensors,
    eval_batches,
    file_digest,
    fingerprint,
    load_checkpoint,
    require,
    run_definition,
    save_model,
    seed_everything,
    write_curve,
)
from plus.train.homology_sampler import HomologySampler
from plus.train.masking import loss_active, mask_tokens, pad_targets, resample_residues


# ------------------------------------------------------------------ model
class FinetuneModel(nn.Module):
    """Encoder + task head. RNN and P-ELMo: MLP head on h or z (ordinal SSA head for homology); TFM: its
    classifier. P-ELMo also holds its frozen LM (`lm`) and, with `contact`, the contact-map head."""

    def __init__(self, task: Task, model_cfg: dict, head_cfg, fidelity: dict, contact: bool = False):
        super().__init__()
        self.task, self.family = task, model_cfg["family"]
        self.encoder = build_encoder(model_cfg, fidelity, n_thresholds=task.ordinal_thresholds,
                                     n_classes=task.n_out)
        if self.family == "pelmo":
            self.lm = build_lm(model_cfg).requires_grad_(False)
            if task.kind != "pair":
                self.encoder.requires_grad_(False)
            if contact:
                self.contact = ContactHead(model_cfg["proj_dim"])
        self.max_len = model_cfg.get("max_len", 512)
        self.use_z = False
        if self.family in ("rnn", "pelmo") and task.kind != "pair":
            src, hidden = head_cfg or ("h", 512)
            self.use_z = src == "z"
            d_in = model_cfg["proj_dim"] if self.use_z else 2 * model_cfg["hidden_dim"]
            pooling = None if task.kind == "residue" else (
                "reference_sum" if fidelity.get("b2_sum_pooling", True) else "attention")
            self.head = MLPHead(d_in, hidden, task.n_out, pooling)

    def forward(self, batch):
        """Task outputs and the encoder states (for the auxiliary MLM loss)."""
        enc = self.encoder
        if self.family in ("rnn", "pelmo"):
            tokens, lengths = batch["tokens"], batch["lengths"]
            h = enc(tokens, lengths) if self.family == "rnn" else enc(tokens, lengths, self.lm.encode(tokens, lengths))
            res_len = lengths - 2
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
def make_batch(task: Task, family: str, records, rng, hp, max_len, mask: bool, contacts=None):
    """Collate records of one task kind; when `mask` (training), MLM-mask the inputs or, with `augment`,
    resample residues. With `contacts`: the contact maps of `contact_batch` random pairs (both members)."""
    do_mask = mask and loss_active(hp.get("lambda_mlm")) and hp.get("max_pred", 50) > 0
    augment = hp.get("augment", 0.0) if mask else 0.0
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
    if family in ("rnn", "pelmo"):
        pos, orig, masked = [], [], []
        for s in seqs:
            m, p, o = (mask_tokens(s, rng, hp.get("mask_ratio", 0.15), hp.get("max_pred", 50)) if do_mask
                       else (np.asarray(s, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)))
            if augment > 0:
                m = resample_residues(m, rng, augment)
            masked.append(m)
            pos.append(p)
            orig.append(o)
        batch["tokens"], batch["lengths"] = collate_rnn(masked)
    else:
        from plus.alphabet import TFM_MASK

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
    if contacts is not None and task.kind == "pair":
        n = len(records)
        sel = rng.choice(n, min(hp.get("contact_batch", 10), n), replace=False)
        batch["cm_index"] = torch.as_tensor(sel)
        batch["cmaps"] = [torch.as_tensor(contacts.labels(records[i][k], len(records[i][k + 2])))
                          for k in (0, 1) for i in sel]
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


def combined_loss(model, outputs, h, batch, hp, fidelity):
    lt, lm, lc = hp.get("lambda_task", 1.0), hp.get("lambda_mlm", -1), hp.get("lambda_contact", -1)
    b1 = model.task.kind == "pair" and fidelity.get("b1_drop_second_mlm_loss", True)
    total = lt * task_loss(model.task, model.family, outputs, batch, fidelity)
    if loss_active(lm) and batch["masked_weights"].any():
        la, lb = mlm_loss(model, h, batch, fidelity)
        total = total + ((lm + lm**2) * la if b1 else lm * (la + lb) / 2)  # B1, as in pre-training
    if loss_active(lc) and "cmaps" in batch:
        la, lb = contact_loss(model, h, batch)
        total = total + ((lc + lc**2) * la if b1 else lc * (la + lb) / 2)  # B1: the reference's contact branch too
    return total


def _to(batch, device):
    return {k: (v.to(device) if torch.is_tensor(v) else [x.to(device) for x in v] if isinstance(v, list) else v)
            for k, v in batch.items()}


# ------------------------------------------------------------------ inference
@torch.no_grad()
def predict(model: FinetuneModel, records, hp, device, with_loss=False, seed=0, contacts=None,
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
    precision = hp.get("precision", "fp32")
    for idx in eval_batches(size, hp.get("eval_batch_size", 64)):
        if stop is not None:
            stop.check()
        chunk = [recs[i] for i in idx]
        batch = _to(make_batch(task, family, chunk, rng, hp, model.max_len, mask=False,
                               contacts=contacts if with_loss else None), device)
        with autocast(device, precision):
            out, h = model(batch)
            if with_loss:
                loss = hp.get("lambda_task", 1.0) * task_loss(task, family, out, batch, {})
                if "cmaps" in batch and loss_active(hp.get("lambda_contact")):
                    loss = loss + hp["lambda_contact"] * sum(contact_loss(model, h, batch)) / 2
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


def bucket_order(order, size, batch_size: int, window: int, rng) -> np.ndarray:
    """`order` regrouped so that each batch holds records of similar size: every run of window x batch_size
    records is sorted by size and cut into batches, then the full batches are shuffled (a short last batch
    stays last). On CPU every batch costs as much as its longest record times its size, so this spends
    less time on padding; the examples seen per epoch are the same, only their grouping changes."""
    order = np.asarray(order)
    span = window * batch_size
    runs = [sorted(order[i:i + span].tolist(), key=size.__getitem__) for i in range(0, len(order), span)]
    flat = [i for run in runs for i in run]
    n_full = len(flat) // batch_size
    batches = [flat[k * batch_size:(k + 1) * batch_size] for k in range(n_full)]
    tail = flat[n_full * batch_size:]
    batches = [batches[k] for k in rng.permutation(n_full)] + ([tail] if tail else [])
    return np.array([i for b in batches for i in b], dtype=np.int64)


def build_model(task: Task, hparams: dict, pretrained=None, contact: bool = False) -> FinetuneModel:
    model_cfg, fidelity = hparams["model"], hparams.get("fidelity", {})
    if (task.name, model_cfg["family"]) not in SUPPORTED:
        raise SystemExit(f"error: task {task.name!r} with model family {model_cfg['family']!r} "
                         "was not run in the paper and is not supported")
    model = FinetuneModel(task, model_cfg, hparams.get("head"), fidelity, contact)
    if pretrained and model.family == "pelmo":
        load_pelmo(model, load_checkpoint(pretrained), pretrained)
    elif pretrained:
        state = load_checkpoint(pretrained)
        check_compatible(model.encoder, state, pretrained)
        skip = ("cls",) if model.family == "tfm" else ()
        loaded, skipped = load_state_dict_reference(model.encoder, state, skip=skip)
        print(f"loaded {len(loaded)} tensors from {pretrained}; kept fresh: {skipped}", file=sys.stderr)
    return model


def _load_part(module: nn.Module, state: dict, path, what: str, optional=()) -> None:
    """Strict load of one part of a P-ELMo checkpoint; only keys ending in `optional` may be missing."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise InputError(f"{path}: the P-ELMo {what} does not fit this model's architecture ({exc})") from exc
    missing = [k for k in missing if not k.endswith(optional)]
    if missing or unexpected:
        raise InputError(f"{path}: the P-ELMo {what} does not fit this model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")


def load_pelmo(model: FinetuneModel, state: dict, path) -> None:
    """Homology starts from the pre-trained LM (`plus pretrain`); every other task from the P-ELMo homology
    model of the same run (LM + encoder; its ordinal and contact heads are left out)."""
    fine_tuned = any(k.startswith("encoder.") for k in state)
    if fine_tuned != (model.task.kind != "pair"):
        want = "the P-ELMo homology model" if model.task.kind != "pair" else "the pre-trained P-ELMo LM"
        raise InputError(f"{path}: P-ELMo {model.task.name} fine-tuning starts from {want}, got "
                         f"{'a fine-tuned P-ELMo' if fine_tuned else 'a language model'}")
    if not fine_tuned:
        _load_part(model.lm, state, path, "language model")
        print(f"loaded the P-ELMo LM from {path} (frozen)", file=sys.stderr)
        return
    _load_part(model.lm, {k[3:]: v for k, v in state.items() if k.startswith("lm.")}, path, "language model")
    encoder = {k[8:]: v for k, v in state.items() if k.startswith("encoder.") and not k[8:].startswith("ordinal_")}
    _load_part(model.encoder, encoder, path, "encoder", optional=("ordinal_weight", "ordinal_bias"))
    print(f"loaded the P-ELMo LM and homology-trained encoder from {path} (both frozen)", file=sys.stderr)


def homology_contacts(task: Task, family: str, data_dir, manifest, hp, domains) -> ContactMaps | None:
    """P-ELMo homology: the contact maps of the converted data when the contact loss is on (every domain id
    in `domains` must have one); None, with a log line, when the data has none."""
    if family != "pelmo" or task.kind != "pair" or not loss_active(hp.get("lambda_contact")):
        return None
    contacts = ContactMaps(data_dir, manifest)
    if not contacts:
        print(f"{data_dir}: no contact maps in the converted homology data (manifest contact_maps: "
              f"{manifest.get('contact_maps')}): P-ELMo's contact-map loss is off, the encoder trains on "
              f"{hp.get('lambda_task', 1.0)} x the ordinal loss only", file=sys.stderr)
        return None
    contacts.check(domains)
    return contacts


def data_identity(data_dir, manifest: dict, contacts: ContactMaps | None = None) -> dict:
    """sha256 of what fine-tuning reads from a converted task directory: the manifest, the train and dev split
    files and, when used, the contact maps."""
    ident = {"manifest": file_digest(f"{data_dir}/manifest.json"),
             **{split: file_digest(f"{data_dir}/{manifest['splits'][split]}") for split in ("train", "dev")}}
    if contacts is not None:
        listing = "".join(f"{key}\0{file_digest(path)}\n" for key, path in sorted(contacts.paths.items()))
        ident["contact_maps"] = hashlib.sha256(listing.encode()).hexdigest()
    return ident


def finetune_definition(task_name, data_dir, manifest, seed, hparams, pretrained=None, contacts=None) -> dict:
    return run_definition(f"finetune {task_name}", seed, hparams,
                          {"data": data_identity(data_dir, manifest, contacts),
                           "pretrained": file_digest(pretrained) if pretrained else None})


def finetune(task_name, data_dir, seed, hparams, state_dir, out_model, out_curve, pretrained=None,
             progress=True, out_run=None) -> None:
    stop = Preemption()  # from the start: a signal during set-up stops the run after its first batch
    try:
        _finetune(task_name, data_dir, seed, hparams, state_dir, out_model, out_curve, pretrained, out_run, stop)
    finally:
        stop.close()


def _finetune(task_name, data_dir, seed, hparams, state_dir, out_model, out_curve, pretrained, out_run,
              stop: Preemption) -> None:
    task = get_task(task_name)
    manifest = load_manifest(data_dir)
    rt = Runtime(hparams.get("allow_cpu", False), hparams.get("threads"))
    stop.rt = rt
    hp, fidelity = hparams["train"], hparams.get("fidelity", {})
    seed_everything(seed)
    train_recs = read_split(data_dir, manifest["splits"]["train"], manifest)
    dev_recs = subsample_dev(read_split(data_dir, manifest["splits"]["dev"], manifest), hp, seed)
    domains = {r[0] for r in train_recs} | {r[k] for r in dev_recs for k in (0, 1)} if task.kind == "pair" else set()
    contacts = homology_contacts(task, hparams["model"]["family"], data_dir, manifest, hp, domains)
    model = build_model(task, hparams, pretrained, contact=contacts is not None).to(rt.device)
    sampler = HomologySampler(train_recs, fidelity.get("b4_broken_homology_sampler", True)) \
        if task.kind == "pair" else None
    if task.kind != "pair":
        train_recs, _ = chunk_records(task, model.family, train_recs, model.max_len)
        train_size = [len(r[1]) for r in train_recs]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=hp["lr"])  # B17: frozen stay out
    definition = finetune_definition(task_name, data_dir, manifest, seed, hparams, pretrained, contacts)
    state_file = StateFile(state_dir, hparams.get("save_every_minutes", 10), hparams.get("save_every_steps"),
                           definition, rt)
    st = {"epoch": 0, "batch": 0, "best": math.inf, "best_epoch": -1, "bad": 0, "curve": [], "best_state": None,
          "train_loss": 0.0, "train_n": 0}

    def check(saved):
        require(isinstance(saved, dict) and {"model", "optimizer", "st"} <= saved.keys(), "missing keys")
        check_tensors(saved["model"], model.state_dict(), "model")
        check_optimizer(saved["optimizer"], opt)
        got = saved["st"]
        require(isinstance(got, dict) and got.keys() == st.keys(), "progress record: other keys")
        require(isinstance(got["epoch"], int) and 0 <= got["epoch"] <= hp["max_epochs"]
                and isinstance(got["batch"], int) and got["batch"] >= 0 and isinstance(got["curve"], list),
                f"progress record: epoch {got['epoch']!r} batch {got['batch']!r}")
        if got["best_state"] is not None:
            check_tensors(got["best_state"], model.state_dict(), "best model")

    saved = state_file.load(check)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        st = saved["st"]
        print(f"resumed from {state_file.loaded_from} at epoch {st['epoch']} batch {st['batch']}", file=sys.stderr,
              flush=True)
    saved_at = (st["epoch"], st["batch"]) if saved is not None else None

    def position():
        return f"epoch {st['epoch']} batch {st['batch']}"

    def save():
        nonlocal saved_at
        state_file.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "st": st}, position())
        saved_at = (st["epoch"], st["batch"])

    def stop_now():
        if saved_at != (st["epoch"], st["batch"]):
            save()
        rt.close()
        stop.exit(position(), state_file.path)

    t0 = time.monotonic() - (st["curve"][-1]["elapsed_s"] if st["curve"] else 0.0)
    patience, bs = hp.get("patience", 3), hp["batch_size"]
    shuffle = task.shuffle
    stop.progress = position()
    while st["epoch"] < hp["max_epochs"] and (patience < 0 or st["bad"] < patience):
        ep = st["epoch"]
        rng_ep = np.random.default_rng([seed, ep])
        if sampler is not None:
            epoch_recs = sampler.sample(hp.get("epoch_pairs", 100000), rng_ep)
        else:
            perm = rng_ep.permutation(len(train_recs)) if shuffle else np.arange(len(train_recs))
            if shuffle and hp.get("bucket_batches"):
                perm = bucket_order(perm, train_size, bs, hp["bucket_batches"], rng_ep)
            epoch_recs = [train_recs[i] for i in perm]
        n_batches = math.ceil(len(epoch_recs) / bs)
        for b in range(st["batch"], n_batches):
            rng = np.random.default_rng([seed, ep, b])
            torch.manual_seed(seed * 1_000_003 + ep * 100_003 + b)
            batch = _to(make_batch(task, model.family, epoch_recs[b * bs:(b + 1) * bs], rng, hp,
                                   model.max_len, mask=True, contacts=contacts), rt.device)
            with autocast(rt.device, hp.get("precision", "fp32")):
                out, h = model(batch)
                loss = combined_loss(model, out, h, batch, hp, fidelity)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if hp.get("clip_grad_norm"):  # the reference clips the RNN encoder and the MLP head, each globally
                for part in (model.encoder, getattr(model, "head", None)):
                    if part is not None:
                        torch.nn.utils.clip_grad_norm_(part.parameters(), hp["clip_grad_norm"])
            opt.step()
            if model.family != "tfm" and task.kind == "pair" and not fidelity.get("b3_unclamped_ordinal_weight", True):
                with torch.no_grad():
                    model.encoder.ordinal_weight.clamp_(min=0)
            if contacts is not None:
                model.contact.symmetrize_()
            st["train_loss"] += loss.item() * batch["n_pairs"]
            st["train_n"] += batch["n_pairs"]
            st["batch"] = b + 1
            stop.progress = position()
            if state_file.due(b + 1) and b + 1 < n_batches:
                save()
            if stop.requested():
                stop_now()
        try:  # a stop signal here saves the epoch's training; the retry starts with this dev evaluation
            dev_out, dev_loss = predict(model, dev_recs, hp, rt.device, with_loss=True, seed=seed, contacts=contacts,
                                        stop=stop)
        except Interrupted:
            stop_now()
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
        stop.progress = position()
        save()
        if stop.requested():
            stop_now()
    save_model(out_model, st["best_state"])
    write_curve(out_curve, st["curve"])
    if out_run is not None:
        write_json(out_run, {"run_fingerprint": state_file.fingerprint, "run_definition": definition,
                             "model_sha256": file_digest(out_model), "epochs": st["epoch"],
                             "best_epoch": st["best_epoch"]})
    state_file.finish(position())
    rt.close()


def check_run_record(path, model_path, task_name, data_dir, manifest, seed, hparams) -> dict:
    """The fine-tuning record `run.json` of `model_path`, checked: it names this very model file (sha256) and
    the settings and task data this evaluation uses; what metrics.json then states about the run is true."""
    run = read_json(path)
    if not isinstance(run, dict) or not {"run_fingerprint", "run_definition", "model_sha256"} <= run.keys():
        raise InputError(f"{path}: not a fine-tuning run record (run.json)")
    if run["model_sha256"] != file_digest(model_path):
        raise InputError(f"{path}: records another model than {model_path} (sha256 differs): rerun the fine-tuning")
    definition = run["run_definition"]
    if fingerprint(definition) != run["run_fingerprint"]:
        raise InputError(f"{path}: the fingerprint does not match the recorded run definition")
    ours = run_definition(f"finetune {task_name}", seed, hparams, {})
    for key in ("job", "seed", "hparams"):
        if definition.get(key) != ours[key]:
            raise InputError(f"{path}: {model_path} was trained with other settings than this evaluation's "
                             f"({key} differs): rerun the fine-tuning")
    if definition["inputs"]["data"]["manifest"] != file_digest(f"{data_dir}/manifest.json"):
        raise InputError(f"{path}: {model_path} was trained on other task data than {data_dir}")
    return run


# ------------------------------------------------------------------ evaluation
def evaluate(task_name, data_dir, model_path, seed, hparams, out_metrics, out_predictions,
             model_name="", ablation="", n_boot=500, run_record=None) -> dict:
    """Every test set of a task; with `run_record` (the fine-tuning's run.json), metrics.json records the
    fingerprint of the run that trained the model (checked against the model and this evaluation first)."""
    from plus.provenance import collect_provenance

    task = get_task(task_name)
    manifest = load_manifest(data_dir)
    run = check_run_record(run_record, model_path, task_name, data_dir, manifest, seed, hparams) \
        if run_record else None
    rt = Runtime(hparams.get("allow_cpu", False), hparams.get("threads"))
    hp, fidelity = hparams["train"], hparams.get("fidelity", {})
    state = load_checkpoint(model_path)
    contact = any(k.startswith("contact.") for k in state)
    model = build_model(task, hparams, contact=contact).to(rt.device)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{model_path}: not a fine-tuned {task_name} model of this architecture ({exc})") from exc
    dev_recs = subsample_dev(read_split(data_dir, manifest["splits"]["dev"], manifest), hp, seed)  # as in finetune
    contacts = (ContactMaps(data_dir, manifest) or None) if contact else None
    dev_out, dev_loss = predict(model, dev_recs, hp, rt.device, with_loss=True, seed=seed, contacts=contacts)
    dev_metrics = task.metrics(dev_out, targets_of(task, dev_recs), fidelity)
    cutoffs = task.cutoffs_from_dev(dev_metrics, fidelity)
    results, arrays = {}, {}
    for name, fname in manifest["splits"]["test"].items():
        recs = read_split(data_dir, fname, manifest)
        out, _ = predict(model, recs, hp, rt.device, seed=seed)
        tgt = targets_of(task, recs)
        res = task.metrics(out, tgt, fidelity, cutoffs=cutoffs)
        res = {**task.report(res), "n": len(recs)}
        if cutoffs is not None:  # fixed (dev-fitted) cut-offs: what reproduces acc from predictions.npz
            res["cutoffs"] = cutoffs.tolist()
        res["ci95"] = task.bootstrap(out, tgt, res, fidelity, seed, n_boot, cutoffs)
        results[name] = res
        _store_predictions(arrays, name, task, recs, out, tgt)
    metrics = {"task": task_name, "model": model_name, "ablation": ablation, "seed": seed,
               "test_sets": results, "dev": task.report(dev_metrics),
               "dev_loss": dev_loss, "precision": hp.get("precision", "fp32"),
               "run_fingerprint": run["run_fingerprint"] if run else None,
               "run_definition": run["run_definition"] if run else None,
               "model_sha256": run["model_sha256"] if run else file_digest(model_path),
               "provenance": collect_provenance(seed=seed, hparams=hparams)}
    if model.family == "pelmo":
        metrics["pelmo"] = pelmo_notes(task, contact, hp)
    with atomic_path(out_predictions) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    write_json(out_metrics, metrics)
    rt.close()
    return metrics


def pelmo_notes(task: Task, contact: bool, hp: dict) -> dict:
    """How a P-ELMo run was trained (what metrics.json states next to its numbers)."""
    if task.kind != "pair":
        return {"lm": "frozen", "encoder": "frozen, from the P-ELMo homology fine-tuning of the same run",
                "trained": "MLP head only"}
    note = {"lm": "frozen", "encoder": "trained on homology", "contact_map_loss": contact}
    if not contact:
        why = ("no contact maps in the converted homology data" if loss_active(hp.get("lambda_contact"))
               else "lambda_contact is -1")
        note["note"] = (f"{why}: the encoder was trained on {hp.get('lambda_task', 1.0)} x the ordinal loss only "
                        "(the reference adds 0.9 x the contact-map loss)")
    return note


def _store_predictions(arrays, name, task, recs, out, tgt):
    arrays[f"{name}__ids"] = np.array([r[0] if task.kind != "pair" else f"{r[0]}|{r[1]}" for r in recs])
    if task.kind == "residue":
        arrays[f"{name}__lengths"] = np.array([len(t) for t in tgt])
        arrays[f"{name}__outputs"] = np.concatenate(out) if out else np.zeros((0, task.n_out))
        arrays[f"{name}__targets"] = np.concatenate(tgt) if tgt else np.zeros(0)
    else:
        arrays[f"{name}__outputs"], arrays[f"{name}__targets"] = out, tgt
