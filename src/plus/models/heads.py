"""Fine-tuning heads (spec §1.6): the MLP head with the reference's pooling, and the 2-D contact-map CNN."""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("reference_sum", "attention", None)


class MLPHead(nn.Module):
    """hidden -> ReLU -> dropout -> output on pooled vectors (protein level) or per residue (pooling None).

    "reference_sum": the reference's attention pooling takes a softmax over an axis of size 1 (bug B2), so the
    pooled vector is the plain sum over valid residues; `attention.*` exists (checkpoint compatibility) but is
    unused. "attention": softmax of `attention(x)` over the valid residues, then the weighted sum."""

    def __init__(self, d_in: int, d_hidden: int, n_out: int, pooling: str | None = "reference_sum",
                 dropout: float = 0.0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        if pooling is not None:
            self.attention = nn.Linear(d_in, 1)
        self.hidden = nn.Linear(d_in, d_hidden)
        self.output = nn.Linear(d_hidden, n_out)
        self.drop = nn.Dropout(dropout)

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pooled (B, D) of x (B, T, D) over positions where mask (B, T) is True."""
        if self.pooling == "reference_sum":
            return (x * mask[:, :, None]).sum(1)
        w = self.attention(x).squeeze(2).masked_fill(~mask, float("-inf")).softmax(1)
        return (w[:, :, None] * x).sum(1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, n_out) when pooling, else (B, T, n_out)."""
        if self.pooling is not None:
            x = self.pool(x, mask)
        return self.output(self.drop(torch.relu(self.hidden(x))))


class ContactHead(nn.Module):
    """ConvNet2D: pairwise [|z_i - z_j|, z_i * z_j] -> 1x1 conv -> ReLU -> width x width conv -> logits."""

    def __init__(self, embed_dim: int = 100, hidden: int = 50, width: int = 7):
        super().__init__()
        self.conv1 = nn.Conv2d(2 * embed_dim, hidden, 1)
        self.conv2 = nn.Conv2d(hidden, 1, width, padding=width // 2)
        self.symmetrize_()

    @torch.no_grad()
    def symmetrize_(self) -> None:
        """Make the 2-D kernel transpose-invariant, W <- (W + W^T) / 2 (the reference: after every step)."""
        w = self.conv2.weight
        w.copy_(0.5 * (w + w.transpose(2, 3)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, L) from z (B, L, E)."""
        z = z.transpose(1, 2)
        pair = torch.cat([(z[:, :, None] - z[:, :, :, None]).abs(), z[:, :, None] * z[:, :, :, None]], 1)
        return self.conv2(torch.relu(self.conv1(pair))).squeeze(1)
