"""A second golden set in the layout of tests/golden/, with other sizes, counts, seeds and settings, to check
that the golden tests read everything from the set they are given (test_golden_tests_run_on_another_set).

It is NOT a set recorded by the reference generator: the model outputs, losses and gradients are computed by
this package's own models (which reproduce the reference on the recorded set), and the metric sets are subsets
of the recorded ones with their metrics recomputed by this package. So it checks only that no size, count,
seed or setting of the recorded set is built into a test, not numerical equivalence at the new sizes.

    python tests/golden_variant.py OUT_DIR
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from plus.alphabet import encode
from plus.models import MLPHead, PlusRNN, PlusTFM, collate_rnn, expected_level, level_probs, tfm_pair_input
from plus.models.plus_tfm import tfm_single_input
from plus.tasks import metrics as M
from plus.train.hparams import pretrain_hp
from plus.train.masking import mask_tokens, pad_targets
from plus.train.pretrain import forward_losses

SRC = Path(__file__).parent / "golden"
SEED = 7
RNN = {"num_layers": 3, "hidden_dim": 24, "embedding_dim": 12}
TFM = {"num_layers": 3, "hidden_dim": 16, "num_heads": 4, "feedforward_dim": 48, "pos_encode": True,
       "max_len": 96, "dropout": 0.1}
TFM_CLASSES = 3
RUN = {"batch_size_train": 32, "batch_size_eval": 256, "num_epochs": 3, "learning_rate": 2e-3, "mask_ratio": 0.15,
       "max_pred": 40, "lm_loss_lambda": 0.6, "cls_loss_lambda": 0.4}
HOM_K = 4  # the homology head's thresholds: five levels by definition of the task


def save_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1))


def save_npz(path: Path, arrays: dict) -> None:
    np.savez(path, **{k: np.asarray(v.detach().numpy() if torch.is_tensor(v) else v) for k, v in arrays.items()})


def rnn_models(out: Path, sequences):
    kw = {"hidden_dim": RNN["hidden_dim"], "num_layers": RNN["num_layers"], "proj_dim": RNN["embedding_dim"]}
    torch.manual_seed(SEED)
    sfp = PlusRNN(**kw, n_thresholds=1, lstm_impl="packed").eval()
    hom = PlusRNN(**kw, n_thresholds=HOM_K, lstm_impl="packed").eval()
    state = {k: v for k, v in sfp.state_dict().items() if not k.startswith("ordinal_")}
    g = torch.Generator().manual_seed(SEED)
    hom.load_state_dict({**state, "ordinal_weight": 0.8 + 0.4 * torch.rand(1, HOM_K, generator=g),
                         "ordinal_bias": torch.linspace(6.0, 1.0, HOM_K)})
    torch.save(sfp.state_dict(), out / "plus_rnn_sfp_state_dict.pt")
    torch.save(hom.state_dict(), out / "plus_rnn_hom_state_dict.pt")
    save_json(out / "plus_rnn_config.json", {
        "model_config_json": {"model_type": "RNN", "rnn_type": "B", **RNN}, "input_dim": 22,
        "sfp_model_num_thresholds": 1, "hom_model_num_thresholds": HOM_K, "sequences": sequences,
        "param_shapes_sfp": {k: list(v.shape) for k, v in sfp.state_dict().items()}})
    return sfp, hom


@torch.no_grad()
def rnn_vectors(out: Path, sfp, hom, sequences, rng):
    tokens, lengths = collate_rnn([encode(s) for s in sequences])
    h = sfp(tokens, lengths)
    z = sfp.project(h)
    L = lengths - 2
    pos = torch.as_tensor(np.stack([rng.choice(int(n), 7, replace=False) for n in L]))
    n = len(sequences)
    pairs = torch.as_tensor([[i, (i + 1) % n] for i in range(n)] + [[1, 1], [0, 0]])
    i, j = pairs[:, 0], pairs[:, 1]
    score = sfp.ssa_score(z[i], L[i], z[j], L[j])
    sfp_logits = sfp.ordinal_logits(score)
    sfp_labels = torch.as_tensor(rng.integers(0, 2, (len(pairs), 1)))
    zh = hom.project(hom(tokens, lengths))
    hom_logits = hom.ordinal_logits(hom.ssa_score(zh[i], L[i], zh[j], L[j]))
    levels = torch.as_tensor(rng.integers(0, HOM_K + 1, len(pairs)))
    cum = (levels[:, None] > torch.arange(HOM_K)[None]).long()
    probs = level_probs(hom_logits)
    save_npz(out / "plus_rnn_vectors.npz", {
        "seq_line_ids": np.arange(n), "residue_lengths": L, "tokens": tokens, "lengths": lengths, "h": h, "z": z,
        "lm_masked_pos": pos, "lm_logprobs": sfp.mlm_logprobs(h, pos), "pairs": pairs, "ssa_score": score,
        "sfp_logits": sfp_logits, "sfp_labels": sfp_labels,
        "sfp_loss": F.binary_cross_entropy_with_logits(sfp_logits, sfp_labels.float()),
        "sfp_correct_ref": ((sfp_logits > 0.5) == sfp_labels.bool()).sum(), "hom_logits": hom_logits,
        "hom_levels": levels, "hom_cum_labels": cum,
        "hom_loss": F.binary_cross_entropy_with_logits(hom_logits, cum.float()), "hom_level_probs": probs,
        "hom_expected_level": expected_level(hom_logits), "hom_argmax_correct": (probs.argmax(1) == levels).sum()})
    return h, L


@torch.no_grad()
def tfm_files(out: Path, sequences, rng):
    torch.manual_seed(SEED)
    m = PlusTFM(hidden_dim=TFM["hidden_dim"], num_layers=TFM["num_layers"], num_heads=TFM["num_heads"],
                ff_dim=TFM["feedforward_dim"], max_len=TFM["max_len"], dropout=TFM["dropout"],
                n_classes=TFM_CLASSES).eval()
    g = torch.Generator().manual_seed(SEED)
    for name, p in m.named_parameters():  # LayerNorm and decoder bias away from their trivial initial values
        if name.endswith("gamma"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        elif name.endswith("beta") or name == "decoder_bias":
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    torch.save(m.state_dict(), out / "plus_tfm_state_dict.pt")
    width = TFM["max_len"]
    save_json(out / "plus_tfm_config.json", {"model_config_json": {"model_type": "TFM", **TFM}, "vocab_size": 25,
                                             "num_classes": TFM_CLASSES, "padded_length": width,
                                             "param_shapes": {k: list(v.shape) for k, v in m.state_dict().items()}})
    seqs = [encode(s) for s in sequences]
    arrays = {}
    for kind, index in (("single", list(range(len(seqs)))), ("pair", [[0, 1], [2, 0], [3, 4]])):
        inputs = [tfm_single_input(seqs[i], width) if kind == "single" else tfm_pair_input(seqs[i], seqs[j], width)
                  for i, j in ((k, None) if kind == "single" else k for k in index)]
        t, s, mk = (torch.as_tensor(np.stack(x)) for x in zip(*inputs))
        mk = mk.bool()
        h = m(t, s, mk)
        pos = torch.as_tensor(np.stack([np.sort(rng.choice(np.flatnonzero(r.numpy()), 5, replace=False)) for r in mk]))
        arrays.update({f"{kind}_seq_index": np.asarray(index), f"{kind}_tokens": t, f"{kind}_segments": s,
                       f"{kind}_input_mask": mk, f"{kind}_h": h, f"{kind}_masked_pos": pos,
                       f"{kind}_lm_logprobs": m.mlm_logprobs(h, pos), f"{kind}_cls_logits": m.cls_logits(h)})
        if kind == "single":
            arrays["single_token_cls_logits"] = m.token_logits(h)
    save_npz(out / "plus_tfm_vectors.npz", arrays)


@torch.no_grad()
def mlp_files(out: Path, h, L):
    xs = [h[k, :int(n)] for k, n in enumerate(L)]
    x = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)
    mask = torch.arange(x.shape[1])[None] < L[:, None]
    torch.manual_seed(SEED)
    protein = MLPHead(h.shape[-1], 10, 2, pooling="reference_sum")
    torch.manual_seed(SEED + 1)
    residue = MLPHead(h.shape[-1], 10, 3, pooling=None)
    attention = MLPHead(h.shape[-1], 10, 2, pooling="attention")
    attention.load_state_dict(protein.state_dict())
    torch.save(protein.state_dict(), out / "mlp_protein_state_dict.pt")
    torch.save(residue.state_dict(), out / "mlp_residue_state_dict.pt")
    res = residue(x, mask)
    save_npz(out / "mlp_vectors.npz", {
        **{f"input_{k}": v for k, v in enumerate(xs)}, "pooled_ref": protein.pool(x, mask),
        "protein_logits_ref": protein(x, mask), "protein_logits_softmax_over_residues": attention(x, mask),
        **{f"residue_logits_{k}": res[k, :int(n)] for k, n in enumerate(L)}})


def tm_files(out: Path, keep=(0, 2, 3, 5, 7), cases=(0, 3, 5, 9, 2)):
    src = np.load(SRC / "transmembrane_vectors.npz")
    ref = json.loads((SRC / "transmembrane_metrics.json").read_text())
    logits = [src[f"logits_{k}"] for k in keep]
    labels = [src[f"true_{k}"] for k in keep]
    arrays = {k: src[k] for k in src.files if k.startswith("grammar_")}
    per_protein, scores = [], []
    for new, (lg, lab) in enumerate(zip(logits, labels)):
        path, score = M.viterbi_decode(M.log_softmax(lg))
        arrays.update({f"logits_{new}": lg, f"true_{new}": lab, f"decoded_{new}": path})
        scores.append(score)
        argmax = lg.argmax(1)
        true_r, pred_r = M.tm_regions(lab), M.tm_regions(path)
        per_protein.append({"length": len(lab), "argmax_correct_residues": int((argmax == lab).sum()),
                            "decoded_equals_argmax": bool(np.array_equal(path, argmax)),
                            "protein_correct": int(M.tm_protein_correct(pred_r, true_r)),
                            "true_regions_ref": [list(r) for r in true_r],
                            "decoded_regions_ref": [list(r) for r in pred_r]})
    arrays["viterbi_scores"] = np.asarray(scores)
    save_npz(out / "transmembrane_vectors.npz", arrays)
    metrics = M.transmembrane_metrics(logits, labels)
    save_json(out / "transmembrane_metrics.json", {
        **{k: metrics[k] for k in ("n_residues", "correct_residues", "acc", "acc_p", "avg_loss_ce")},
        "per_protein": per_protein, "region_cases": [ref["region_cases"][c] for c in cases]})


def homology_files(out: Path, rng, n=150):
    src = np.load(SRC / "homology_eval_vectors.npz")
    keep = np.sort(rng.choice(len(src["true_levels"]), n, replace=False))
    logits, levels = src["ordinal_logits"][keep], src["true_levels"][keep]
    scores = M.expected_level(logits)
    cutoffs = M.fit_level_cutoffs(scores, levels)
    save_npz(out / "homology_eval_vectors.npz", {
        "ordinal_logits": logits, "true_levels": levels, "level_probs": M.level_probs_from_logits(logits),
        "expected_level": scores, "thresholds": cutoffs, "pred_levels": M.predict_levels(scores, cutoffs)})
    m = M.homology_metrics(logits, levels)
    save_json(out / "homology_eval_metrics.json", {
        "N": m["n"], "correct": m["correct"], "argmax_correct": m["argmax_correct"],
        **{k: m[k] for k in ("acc", "bce_loss", "r", "rho", "aupr_cl", "aupr_fo", "aupr_sf", "aupr_fa")},
        "thresholds_1_to_4": list(cutoffs[1:]), "threshold_0": "-inf"})


def secstr_files(out: Path, keep=(1, 3, 0)):
    src = np.load(SRC / "secstr_eval_vectors.npz")
    logits, labels = [src[f"logits_{k}"] for k in keep], [src[f"labels_{k}"] for k in keep]
    save_npz(out / "secstr_eval_vectors.npz", {**{f"logits_{i}": v for i, v in enumerate(logits)},
                                               **{f"labels_{i}": v for i, v in enumerate(labels)}})
    m = M.secstr_metrics(logits, labels)
    save_json(out / "secstr_eval_metrics.json", {k: m[k] for k in ("n", "acc8", "acc3", "correct8", "correct3")})


def pretrain_step_files(out: Path, sfp_state: dict, sequences, rng):
    kw = {"hidden_dim": RNN["hidden_dim"], "num_layers": RNN["num_layers"], "proj_dim": RNN["embedding_dim"]}
    a_index, b_index = [0, 1, 2, 3, 4], [1, 1, 4, 0, 2]
    same = rng.integers(0, 2, len(a_index)).astype(bool)
    arrays = {}
    for side, index in ((0, a_index), (1, b_index)):
        masked, pos, orig = zip(*(mask_tokens(encode(sequences[i]), rng, RUN["mask_ratio"], RUN["max_pred"])
                                  for i in index))
        tokens, lengths = collate_rnn([np.asarray(s) for s in masked])
        # the reference pads the targets to max_pred
        pad = pad_targets([np.pad(p, (0, RUN["max_pred"] - len(p))) for p in pos], list(orig))
        pad["masked_weights"] = torch.as_tensor([[k < len(p) for k in range(RUN["max_pred"])] for p in pos])
        arrays.update({f"tokens{side}": tokens, f"lengths{side}": lengths, f"masked_pos{side}": pad["masked_pos"],
                       f"masked_tokens{side}": pad["masked_tokens"], f"masked_weights{side}": pad["masked_weights"]})
    width = max(arrays["tokens0"].shape[1], arrays["tokens1"].shape[1])
    for side in (0, 1):
        arrays[f"tokens{side}"] = F.pad(arrays[f"tokens{side}"], (0, width - arrays[f"tokens{side}"].shape[1]))
    arrays["labels"] = torch.as_tensor(same[:, None])
    hp = pretrain_hp("rnn", lambda_mlm=RUN["lm_loss_lambda"], lambda_sfp=RUN["cls_loss_lambda"],
                     mask_ratio=RUN["mask_ratio"], max_pred=RUN["max_pred"], lr=RUN["learning_rate"], optimizer="adam",
                     clip_grad_norm=1.0)
    batch = {k: torch.cat([arrays[f"{k}0"], arrays[f"{k}1"]])
             for k in ("tokens", "lengths", "masked_pos", "masked_tokens", "masked_weights")}
    batch.update(labels=torch.as_tensor(same.astype(np.float32)), n_pairs=len(same))
    model = PlusRNN(**kw, n_thresholds=1)
    model.load_state_dict(sfp_state)
    fixed = forward_losses(model, batch, "rnn", hp, {"b1_drop_second_mlm_loss": False}, "cpu", True)
    out_ref = forward_losses(model, batch, "rnn", hp, {"b1_drop_second_mlm_loss": True}, "cpu", True)
    with torch.no_grad():
        h0, h1 = model(arrays["tokens0"], arrays["lengths0"]), model(arrays["tokens1"], arrays["lengths1"])
        arrays["sfp_logits"] = model.ordinal_logits(model.ssa_score(model.project(h0), arrays["lengths0"] - 2,
                                                                    model.project(h1), arrays["lengths1"] - 2))
        correct = [int(((model.mlm_logprobs(hs, arrays[f"masked_pos{k}"]).argmax(-1) == arrays[f"masked_tokens{k}"])
                        & arrays[f"masked_weights{k}"]).sum()) for k, hs in enumerate((h0, h1))]
    out_ref["loss"].backward()
    arrays.update({f"grad__{n}": p.grad for n, p in model.named_parameters()})
    n_a = int(arrays["masked_weights0"].sum())
    opt = torch.optim.Adam(model.parameters(), lr=RUN["learning_rate"])
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    torch.save(model.state_dict(), out / "pretrain_step_state_dict_after.pt")
    save_npz(out / "pretrain_step_inputs.npz", arrays)
    save_json(out / "pretrain_step.json", {
        "model_config_json": {"model_type": "RNN", "rnn_type": "B", **RNN},
        "model_init": f"torch.manual_seed({SEED}) then construct (identical to plus_rnn_sfp_state_dict.pt)",
        "run_config": RUN, "pairs_A_seq_index": a_index, "pairs_B_seq_index": b_index,
        "is_samefamily": same.tolist(), "mlm_loss_A_unscaled": out_ref["mlm_loss_a"].item(),
        "mlm_loss_B_unscaled": out_ref["mlm_loss_b"].item(), "sfp_bce_unscaled": out_ref["sfp_loss"].item(),
        "mlm_correct_A": correct[0], "mlm_correct_B": correct[1], "mlm_n_A": n_a,
        "mlm_n_B": int(arrays["masked_weights1"].sum()),
        "sfp_correct_ref_threshold_logit_gt_0.5": out_ref["sfp_correct"], "ref_total_loss": out_ref["loss"].item(),
        "fixed_total_mean_AB": fixed["loss"].item()})


def write_variant(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    recorded = json.loads((SRC / "plus_rnn_config.json").read_text())["sequences"]
    sequences = list(reversed(recorded[1:]))  # 5 of the recorded real sequences, in another order
    shutil.copy(SRC / "tokenization.json", out / "tokenization.json")  # independent of model sizes
    sfp, hom = rnn_models(out, sequences)
    h, L = rnn_vectors(out, sfp, hom, sequences, rng)
    tfm_files(out, sequences, rng)
    mlp_files(out, h, L)
    tm_files(out)
    homology_files(out, rng)
    secstr_files(out)
    pretrain_step_files(out, sfp.state_dict(), sequences, rng)
    return out


if __name__ == "__main__":
    write_variant(Path(sys.argv[1]))
