"""Compute cost of pre-training, and GPU peak figures: one place for the numbers that `plus plan` prices a DAG
with and that benchmarks/paper_scale.py projects its CPU measurements onto.

Training FLOPs per token: 6 x parameters (forward 2N, backward 4N; the embedding is a table lookup and is
left out), plus for the Transformer the attention scores 6 x layers x context x width (Kaplan et al. 2020).
The SSA score of an RNN pair (L0 x L1 x proj_dim) adds under 1 % at Pfam lengths and is left out.
GPU peaks are the vendors' dense (no sparsity) datasheet figures, TFLOP/s.
"""

from __future__ import annotations

GPU_PEAK_TFLOPS = {  # NVIDIA A100 SXM 80 GB and H100 SXM datasheets, dense
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
}
REFERENCE_GPU = "A100"
# The share of peak a training job sustains: stated, not measured (no GPU here); `plus plan --efficiency`.
GPU_EFFICIENCY = 0.3
# precision: fp32 runs matmuls/cuDNN RNNs on TF32 tensor cores on Ampere+ (cudnn.allow_tf32 default)
PRECISION_PEAK = {"fp32": "tf32", "bf16": "bf16"}


def n_params(model_cfg: dict) -> int:
    """Parameters of a model config, counted from the module the workflow builds (no weights are trained)."""
    from plus.train.common import build_encoder, build_lm

    net = build_lm(model_cfg) if model_cfg["family"] == "pelmo" else build_encoder(model_cfg, {})
    return sum(p.numel() for n, p in net.named_parameters() if "embed" not in n.split(".")[0])


def flops_per_token(model_cfg: dict, params: int, context: float) -> float:
    """Training FLOPs per input token (see the module docstring)."""
    flops = 6.0 * params
    if model_cfg["family"] == "tfm":
        flops += 6.0 * model_cfg["num_layers"] * context * model_cfg["hidden_dim"]
    return flops


def gpu_hours(tokens: float, flops: float, precision: str = "fp32", gpu: str = REFERENCE_GPU,
              efficiency: float = GPU_EFFICIENCY) -> float:
    peak = GPU_PEAK_TFLOPS[gpu][PRECISION_PEAK[precision]] * 1e12
    return tokens * flops / (peak * efficiency) / 3600


def gpu_pretrain_projection(model_cfg: dict, params: int, train_tokens: int, epochs: int, batch_pairs: int,
                            mean_len: float, precision: str = "fp32") -> dict:
    """A pre-training job on the reference GPU: tokens (every training sequence an anchor once per epoch, two
    sequences per pair; P-ELMo's LM: single sequences), GPU-hours, and the pairs/s (P-ELMo: sequences/s) the
    GPU consumes, i.e. what the DataLoader must deliver."""
    family = model_cfg["family"]
    context = 2 * mean_len if family == "tfm" else mean_len
    per_item, unit = (1, "sequences") if family == "pelmo" else (2, "pairs")
    flops = flops_per_token(model_cfg, params, context)
    tokens = per_item * float(train_tokens) * epochs
    hours = gpu_hours(tokens, flops, precision)
    tokens_per_s = tokens / (hours * 3600)
    return {"gpu": REFERENCE_GPU, "peak": PRECISION_PEAK[precision], "efficiency": GPU_EFFICIENCY,
            "flops_per_token": round(flops), "tokens": round(tokens), "gpu_hours": round(hours, 1),
            "tokens_per_s": round(tokens_per_s), f"{unit}_per_s": round(tokens_per_s / (per_item * mean_len), 1),
            "batch_pairs": batch_pairs}
