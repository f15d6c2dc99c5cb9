"""The reference PLUS alphabet (spec §1.1): residues to token ids, for both model families.

ids 1..20 = ARNDCQEGHILKMFPSTWYV, 21 = X / unknown (also the RNN [MASK]); O->K, U->C, B/Z->X, any other
byte -> 21. Sequences are upper-cased first, as every reference data loader does.
PLUS-RNN: 0 = start/stop/padding. PLUS-TFM: 0 [PAD], 22 [MASK], 23 [CLS], 24 [SEP].
"""

from __future__ import annotations

import numpy as np

RESIDUES = "ARNDCQEGHILKMFPSTWYV"
PAD = 0
UNKNOWN = 21  # X, and the PLUS-RNN [MASK] token
N_RNN_TOKENS = 22  # ids 0..21
N_MLM_CLASSES = 21  # decoder outputs; class c = token id c, 0 never a target
TFM_MASK, TFM_CLS, TFM_SEP = 22, 23, 24
N_TFM_TOKENS = 25

_TABLE = np.full(256, UNKNOWN, dtype=np.uint8)
for _i, _c in enumerate(RESIDUES, 1):
    _TABLE[ord(_c)] = _i
_TABLE[ord("O")] = RESIDUES.index("K") + 1
_TABLE[ord("U")] = RESIDUES.index("C") + 1


def encode(seq: str | bytes) -> np.ndarray:
    """Token ids (uint8, 1..21) of a sequence, upper-cased first."""
    raw = seq.upper().encode("ascii", "replace") if isinstance(seq, str) else seq.upper()
    return _TABLE[np.frombuffer(raw, dtype=np.uint8)]


def decode(tokens) -> str:
    """Residue letters of token ids 1..21 (21 -> X)."""
    letters = "-" + RESIDUES + "X"
    return "".join(letters[int(t)] if 0 <= int(t) <= 21 else "?" for t in tokens)
