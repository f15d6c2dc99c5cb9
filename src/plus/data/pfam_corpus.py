"""The pre-training corpus that `plus pfam preprocess` writes, as training reads it: memory-mapped training
shards and the held-out pair TSVs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from plus.io import InputError

PAIR_COLUMNS = ("sequence_A", "sequence_B", "is_samefamily")


class PfamCorpus:
    """Memory-mapped training shards written by `preprocess`."""

    def __init__(self, directory: str | os.PathLike):
        directory = Path(directory)
        try:
            self.token_array = np.load(directory / "train_tokens.npy", mmap_mode="r")
            self.offsets = np.load(directory / "train_offsets.npy")
            self.family = np.load(directory / "train_family.npy")
        except FileNotFoundError as exc:
            raise InputError(f"{directory}: not a preprocessed Pfam corpus ({exc.filename} missing)") from exc
        with open(directory / "families.tsv") as fh:
            rows = [line.rstrip("\n").split("\t") for line in fh][1:]
        self.accessions = [r[1] for r in rows]
        self.family_names = [r[2] for r in rows]
        self.n_families = len(rows)
        self.lengths = np.diff(self.offsets)
        self.family_sizes = np.bincount(self.family, minlength=self.n_families)
        self._order = np.argsort(self.family, kind="stable")
        self._bounds = np.concatenate(([0], np.cumsum(self.family_sizes)))

    def __len__(self) -> int:
        return len(self.family)

    def tokens(self, i: int) -> np.ndarray:
        """Token ids (uint8, 1..21) of training sequence i."""
        return np.asarray(self.token_array[self.offsets[i] : self.offsets[i + 1]])

    def members(self, f: int) -> np.ndarray:
        """Sequence indices (int64, ascending) of family f."""
        return self._order[self._bounds[f] : self._bounds[f + 1]]


def read_pairs(path: str | os.PathLike) -> list[tuple[str, str, int]]:
    """(sequence_A, sequence_B, is_samefamily) rows of a reference-format pair TSV."""
    with open(path) as fh:
        header = fh.readline().rstrip("\n").split("\t")
        try:
            cols = [header.index(c) for c in PAIR_COLUMNS]
        except ValueError:
            raise InputError(f"{path}: header must contain {', '.join(PAIR_COLUMNS)}") from None
        pairs = []
        for n, line in enumerate(fh, 2):
            fields = line.rstrip("\n").split("\t")
            try:
                pairs.append((fields[cols[0]], fields[cols[1]], int(fields[cols[2]])))
            except (IndexError, ValueError):
                raise InputError(f"{path}: line {n}: expected {len(header)} tab-separated fields") from None
    return pairs
