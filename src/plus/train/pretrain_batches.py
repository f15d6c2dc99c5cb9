"""Pre-training batches: SFP pairs of the Pfam shards with reference MLM masking (PLUS-RNN, PLUS-TFM) and
single sequences for the P-ELMo language model; each batch reproducible from (seed, epoch, batch index)."""

from __future__ import annotations

import math

import numpy as np
import torch

from plus.train.hparams import PretrainHP
from plus.train.masking import FamilyIndex, mask_pair_tfm, mask_tokens, pad_targets


class PairBatches(torch.utils.data.Dataset):
    """Item b of epoch e = one batch of (anchor, partner) pairs, masked, from default_rng([seed, e, b])."""

    def __init__(self, corpus, index: FamilyIndex, family: str, hp: PretrainHP, fidelity: dict, seed: int,
                 epoch: int, anchors: np.ndarray, max_len: int | None):
        self.corpus, self.index, self.family, self.hp = corpus, index, family, hp
        self.allow_self = fidelity.get("b7_self_pairs", True)
        self.seed, self.epoch, self.anchors, self.max_len = seed, epoch, anchors, max_len
        self.bs = hp.batch_size

    def __len__(self):
        return math.ceil(len(self.anchors) / self.bs)

    def __getitem__(self, b):
        rng = np.random.default_rng([self.seed, self.epoch, b])
        anchors = self.anchors[b * self.bs:(b + 1) * self.bs]
        partners, same = self.index.partners(anchors, rng, self.allow_self)
        a = [self.corpus.tokens(int(i)) for i in anchors]
        p = [self.corpus.tokens(int(i)) for i in partners]
        return make_batch(self.family, a, p, same, rng, self.hp, self.max_len)


class SequenceBatches(torch.utils.data.Dataset):
    """P-ELMo LM: item b of an epoch = the b-th batch of (shuffled) training sequences, reference-collated."""

    def __init__(self, corpus, batch_size: int, anchors: np.ndarray):
        self.corpus, self.bs, self.anchors = corpus, batch_size, anchors

    def __len__(self):
        return math.ceil(len(self.anchors) / self.bs)

    def __getitem__(self, b):
        return lm_batch([self.corpus.tokens(int(i)) for i in self.anchors[b * self.bs:(b + 1) * self.bs]])


def lm_batch(seqs) -> dict:
    from plus.models.plus_rnn import collate_rnn

    tokens, lengths = collate_rnn([np.asarray(s, np.int64) for s in seqs])
    return {"tokens": tokens, "lengths": lengths}


def make_batch(family, seqs_a, seqs_b, labels, rng, hp: PretrainHP, max_len=None, mask=True):
    """Collate a pair batch for one model family, with reference MLM masking when `mask`."""
    from plus.models.plus_rnn import collate_rnn
    from plus.models.plus_tfm import tfm_pair_input

    ratio, max_pred = hp.mask_ratio, hp.max_pred
    labels = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    if family == "rnn":
        seqs, pos, orig = [], [], []
        for s in list(seqs_a) + list(seqs_b):
            if mask and max_pred > 0:
                m, p, o = mask_tokens(s, rng, ratio, max_pred)
            else:
                m, p, o = np.asarray(s, dtype=np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
            seqs.append(m)
            pos.append(p)
            orig.append(o)
        tokens, lengths = collate_rnn([np.asarray(s) for s in seqs])
        return {"tokens": tokens, "lengths": lengths, "n_pairs": len(seqs_a), "labels": labels,
                **pad_targets(pos, orig)}
    toks, segs, masks, pos, orig = [], [], [], [], []
    for a, b in zip(seqs_a, seqs_b):
        a, b = _truncate_pair(np.asarray(a, np.int64), np.asarray(b, np.int64), max_len)
        if mask and max_pred > 0:
            a, b, p, o = mask_pair_tfm(a, b, rng, ratio, max_pred)
        else:
            p, o = np.zeros(0, np.int64), np.zeros(0, np.int64)
        t, s, m = tfm_pair_input(a, b, max_len)
        toks.append(t)
        segs.append(s)
        masks.append(m)
        pos.append(p)
        orig.append(o)
    width = max(int(np.asarray(m).sum()) for m in masks)
    return {"tokens": torch.as_tensor(np.stack(toks)[:, :width], dtype=torch.long),
            "segments": torch.as_tensor(np.stack(segs)[:, :width], dtype=torch.long),
            "input_mask": torch.as_tensor(np.stack(masks)[:, :width]).bool(),
            "labels": labels, "n_pairs": len(seqs_a), **pad_targets(pos, orig)}


def _truncate_pair(a, b, max_len):
    """Reference pair truncation (before masking, so masked positions stay inside the input)."""
    if max_len is None:
        return a, b
    from plus.models.plus_tfm import pair_lengths

    la, lb = pair_lengths(len(a), len(b), max_len)
    return a[:la], b[:lb]
