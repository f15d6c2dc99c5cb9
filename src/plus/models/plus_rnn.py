"""PLUS-RNN (spec §1.2-1.3): embedding, 3-layer BiLSTM, projection, MLM decoder, soft symmetric alignment
(SSA) score and ordinal head, with the reference's state-dict names.

The BiLSTM runs either on packed sequences ("packed", the reference/cuDNN path) or as padded unidirectional
LSTMs with per-sequence reversal ("flip", exact packed semantics on the fast padded CPU kernels).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils.checkpoint import checkpoint

from plus.alphabet import N_MLM_CLASSES, N_RNN_TOKENS, UNKNOWN

LSTM_IMPLS = ("auto", "flip", "packed")
_SSA_BLOCK = 1 << 22  # elements of one (pairs, L0, L1) SSA chunk
# CPU "flip" path: rows are sorted by length and run in groups of this many, each padded to its own longest
# row: less padding, and smaller per-step GEMMs stay in cache (BASE, 64 rows of U[200, 300]: 1.3-1.4x faster)
LSTM_CHUNK_ROWS = 16


def collate_rnn(seqs: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference collation: (B, max L + 2) ids, residues at 1..L, 0 at start, end and padding; and L + 2."""
    lengths = torch.tensor([len(s) + 2 for s in seqs], dtype=torch.long)
    tokens = torch.zeros(len(seqs), int(lengths.max()) if len(seqs) else 2, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, 1 : len(s) + 1] = torch.as_tensor(np.asarray(s, dtype=np.int64))
    return tokens, lengths


def reverse_index(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) time index reversing the first lengths[b] steps of each row, padding kept (an involution)."""
    t = torch.arange(T, device=lengths.device)[None, :]
    L = lengths[:, None]
    return torch.where(t < L, L - 1 - t, t)


def gather_time(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, T, D) reordered along time by idx (B, T)."""
    return x.gather(1, idx[:, :, None].expand(-1, -1, x.shape[2]))


def lstm_autocast(x: torch.Tensor) -> tuple[contextlib.AbstractContextManager, torch.Tensor]:
    """(context, input) for LSTM calls on x: CPU autocast would send them to oneDNN's bf16 LSTM, which fails
    on CPUs without AVX-512 BF16, so on CPU they run in float32 with autocast off; on CUDA autocast stays on
    (cuDNN's LSTM in bf16)."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.autocast("cpu", enabled=False), x.float()
    return contextlib.nullcontext(), x


def run_bilstm(rnn: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor, impl: str) -> torch.Tensor:
    """Outputs (B, T, 2H) of a batch_first bidirectional `rnn` on x (B, T, D) with packed-sequence semantics;
    positions >= lengths are 0."""
    if impl == "auto":
        impl = "packed" if x.is_cuda else "flip"
    ctx, x = lstm_autocast(x)
    with ctx:
        return _run_bilstm(rnn, x, lengths, impl)


def _run_bilstm(rnn, x, lengths, impl):
    B, T, _ = x.shape
    if impl == "packed":
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=T)[0]
    lengths = lengths.to(x.device)
    if B <= LSTM_CHUNK_ROWS:
        return _flip_bilstm(rnn, x, lengths)
    order = lengths.argsort(descending=True, stable=True)
    outs = []
    for rows in order.split(LSTM_CHUNK_ROWS):
        t = int(lengths[rows].max())
        outs.append(F.pad(_flip_bilstm(rnn, x[rows, :t], lengths[rows]), (0, 0, 0, T - t)))
    return torch.cat(outs)[order.argsort()]


def _flip_bilstm(rnn, x, lengths):
    B, T, _ = x.shape
    idx = reverse_index(lengths, T)
    zeros = x.new_zeros(1, B, rnn.hidden_size)
    for k in range(rnn.num_layers):
        out = []
        for sfx in ("", "_reverse"):
            w = [getattr(rnn, f"{n}_l{k}{sfx}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            inp = x if not sfx else gather_time(x, idx)
            o = torch.lstm(inp, (zeros, zeros), w, True, 1, 0.0, rnn.training, False, True)[0]
            out.append(o if not sfx else gather_time(o, idx))
        x = torch.cat(out, dim=2)
    valid = torch.arange(T, device=x.device)[None, :] < lengths[:, None]
    return x * valid[:, :, None]


class _L1Dist(torch.autograd.Function):
    """Pairwise L1 distances (N, A, B) of x (N, A, E) and y (N, B, E). The backward goes one feature at a
    time, so no N x A x B x E tensor is ever built."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return torch.cdist(x, y, p=1)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        xt, yt = x.transpose(1, 2).contiguous(), y.transpose(1, 2).contiguous()
        gx, gy = torch.empty_like(x), torch.empty_like(y)
        for e in range(x.shape[2]):
            p = torch.sign(xt[:, e, :, None] - yt[:, e, None, :]).mul_(g)
            gx[:, :, e] = p.sum(2)
            gy[:, :, e] = p.sum(1).neg_()
        return gx, gy


