"""Reference MLM masking (spec §2.2) and SFP pair sampling (spec §2.3), driven by numpy Generators.

The randomness of batch b of epoch e is drawn from ``np.random.default_rng([seed, e, b])``, so a batch
is the same whichever worker builds it and whenever a resumed job rebuilds it.
"""

from __future__ import annotations

import numpy as np

from plus.alphabet import TFM_MASK, UNKNOWN


def mask_tokens(tokens: np.ndarray, rng: np.random.Generator, ratio: float, max_pred: int,
                mask_id: int = UNKNOWN, offset: int = 0, n_pred: int | None = None):
    """Mask one sequence as the reference does: n = min(max_pred, floor(ratio * L)) non-X positions,
    80 % -> mask id, 10 % -> random id in 1..21, 10 % unchanged.

    Returns (masked tokens, positions (+offset), original ids); positions index `tokens`.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    if n_pred is None:
        n_pred = min(max_pred, int(ratio * len(tokens)))
    candidates = np.flatnonzero(tokens != UNKNOWN)
    n_pred = min(n_pred, len(candidates))
    pos = rng.permutation(candidates)[:n_pred]
    original = tokens[pos].copy()
    out = tokens.copy()
    r1, r2 = rng.random(n_pred), rng.random(n_pred)
    random_ids = rng.integers(1, 22, n_pred)
    out[pos] = np.where(r1 < 0.8, mask_id, np.where(r2 < 0.5, random_ids, original))
    return out, pos + offset, original


def mask_pair_tfm(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, ratio: float, max_pred: int):
    """Mask a TFM pair [CLS] a [SEP] b [SEP]: n = min(max_pred, floor(ratio (La+Lb+3))) split by length.

    Returns (masked a, masked b, token positions in the pair input, original ids).
    """
    la, lb = len(a), len(b)
    n_pred = min(max_pred, int(ratio * (la + lb + 3)))
    n0 = int(n_pred * la / max(la + lb, 1))
    ma, pa, oa = mask_tokens(a, rng, ratio, max_pred, TFM_MASK, offset=1, n_pred=n0)
    mb, pb, ob = mask_tokens(b, rng, ratio, max_pred, TFM_MASK, offset=la + 2, n_pred=n_pred - n0)
    return ma, mb, np.concatenate([pa, pb]), np.concatenate([oa, ob])


def resample_residues(tokens: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """The reference's `augment` (P-ELMo homology): each residue is replaced, with probability p, by a random
    id in 1..21 (X included)."""
    out = np.array(tokens, dtype=np.int64)
    hit = rng.random(len(out)) < p
    out[hit] = rng.integers(1, 22, int(hit.sum()))
    return out


def loss_active(weight) -> bool:
    """A loss weight of -1 (or None) switches that loss off, as in the reference configs."""
    return weight is not None and weight != -1


def pad_targets(pos, orig) -> dict:
    """Zero-padded masked positions, original ids and slot weights of a batch, as tensors."""
    import torch

    width = max([len(p) for p in pos] + [1])
    P = np.zeros((len(pos), width), np.int64)
    T = np.zeros((len(pos), width), np.int64)
    W = np.zeros((len(pos), width), bool)
    for i, (p, o) in enumerate(zip(pos, orig)):
        P[i, :len(p)], T[i, :len(o)], W[i, :len(p)] = p, o, True
    return {"masked_pos": torch.as_tensor(P), "masked_tokens": torch.as_tensor(T),
            "masked_weights": torch.as_tensor(W)}


class FamilyIndex:
    """Sequence indices grouped by family, for vectorised partner sampling."""

    def __init__(self, family: np.ndarray):
        family = np.asarray(family, dtype=np.int64)
        self.order = np.argsort(family, kind="stable")
        self.n_families = int(family.max()) + 1 if len(family) else 0
        self.size = np.bincount(family, minlength=self.n_families)
        self.start = np.concatenate([[0], np.cumsum(self.size)[:-1]])
        self.family = family
        self.rank = np.empty(len(family), dtype=np.int64)  # position of each sequence inside its family
        self.rank[self.order] = np.arange(len(family)) - self.start[family[self.order]]
        self.present = np.flatnonzero(self.size > 0)

    def partners(self, anchors: np.ndarray, rng: np.random.Generator, allow_self: bool):
        """Partner per anchor: same family with probability 0.5 (uniform member; the anchor itself too
        when `allow_self`, as the reference's B7), else a member of a uniformly drawn other family."""
        fam = self.family[anchors]
        same = rng.random(len(anchors)) < 0.5
        u1, u2 = rng.random(len(anchors)), rng.random(len(anchors))
        size = self.size[fam]
        if allow_self:
            pos = (u1 * size).astype(np.int64)
        else:
            pos = (u1 * np.maximum(size - 1, 1)).astype(np.int64)
            pos = np.where((pos >= self.rank[anchors]) & (size > 1), pos + 1, pos)
        same_partner = self.order[self.start[fam] + np.minimum(pos, size - 1)]
        # other family: uniform over present families except the anchor's
        n_present = len(self.present)
        fam_slot = np.searchsorted(self.present, fam)
        g = (u2 * (n_present - 1)).astype(np.int64)
        g = self.present[np.where(g >= fam_slot, g + 1, g) % n_present]
        u3 = rng.random(len(anchors))
        other_partner = self.order[self.start[g] + (u3 * self.size[g]).astype(np.int64)]
        partner = np.where(same, same_partner, other_partner)
        return partner, (self.family[partner] == fam)
