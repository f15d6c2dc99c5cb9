"""The fine-tuning model (encoder + task head) and its starting weights: a pre-trained encoder, or for P-ELMo the
frozen LM (homology) or the LM + encoder of the same run's homology model (every other task)."""

from __future__ import annotations

import sys

import torch
from torch import nn

from plus.io import InputError
from plus.models import ContactHead, MLPHead, load_state_dict_reference
from plus.tasks.registry import SUPPORTED, Task
from plus.train.common import build_encoder, build_lm, check_compatible, load_checkpoint
from plus.train.hparams import RunSettings


class FinetuneModel(nn.Module):
    """Encoder + task head. RNN and P-ELMo: MLP head on h or z (ordinal SSA head for homology); TFM: its
    classifier. P-ELMo also holds its frozen LM (`lm`) and, with `contact`, the contact-map head."""

    def __init__(self, task: Task, model_cfg: dict, head_cfg, fidelity: dict, contact: bool = False):
        super().__init__()
        self.task, self.family = task, model_cfg["family"]
        self.encoder = build_encoder(model_cfg, fidelity, n_thresholds=task.ordinal_thresholds,
                                     n_classes=task.n_out)
        if self.family == "pelmo":
            self.lm = build_lm(model_cfg).requires_grad_(False)
            if task.kind != "pair":
                self.encoder.requires_grad_(False)
            if contact:
                self.contact = ContactHead(model_cfg["proj_dim"])
        self.max_len = model_cfg.get("max_len", 512)
        self.use_z = False
        if self.family in ("rnn", "pelmo") and task.kind != "pair":
            src, hidden = head_cfg or task.default_head
            self.use_z = src == "z"
            d_in = model_cfg["proj_dim"] if self.use_z else 2 * model_cfg["hidden_dim"]
            pooling = None if task.kind == "residue" else (
                "reference_sum" if fidelity.get("b2_sum_pooling", True) else "attention")
            self.head = MLPHead(d_in, hidden, task.n_out, pooling)

    def forward(self, batch):
        """Task outputs and the encoder states (for the auxiliary MLM loss)."""
        enc = self.encoder
        if self.family in ("rnn", "pelmo"):
            tokens, lengths = batch["tokens"], batch["lengths"]
            h = enc(tokens, lengths) if self.family == "rnn" else enc(tokens, lengths, self.lm.encode(tokens, lengths))
            res_len = lengths - 2
            if self.task.kind == "pair":
                n = batch["n_pairs"]
                z = enc.project(h)
                return enc.ordinal_logits(enc.ssa_score(z[:n], res_len[:n], z[n:], res_len[n:])), h
            x = enc.project(h) if self.use_z else h
            mask = torch.arange(h.shape[1], device=h.device)[None, :] < res_len[:, None]
            return self.head(x, mask), h
        h = enc(batch["tokens"], batch["segments"], batch["input_mask"])
        if self.task.kind == "residue":
            return enc.token_logits(h)[:, 1:-1], h
        return enc.cls_logits(h), h


def build_model(task: Task, settings: RunSettings, pretrained=None, contact: bool = False) -> FinetuneModel:
    model_cfg, fidelity = settings.model, settings.fidelity
    if (task.name, model_cfg["family"]) not in SUPPORTED:
        raise SystemExit(f"error: task {task.name!r} with model family {model_cfg['family']!r} "
                         "was not run in the paper and is not supported")
    model = FinetuneModel(task, model_cfg, settings.head, fidelity, contact)
    if pretrained and model.family == "pelmo":
        load_pelmo(model, load_checkpoint(pretrained), pretrained)
    elif pretrained:
        state = load_checkpoint(pretrained)
        check_compatible(model.encoder, state, pretrained)
        skip = ("cls",) if model.family == "tfm" else ()
        loaded, skipped = load_state_dict_reference(model.encoder, state, skip=skip)
        print(f"loaded {len(loaded)} tensors from {pretrained}; kept fresh: {skipped}", file=sys.stderr)
    return model


def _load_part(module: nn.Module, state: dict, path, what: str, optional=()) -> None:
    """Strict load of one part of a P-ELMo checkpoint; only keys ending in `optional` may be missing."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise InputError(f"{path}: the P-ELMo {what} does not fit this model's architecture ({exc})") from exc
    missing = [k for k in missing if not k.endswith(optional)]
    if missing or unexpected:
        raise InputError(f"{path}: the P-ELMo {what} does not fit this model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")


def load_pelmo(model: FinetuneModel, state: dict, path) -> None:
    """Homology starts from the pre-trained LM (`plus pretrain`); every other task from the P-ELMo homology
    model of the same run (LM + encoder; its ordinal and contact heads are left out)."""
    fine_tuned = any(k.startswith("encoder.") for k in state)
    if fine_tuned != (model.task.kind != "pair"):
        want = "the P-ELMo homology model" if model.task.kind != "pair" else "the pre-trained P-ELMo LM"
        raise InputError(f"{path}: P-ELMo {model.task.name} fine-tuning starts from {want}, got "
                         f"{'a fine-tuned P-ELMo' if fine_tuned else 'a language model'}")
    if not fine_tuned:
        _load_part(model.lm, state, path, "language model")
        print(f"loaded the P-ELMo LM from {path} (frozen)", file=sys.stderr)
        return
    _load_part(model.lm, {k[3:]: v for k, v in state.items() if k.startswith("lm.")}, path, "language model")
    encoder = {k[8:]: v for k, v in state.items() if k.startswith("encoder.") and not k[8:].startswith("ordinal_")}
    _load_part(model.encoder, encoder, path, "encoder", optional=("ordinal_weight", "ordinal_bias"))
    print(f"loaded the P-ELMo LM and homology-trained encoder from {path} (both frozen)", file=sys.stderr)