def _ssa_dense(z0, len0, z1, len1):
    s = -_L1Dist.apply(z0, z1)
    m0 = torch.arange(s.shape[1], device=s.device)[None, :] < len0[:, None]
    m1 = torch.arange(s.shape[2], device=s.device)[None, :] < len1[:, None]
    a = s.masked_fill(~m1[:, None, :], float("-inf")).softmax(2)
    b = s.masked_fill(~m0[:, :, None], float("-inf")).softmax(1)
    c = (a + b - a * b) * (m0[:, :, None] & m1[:, None, :])
    return (c * s).sum((1, 2)) / c.sum((1, 2))


def ssa_score(z0: torch.Tensor, len0: torch.Tensor, z1: torch.Tensor, len1: torch.Tensor) -> torch.Tensor:
    """Soft symmetric alignment score (N,) of z0[n, :len0[n]] vs z1[n, :len1[n]] (spec §1.3), in float32.

    Pairs are processed in chunks of about 4M alignment cells; with several chunks and autograd on, each chunk
    is checkpointed, so memory stays bounded for long sequences."""
    with torch.autocast(z0.device.type, enabled=False):
        z0, z1 = z0.float(), z1.float()
        len0, len1 = len0.to(z0.device), len1.to(z0.device)
        step = max(1, _SSA_BLOCK // max(1, z0.shape[1] * z1.shape[1]))
        if step >= len(z0):
            return _ssa_dense(z0, len0, z1, len1)
        grad = torch.is_grad_enabled() and (z0.requires_grad or z1.requires_grad)
        out = []
        for i in range(0, len(z0), step):
            args = (z0[i : i + step], len0[i : i + step], z1[i : i + step], len1[i : i + step])
            out.append(checkpoint(_ssa_dense, *args, use_reentrant=False) if grad else _ssa_dense(*args))
        return torch.cat(out)


def level_probs(logits: torch.Tensor) -> torch.Tensor:
    """P(level = k), k = 0..K, from K cumulative ordinal logits (golden README §2.4), rows normalised."""
    p = torch.sigmoid(logits)
    one = torch.ones_like(p[:, :1])
    probs = torch.cat([one, p], 1) * torch.cat([1 - p, one], 1)
    return probs / probs.sum(1, keepdim=True)


def expected_level(logits: torch.Tensor) -> torch.Tensor:
    """Expected level sum_k k * P(level = k)."""
    probs = level_probs(logits)
    return probs @ torch.arange(probs.shape[1], dtype=probs.dtype, device=probs.device)


class RNNEncoderBase(nn.Module):
    """Heads shared by PLUS-RNN and P-ELMo: projection, MLM decoder, SSA score and ordinal logits."""

    fc: nn.Linear
    decoder: nn.Linear
    ordinal_weight: nn.Parameter
    ordinal_bias: nn.Parameter

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """z = fc(h), (B, T, E)."""
        return self.fc(h)

    def mlm_logprobs(self, h: torch.Tensor, masked_pos: torch.Tensor) -> torch.Tensor:
        """Log-softmax of the decoder at residue positions masked_pos (B, P): (B, P, 21), in float32."""
        g = h.gather(1, masked_pos[:, :, None].expand(-1, -1, h.shape[2]))
        return F.log_softmax(self.decoder(g).float(), dim=-1)

    def ssa_score(self, z0, len0, z1, len1) -> torch.Tensor:
        """Batched SSA score (N,) of N pairs (see `ssa_score`); lengths count residues."""
        return ssa_score(z0, len0, z1, len1)

    def ordinal_logits(self, score: torch.Tensor) -> torch.Tensor:
        """K ordinal logits per pair: score * w + b, (N, K)."""
        return score[:, None].to(self.ordinal_weight.dtype) * self.ordinal_weight + self.ordinal_bias


class PlusRNN(RNNEncoderBase):
    """PLUS-RNN encoder + pre-training heads. BASE: hidden 512, LARGE: 1024; 3 layers, projection 100."""

    def __init__(self, hidden_dim=512, num_layers=3, proj_dim=100, n_thresholds=1, lstm_impl="auto"):
        super().__init__()
        if lstm_impl not in LSTM_IMPLS:
            raise ValueError(f"lstm_impl must be one of {LSTM_IMPLS}, got {lstm_impl!r}")
        self.lstm_impl = lstm_impl
        self.ordinal_weight = nn.Parameter(torch.ones(1, n_thresholds))
        self.ordinal_bias = nn.Parameter(torch.full((n_thresholds,), 10.0))
        self.embed = nn.Embedding(N_RNN_TOKENS, N_RNN_TOKENS - 1, padding_idx=UNKNOWN)
        self.rnn = nn.LSTM(N_RNN_TOKENS - 1, hidden_dim, num_layers, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden_dim, proj_dim)
        self.decoder = nn.Linear(2 * hidden_dim, N_MLM_CLASSES)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """h (B, T-2, 2H) at residue positions of reference-collated tokens (B, T); lengths = L + 2."""
        out = run_bilstm(self.rnn, self.embed(tokens), lengths, self.lstm_impl)
        return out[:, 1:-1]
