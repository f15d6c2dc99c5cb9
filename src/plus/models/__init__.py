"""PLUS model families (PLUS-RNN, PLUS-TFM, P-ELMo), fine-tuning heads and reference checkpoint loading."""

from __future__ import annotations

import torch
from torch import nn

from plus.models.heads import ContactHead, MLPHead
from plus.models.p_elmo import PElmo, PElmoLM
from plus.models.plus_rnn import PlusRNN, collate_rnn, expected_level, level_probs, ssa_score
from plus.models.plus_tfm import PlusTFM, tfm_pair_input, tfm_single_input

__all__ = [
    "ContactHead", "MLPHead", "PElmo", "PElmoLM", "PlusRNN", "PlusTFM", "collate_rnn", "expected_level",
    "level_probs", "load_state_dict_reference", "ssa_score", "tfm_pair_input", "tfm_single_input",
]


def load_state_dict_reference(model: nn.Module, state_dict: dict[str, torch.Tensor],
                              skip: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """The reference's loading convention: strip a leading `module.`, copy every tensor whose name and shape
    match (keys containing any substring in `skip` excluded, e.g. ("cls",)); the rest keep their values.
    Returns (loaded, skipped) checkpoint keys."""
    own = model.state_dict()
    loaded, skipped = [], []
    for key, value in state_dict.items():
        name = key.removeprefix("module.")
        if name in own and own[name].shape == value.shape and not any(s in name for s in skip):
            own[name] = value
            loaded.append(key)
        else:
            skipped.append(key)
    model.load_state_dict(own)
    return loaded, skipped
