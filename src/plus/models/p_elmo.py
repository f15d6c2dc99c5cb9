"""P-ELMo baseline (spec §1.5): a bidirectional LSTM language model with tied directions, whose frozen
per-layer states feed a PLUS-RNN-like BiLSTM encoder. State-dict names follow the reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plus.alphabet import N_MLM_CLASSES, N_RNN_TOKENS, UNKNOWN
from plus.models.plus_rnn import LSTM_IMPLS, RNNEncoderBase, gather_time, lstm_autocast, reverse_index, run_bilstm


class PElmoLM(nn.Module):
    """Language model: the same (tied) unidirectional LSTM stack runs left-to-right over `[0, x]` and
    right-to-left over `[x, 0]`; the logit of token t sums the forward logit at t-1 and the reverse one at
    t+1. Input: reference-collated tokens (B, T) with lengths L + 2 (`collate_rnn`). The reverse direction
    is run per sequence, so padding never enters a valid state."""

    def __init__(self, hidden_dim: int = 1024, num_layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(N_RNN_TOKENS, N_RNN_TOKENS - 1, padding_idx=UNKNOWN)
        dims = [N_RNN_TOKENS - 1] + [hidden_dim] * (num_layers - 1)
        self.rnn = nn.ModuleList(nn.LSTM(d, hidden_dim, 1, batch_first=True) for d in dims)
        self.decoder = nn.Linear(hidden_dim, N_MLM_CLASSES)

    @property
    def out_dim(self) -> int:
        return 2 * len(self.rnn) * self.rnn[0].hidden_size

    def states(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (fwd, rvs), each (B, T-1, H): fwd[:, j] has read tokens 0..j, rvs[:, j] j+1..L+1."""
        ctx, x = lstm_autocast(self.embed(tokens))
        idx = reverse_index(lengths.to(x.device) - 1, x.shape[1] - 1)
        f, r = x[:, :-1], gather_time(x[:, 1:], idx)
        out = []
        with ctx:
            for lstm in self.rnn:
                f, r = lstm(f)[0], lstm(r)[0]
                out.append((f, gather_time(r, idx)))
        return out

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """LM log-probabilities (B, T, 21) of every token position, in float32."""
        f, r = self.states(tokens, lengths)[-1]
        zero = f.new_zeros(f.shape[0], 1, N_MLM_CLASSES)
        logits = torch.cat([zero, self.decoder(f)], 1) + torch.cat([self.decoder(r), zero], 1)
        return F.log_softmax(logits.float(), dim=2)

    @torch.no_grad()
    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Frozen features (B, T-2, 2 * layers * H) at residue positions: every layer's forward state
        before the residue and reverse state after it, [fwd_0, rvs_0, fwd_1, rvs_1, ...]; 0 beyond each
        sequence."""
        feats = torch.cat([torch.cat([f[:, :-1], r[:, 1:]], 2) for f, r in self.states(tokens, lengths)], 2)
        n = lengths.to(feats.device) - 2
        valid = torch.arange(feats.shape[1], device=feats.device)[None, :] < n[:, None]
        return feats * valid[:, :, None]


class PElmo(RNNEncoderBase):
    """P-ELMo encoder: ReLU(fc_lm(LM features) + x_embed(residue)) -> BiLSTM -> h; heads as PLUS-RNN."""

    def __init__(self, lm_dim=4096, lm_proj_dim=512, hidden_dim=512, num_layers=3, proj_dim=100,
                 n_thresholds=1, lstm_impl="auto"):
        super().__init__()
        if lstm_impl not in LSTM_IMPLS:
            raise ValueError(f"lstm_impl must be one of {LSTM_IMPLS}, got {lstm_impl!r}")
        self.lstm_impl = lstm_impl
        self.fc_lm = nn.Linear(lm_dim, lm_proj_dim)
        self.x_embed = nn.Embedding(N_RNN_TOKENS - 1, lm_proj_dim, padding_idx=N_RNN_TOKENS - 2)
        self.rnn = nn.LSTM(lm_proj_dim, hidden_dim, num_layers, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden_dim, proj_dim)
        self.decoder = nn.Linear(2 * hidden_dim, N_MLM_CLASSES)
        self.ordinal_weight = nn.Parameter(torch.ones(1, n_thresholds))
        self.ordinal_bias = nn.Parameter(torch.full((n_thresholds,), 10.0))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, lm_features: torch.Tensor) -> torch.Tensor:
        """h (B, T-2, 2H) from collated tokens (B, T), lengths L + 2 and `PElmoLM.encode` features."""
        aa = (tokens[:, 1:-1] - 1).clamp(min=0)
        x = torch.relu(self.x_embed(aa) + self.fc_lm(lm_features))
        return run_bilstm(self.rnn, x, lengths - 2, self.lstm_impl)
