"""Fine-tuning records to batches: collation of each task kind and model family (MLM masking, residue
resampling, contact maps), PLUS-TFM chunking, length-bucketed batch order, the dev subsample and the targets."""

from __future__ import annotations

import numpy as np
import torch

from plus.alphabet import TFM_CLS, TFM_MASK, TFM_SEP, encode
from plus.models.plus_rnn import collate_rnn
from plus.models.plus_tfm import tfm_pair_input, tfm_single_input
from plus.tasks.registry import Task
from plus.train.hparams import FinetuneHP
from plus.train.masking import loss_active, mask_tokens, pad_targets, resample_residues


def make_batch(task: Task, family: str, records, rng, hp: FinetuneHP, max_len, mask: bool, contacts=None):
    """Collate records of one task kind; when `mask` (training), MLM-mask the inputs or, with `augment`,
    resample residues. With `contacts`: the contact maps of `contact_batch` random pairs (both members)."""
    do_mask = mask and loss_active(hp.lambda_mlm) and hp.max_pred > 0
    augment = hp.augment if mask else 0.0
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
            m, p, o = (mask_tokens(s, rng, hp.mask_ratio, hp.max_pred) if do_mask
                       else (np.asarray(s, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)))
            if augment > 0:
                m = resample_residues(m, rng, augment)
            masked.append(m)
            pos.append(p)
            orig.append(o)
        batch["tokens"], batch["lengths"] = collate_rnn(masked)
    else:
        toks, segs, msks, pos, orig = [], [], [], [], []
        for k in range(len(records)):
            if task.kind == "pair":
                t, s, m = tfm_pair_input(seqs[k], seqs[k + len(records)], max_len)
            else:
                t, s, m = tfm_single_input(seqs[k], max_len)
            p, o = np.zeros(0, np.int64), np.zeros(0, np.int64)
            if do_mask:
                inner = np.flatnonzero(m)[1:-1]
                inner = inner[(t[inner] != TFM_CLS) & (t[inner] != TFM_SEP)]
                n_pred = min(hp.max_pred, int(hp.mask_ratio * int(m.sum())))
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
        sel = rng.choice(n, min(hp.contact_batch, n), replace=False)
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


def subsample_dev(records, hp: FinetuneHP, seed):
    """Seeded subsample of the dev split for model selection (`max_dev`, a demo-scale knob; off by default)."""
    n = hp.max_dev
    if not n or n >= len(records):
        return records
    keep = np.sort(np.random.default_rng([seed, 31337]).choice(len(records), n, replace=False))
    return [records[i] for i in keep]


def targets_of(task: Task, records):
    if task.kind == "pair":
        return np.array([r[4] for r in records])
    if task.kind == "residue":
        return [np.array([task.label_chars.index(c) for c in r[2]]) for r in records]
    return np.array([r[2] for r in records])


def to_device(batch, device):
    """`batch` with its tensors (and lists of tensors) on `device`."""
    return {k: (v.to(device) if torch.is_tensor(v) else [x.to(device) for x in v] if isinstance(v, list) else v)
            for k, v in batch.items()}
