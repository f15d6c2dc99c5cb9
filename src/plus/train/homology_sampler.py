"""Homology training pairs drawn from the n^2 pairs of the training domains (spec §3.1, bug B4).

corrected (Bepler & Berger): a level l is drawn with P(l) ∝ count_l^0.5 (per-pair weight count^tau/count,
tau 0.5), then a pair uniformly among the pairs of that level.
reference (B4): P(l) ∝ count_l^-0.5, then an index uniform in [0, start_l] of the level-sorted pair list:
the pairs of the lower levels, or the first pair of level l (level 0 therefore always yields one pair).
Pairs are never materialised: a pair of level exactly l is found by drawing an anchor with probability
∝ its number of level-l partners and a partner among its SCOP group of depth l minus depth l+1.
"""

from __future__ import annotations

import numpy as np


class HomologySampler:
    def __init__(self, domains, reference: bool):
        """domains: records (id, seq, sccs) of the training FASTA."""
        self.domains, self.reference = domains, reference
        n = len(domains)
        levels = [r[2].split(".") for r in domains]
        # group id of each domain at depth d (d = 0: everything; 1: class; ... 4: family)
        self.groups = np.zeros((5, n), dtype=np.int64)
        for d in range(1, 5):
            keys = {}
            self.groups[d] = [keys.setdefault(tuple(lv[:d]), len(keys)) for lv in levels]
        self.group_size = [np.bincount(g)[g] for g in self.groups]  # size of each domain's group
        # partners of anchor i at level exactly l (self-pair counts at level 4)
        self.partners = np.stack([self.group_size[d] - (self.group_size[d + 1] if d < 4 else 0)
                                  for d in range(5)])
        self.count = self.partners.sum(1).astype(np.float64)  # pairs per level (ordered, self included)
        self.members = [{g: np.flatnonzero(self.groups[d] == g) for g in np.unique(self.groups[d])}
                        for d in range(5)]
        self.first_pair = [self._first_pair(lv) for lv in range(5)]

    def _first_pair(self, level):
        for i in range(len(self.domains)):  # lexicographic (i, j) order, vectorised over j
            lv = sum((self.groups[d] == self.groups[d][i]).astype(np.int64) for d in range(1, 5))
            hits = np.flatnonzero(lv == level)
            if len(hits):
                return i, int(hits[0])
        return None

    def level(self, i, j) -> int:
        return int(sum(self.groups[d][i] == self.groups[d][j] for d in range(1, 5)))

    def _pair_at_level(self, level, rng):
        w = self.partners[level].astype(np.float64)
        i = int(rng.choice(len(w), p=w / w.sum()))
        pool = self.members[level][self.groups[level][i]]
        while True:  # uniform in the depth-`level` group, rejecting the deeper group
            j = int(pool[rng.integers(len(pool))])
            if level == 4 or self.groups[level + 1][j] != self.groups[level + 1][i]:
                return i, j

    def sample(self, n_pairs: int, rng: np.random.Generator):
        """n_pairs records (idA, idB, seqA, seqB, level)."""
        present = np.flatnonzero(self.count > 0)
        if self.reference:
            p = self.count[present] ** -0.5
        else:
            p = self.count[present] ** 0.5
        levels = rng.choice(present, size=n_pairs, p=p / p.sum())
        starts = np.concatenate([[0], np.cumsum(self.count)[:-1]])
        out = []
        for lv in levels:
            if self.reference:
                k = int(rng.integers(0, int(starts[lv]) + 1))
                if k == starts[lv]:
                    i, j = self.first_pair[lv]
                else:  # the level whose slice of the sorted list holds index k, uniform inside it
                    lower = int(np.searchsorted(np.cumsum(self.count), k, side="right"))
                    i, j = self._pair_at_level(lower, rng)
            else:
                i, j = self._pair_at_level(int(lv), rng)
            a, b = self.domains[i], self.domains[j]
            out.append((a[0], b[0], a[1], b[1], self.level(i, j)))
        return out
