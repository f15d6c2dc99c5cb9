"""PLUS-TFM (spec §1.4, golden README §3): a post-LN BERT encoder with sinusoidal positions, segment
embeddings, a tied MLM decoder and a [CLS] classifier, with the reference's state-dict names."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plus.alphabet import N_TFM_TOKENS, TFM_CLS, TFM_SEP

LAYERNORMS = ("reference", "standard")


def tfm_single_input(tokens: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`[CLS] x [SEP]` padded with 0 to max_len (first max_len - 2 residues kept): tokens, segments, mask."""
    x = np.asarray(tokens, dtype=np.int64)[: max_len - 2]
    out = np.zeros(max_len, dtype=np.int64)
    out[0], out[1 : len(x) + 1], out[len(x) + 1] = TFM_CLS, x, TFM_SEP
    mask = np.arange(max_len) < len(x) + 2
    return out, np.zeros(max_len, dtype=np.int64), mask


def pair_lengths(la: int, lb: int, max_len: int) -> tuple[int, int]:
    """Kept lengths of a pair under the reference truncation: while too long, drop the last residue of the longer
    sequence (ties shorten b)."""
    while la + lb > max_len - 3:
        if la > lb:
            la -= 1
        else:
            lb -= 1
    return la, lb


def tfm_pair_input(a: np.ndarray, b: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`[CLS] a [SEP] b [SEP]` padded to max_len: tokens, segments (1 on `b [SEP]`), mask. While too long, the
    last residue of the longer sequence is dropped (ties shorten b)."""
    la, lb = pair_lengths(len(a), len(b), max_len)
    out = np.zeros(max_len, dtype=np.int64)
    out[0], out[1 : la + 1], out[la + 1] = TFM_CLS, np.asarray(a[:la], dtype=np.int64), TFM_SEP
    out[la + 2 : la + lb + 2], out[la + lb + 2] = np.asarray(b[:lb], dtype=np.int64), TFM_SEP
    seg = np.zeros(max_len, dtype=np.int64)
    seg[la + 2 : la + lb + 3] = 1
    mask = np.arange(max_len) < la + lb + 3
    return out, seg, mask


def gelu(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


class LayerNorm(nn.Module):
    """LayerNorm with parameters gamma/beta. "reference" (bug B10): (x - mean) / sqrt(unbiased std + eps);
    "standard": the usual (x - mean) / sqrt(var + eps)."""

    def __init__(self, dim: int, variant: str = "reference", eps: float = 1e-12):
        super().__init__()
        if variant not in LAYERNORMS:
            raise ValueError(f"layernorm must be one of {LAYERNORMS}, got {variant!r}")
        self.variant, self.eps = variant, eps
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        if self.variant == "standard":
            return F.layer_norm(x, x.shape[-1:], self.gamma, self.beta, self.eps)
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.gamma * (x - mean) / torch.sqrt(std + self.eps) + self.beta


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal table, a persistent buffer `pe` (1, n, D)."""

    def __init__(self, dim: int, n: int):
        super().__init__()
        pos = torch.arange(n, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(n, dim)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)
        self.register_buffer("pe", pe[None])

    def forward(self, seq_len: int) -> torch.Tensor:
        return self.pe[:, :seq_len]


class Embeddings(nn.Module):
    def __init__(self, dim, max_len, dropout, layernorm):
        super().__init__()
        self.tok_embed = nn.Embedding(N_TFM_TOKENS, dim)
        self.seg_embed = nn.Embedding(2, dim)
        self.pos_embed = PositionalEncoding(dim, max_len + 3)
        self.norm = LayerNorm(dim, layernorm)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens, segments):
        e = self.tok_embed(tokens) + self.pos_embed(tokens.shape[1]) + self.seg_embed(segments)
        return self.drop(self.norm(e))


class MultiHeadedSelfAttention(nn.Module):
    def __init__(self, dim, num_heads, dropout):
        super().__init__()
        self.proj_q, self.proj_k, self.proj_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.num_heads, self.dropout = num_heads, dropout

    def forward(self, x, input_mask):
        B, S, D = x.shape
        q, k, v = (p(x).view(B, S, self.num_heads, -1).transpose(1, 2)
                   for p in (self.proj_q, self.proj_k, self.proj_v))
        bias = -10000.0 * (1.0 - input_mask.to(q.dtype))[:, None, None, :]
        drop = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)
        return a.transpose(1, 2).reshape(B, S, D)


class PositionWiseFeedForward(nn.Module):
    def __init__(self, dim, ff_dim):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, ff_dim), nn.Linear(ff_dim, dim)

    def forward(self, x):
        return self.fc2(gelu(self.fc1(x)))


class Block(nn.Module):
    """Post-LN transformer block."""

    def __init__(self, dim, num_heads, ff_dim, dropout, layernorm):
        super().__init__()
        self.attn = MultiHeadedSelfAttention(dim, num_heads, dropout)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = LayerNorm(dim, layernorm)
        self.pwff = PositionWiseFeedForward(dim, ff_dim)
        self.norm2 = LayerNorm(dim, layernorm)
        self.drop = nn.Dropout(dropout)

    def forward(self, h, input_mask):
        h = self.norm1(h + self.drop(self.proj(self.attn(h, input_mask))))
        return self.norm2(h + self.drop(self.pwff(h)))


class Transformer(nn.Module):
    def __init__(self, dim, num_layers, num_heads, ff_dim, max_len, dropout, layernorm):
        super().__init__()
        self.embed = Embeddings(dim, max_len, dropout, layernorm)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, ff_dim, dropout, layernorm) for _ in range(num_layers))

    def forward(self, tokens, segments, input_mask):
        h = self.embed(tokens, segments)
        for block in self.blocks:
            h = block(h, input_mask)
        return h


class PlusTFM(nn.Module):
    """PLUS-TFM: encoder, MLM head (decoder tied to the token embedding), classifier on [CLS] / tokens."""

    def __init__(self, hidden_dim=768, num_layers=12, num_heads=12, ff_dim=3072, max_len=512, dropout=0.1,
                 n_classes=2, layernorm="reference"):
        super().__init__()
        self.transformer = Transformer(hidden_dim, num_layers, num_heads, ff_dim, max_len, dropout, layernorm)
        self.fc_lm = nn.Linear(hidden_dim, hidden_dim)
        self.norm_lm = LayerNorm(hidden_dim, layernorm)
        self.decoder = nn.Linear(hidden_dim, N_TFM_TOKENS, bias=False)
        self.decoder.weight = self.transformer.embed.tok_embed.weight
        self.decoder_bias = nn.Parameter(torch.zeros(N_TFM_TOKENS))
        self.drop = nn.Dropout(dropout)
        self.cls = nn.Linear(hidden_dim, n_classes)

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor, input_mask: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states h (B, S, D)."""
        return self.transformer(tokens, segments, input_mask)

    def mlm_logprobs(self, h: torch.Tensor, masked_pos: torch.Tensor) -> torch.Tensor:
        """Log-softmax over the 25 tokens at token positions masked_pos (B, P): (B, P, 25), in float32."""
        g = h.gather(1, masked_pos[:, :, None].expand(-1, -1, h.shape[2]))
        g = self.norm_lm(gelu(self.fc_lm(g)))
        return F.log_softmax((self.decoder(g) + self.decoder_bias).float(), dim=-1)

    def cls_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Protein-level logits from the [CLS] vector, (B, n_classes)."""
        return self.cls(self.drop(h[:, 0]))

    def token_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Residue-level logits at every token, (B, S, n_classes)."""
        return self.cls(self.drop(h))
