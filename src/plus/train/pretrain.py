"""`plus pretrain`: masked LM + same-family prediction on the Pfam shards (spec §2.2-2.4); for the P-ELMo
family, the bidirectional language model (1.0 x LM NLL on single sequences, evaluated on held-out FASTA).

Resumable: the state (model, optimiser, scheduler, step, sampler position, best model, curve, RNGs) is
saved atomically under --state-dir every few minutes and on SIGTERM/SIGUSR1 (then the job exits non-zero);
a restarted job of the same run definition (fingerprint) continues from it and produces the same final model
as an uninterrupted run. Declared outputs are written once, at the end (metrics.json records the fingerprint).
Multi-GPU: launched by torchrun, each rank takes every world-th batch; rank 0 writes.
Mixed precision (`precision: bf16`): forward passes and losses under bfloat16 autocast; weights and optimiser
stay float32 and bf16 needs no gradient scaler, so the state has no AMP scaler.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from plus.io import write_json
from plus.train import state
from plus.train.common import (
    Runtime,
    autocast,
    build_encoder,
    build_lm,
    build_optimizer,
    eval_batches,
    save_model,
    seed_everything,
    unwrap,
    write_curve,
)
from plus.train.hparams import PretrainHP, pretrain_settings
from plus.train.masking import FamilyIndex, loss_active
from plus.train.pretrain_batches import PairBatches, SequenceBatches, lm_batch, make_batch


# ------------------------------------------------------------------ losses
def mlm_nll(logprobs, targets, weights):
    """Per-slot NLL (masked) and correctness, flattened over the selected rows."""
    nll = -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    correct = (logprobs.argmax(-1) == targets) & weights
    return nll, correct


def lm_nll(logprobs, tokens):
    """P-ELMo LM: summed NLL, correct predictions and count over the residues (start/stop/padding 0 and X 21
    are no targets, as the reference's `evaluate_lm_pelmo`)."""
    from plus.alphabet import UNKNOWN

    target = (tokens != 0) & (tokens != UNKNOWN)
    nll = -logprobs.gather(-1, (tokens * target).unsqueeze(-1)).squeeze(-1)
    correct = (logprobs.argmax(-1) == tokens) & target
    return (nll * target).sum(), int(correct.sum()), int(target.sum())


def forward_losses(model, batch, family, hp: PretrainHP, fidelity, device, train: bool, want_mlm=True, want_sfp=True):
    """Losses (float32) and counts for one pair batch, or one sequence batch for the P-ELMo LM (reference
    behaviour unless fidelity switches are off), under the autocast of hp.precision."""
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    with autocast(device, hp.precision):
        return _forward_losses(model, batch, family, hp, fidelity, want_mlm, want_sfp)


def _forward_losses(model, batch, family, hp, fidelity, want_mlm, want_sfp):
    if family == "pelmo":
        nll, correct, n = lm_nll(model(batch["tokens"], batch["lengths"]), batch["tokens"])
        lm_loss = nll / max(n, 1)
        return {"lm_loss": lm_loss, "lm_correct": correct, "lm_n": n, "loss": hp.lambda_mlm * lm_loss}
    n = batch["n_pairs"]
    out = {}
    net = unwrap(model)
    if family == "rnn":
        h = model(batch["tokens"], batch["lengths"])
        res_len = batch["lengths"] - 2
        if want_mlm:
            logp = net.mlm_logprobs(h, batch["masked_pos"])
            nll, correct = mlm_nll(logp, batch["masked_tokens"], batch["masked_weights"])
            w = batch["masked_weights"].float()
            la = (nll[:n] * w[:n]).sum() / w[:n].sum().clamp(min=1)
            lb = (nll[n:] * w[n:]).sum() / w[n:].sum().clamp(min=1)
            out.update(mlm_loss_a=la, mlm_loss_b=lb, mlm_loss=(la + lb) / 2,
                       mlm_correct=int(correct.sum()), mlm_n=int(w.sum()))
        if want_sfp:
            z = net.project(h)
            score = net.ssa_score(z[:n], res_len[:n], z[n:], res_len[n:])
            logits = net.ordinal_logits(score)[:, 0]
            out["sfp_loss"] = F.binary_cross_entropy_with_logits(logits, batch["labels"])
            threshold = 0.5 if fidelity.get("b5_sfp_threshold_half", True) else 0.0
            out["sfp_correct"] = int(((logits > threshold).float() == batch["labels"]).sum())
            out["sfp_n"] = n
    else:
        h = model(batch["tokens"], batch["segments"], batch["input_mask"])
        if want_mlm:
            logp = net.mlm_logprobs(h, batch["masked_pos"])
            nll, correct = mlm_nll(logp, batch["masked_tokens"], batch["masked_weights"])
            w = batch["masked_weights"].float()
            out.update(mlm_loss=(nll * w).sum() / w.sum().clamp(min=1), mlm_correct=int(correct.sum()),
                       mlm_n=int(w.sum()))
        if want_sfp:
            logits = net.cls_logits(h).float()
            labels = batch["labels"].long()
            out["sfp_loss"] = F.cross_entropy(logits, labels)
            out["sfp_correct"] = int((logits.argmax(-1) == labels).sum())
            out["sfp_n"] = n
    lam_mlm, lam_sfp = hp.lambda_mlm, hp.lambda_sfp
    total = 0.0
    if loss_active(lam_mlm) and "mlm_loss" in out:
        if family == "rnn" and fidelity.get("b1_drop_second_mlm_loss", True):
            total = total + (lam_mlm + lam_mlm**2) * out["mlm_loss_a"]  # B1: L_B replaced by 0.7 x L_A
        else:
            total = total + lam_mlm * out["mlm_loss"]
    if loss_active(lam_sfp) and "sfp_loss" in out:
        total = total + lam_sfp * out["sfp_loss"]
    out["loss"] = total
    return out


# ------------------------------------------------------------------ evaluation
def read_heldout_tokens(path, limit=None, seed=0):
    """Encoded sequences of a held-out FASTA written by `plus pfam preprocess` (val.fa / test.fa, the
    reference's Pfam_test.fa); `limit`: a seeded random subset of that many (records are in family order)."""
    from plus.alphabet import encode
    from plus.io import read_fasta

    seqs = [encode(seq) for _, _, seq in read_fasta(path)]
    if limit and limit < len(seqs):
        keep = np.sort(np.random.default_rng([seed, 4099]).choice(len(seqs), limit, replace=False))
        seqs = [seqs[i] for i in keep]
    return seqs


@torch.no_grad()
def evaluate_lm(model, seqs, hp: PretrainHP, device, stop: state.Preemption | None = None):
    """P-ELMo LM loss and accuracy over every residue of held-out sequences (batches of similar lengths);
    with `stop`, Interrupted between batches once a stop signal arrived."""
    model.eval()
    size = [len(s) for s in seqs]
    nll, correct, n = 0.0, 0, 0
    for idx in eval_batches(size, hp.eval_batch_size):
        if stop is not None:
            stop.check()
        r = forward_losses(model, lm_batch([seqs[j] for j in idx]), "pelmo", hp, {}, device, False)
        nll += float(r["lm_loss"]) * r["lm_n"]
        correct += r["lm_correct"]
        n += r["lm_n"]
    model.train()
    lm_loss = nll / n if n else float("nan")
    return {"lm_acc": correct / n if n else float("nan"), "lm_loss": lm_loss,
            "loss": hp.lambda_mlm * lm_loss, "n_sequences": len(seqs), "n_residues": n}


def read_pair_tokens(path, limit=None):
    from plus.alphabet import encode
    from plus.data.pfam_corpus import read_pairs

    pairs = read_pairs(path)
    if limit:
        pairs = pairs[:limit]
    return [encode(a) for a, _, _ in pairs], [encode(b) for _, b, _ in pairs], [lab for *_, lab in pairs]


@torch.no_grad()
def evaluate_pairs(model, pairs, family, hp: PretrainHP, fidelity, device, max_len, seed=0,
                   stop: state.Preemption | None = None):
    """SFP on unmasked inputs, MLM on masked inputs (fixed masking seed), as the reference evaluates; with
    `stop`, Interrupted between batches once a stop signal arrived."""
    model.eval()
    seqs_a, seqs_b, labels = pairs
    bs = hp.eval_batch_size
    lam_mlm, lam_sfp = hp.lambda_mlm, hp.lambda_sfp
    tot = {"mlm_loss": 0.0, "sfp_loss": 0.0, "mlm_correct": 0, "mlm_n": 0, "sfp_correct": 0, "sfp_n": 0}
    rng = np.random.default_rng([seed, 7919])
    size = [max(len(a), len(b)) for a, b in zip(seqs_a, seqs_b, strict=True)]
    for idx in eval_batches(size, bs):
        if stop is not None:
            stop.check()
        a, b, lab = [seqs_a[i] for i in idx], [seqs_b[i] for i in idx], [labels[i] for i in idx]
        clean = make_batch(family, a, b, lab, rng, hp, max_len, mask=False)
        r = forward_losses(model, clean, family, hp, fidelity, device, False, want_mlm=False)
        tot["sfp_loss"] += float(r["sfp_loss"]) * r["sfp_n"]
        tot["sfp_correct"] += r["sfp_correct"]
        tot["sfp_n"] += r["sfp_n"]
        if hp.max_pred > 0:
            masked = make_batch(family, a, b, lab, rng, hp, max_len, mask=True)
            r = forward_losses(model, masked, family, hp, fidelity, device, False, want_sfp=False)
            tot["mlm_loss"] += float(r["mlm_loss"]) * r["mlm_n"]
            tot["mlm_correct"] += r["mlm_correct"]
            tot["mlm_n"] += r["mlm_n"]
    model.train()
    res = {
        "mlm_acc": tot["mlm_correct"] / tot["mlm_n"] if tot["mlm_n"] else float("nan"),
        "mlm_loss": tot["mlm_loss"] / tot["mlm_n"] if tot["mlm_n"] else float("nan"),
        "sfp_acc": tot["sfp_correct"] / tot["sfp_n"],
        "sfp_loss": tot["sfp_loss"] / tot["sfp_n"],
        "n_pairs": tot["sfp_n"], "n_masked": tot["mlm_n"],
    }
    loss = 0.0
    if loss_active(lam_mlm) and tot["mlm_n"]:
        loss += lam_mlm * res["mlm_loss"]
    if loss_active(lam_sfp):
        loss += lam_sfp * res["sfp_loss"]
    res["loss"] = loss
    return res


# ------------------------------------------------------------------ main loop
def pretrain(corpus_dir, seed: int, hparams: dict, state_dir, out_model, out_metrics, out_curve,
             model_name: str = "", ablation: str = "", progress: bool = True) -> dict:
    stop = state.Preemption()  # from the start: a signal during set-up stops the run at its first step
    try:
        return _pretrain(corpus_dir, seed, hparams, state_dir, out_model, out_metrics, out_curve, model_name,
                         ablation, progress, stop)
    finally:
        stop.close()


def _pretrain(corpus_dir, seed, hparams, state_dir, out_model, out_metrics, out_curve, model_name, ablation,
              progress, stop: state.Preemption) -> dict:
    from plus.data.pfam_corpus import PfamCorpus

    settings = pretrain_settings(hparams)
    rt = Runtime(settings.allow_cpu, settings.threads)
    stop.rt = rt
    hp, fidelity, model_cfg = settings.train, settings.fidelity, settings.model
    family = model_cfg["family"]
    max_len = model_cfg.get("max_len") if family == "tfm" else None
    seed_everything(seed)

    corpus = PfamCorpus(corpus_dir)
    n_train = len(corpus)
    if hp.max_train_seqs:
        n_train = min(n_train, hp.max_train_seqs)
    index = FamilyIndex(np.asarray(corpus.family[:n_train]))
    on_test = fidelity.get("b16_select_on_test", True)
    if family == "pelmo":  # the LM is evaluated on held-out sequences (the reference: Pfam_test.fa)
        if loss_active(hp.lambda_sfp):
            raise SystemExit("error: pretrain.pelmo.lambda_sfp must be -1: P-ELMo's language model has no SFP head")
        select_file = "test.fa" if on_test else "val.fa"
        test_set = read_heldout_tokens(f"{corpus_dir}/test.fa", hp.max_eval_seqs, seed)
        val_set = test_set if on_test else read_heldout_tokens(f"{corpus_dir}/val.fa", hp.max_eval_seqs, seed)

        def evaluate(data, stop=None):
            return evaluate_lm(model, data, hp, rt.device, stop)
    else:
        select_file = "test_pairs.tsv" if on_test else "val_pairs.tsv"
        val_set = read_pair_tokens(f"{corpus_dir}/{select_file}", hp.max_eval_pairs)
        test_set = read_pair_tokens(f"{corpus_dir}/test_pairs.tsv", hp.max_eval_pairs)

        def evaluate(data, stop=None):
            return evaluate_pairs(model, data, family, hp, fidelity, rt.device, max_len, seed, stop)

    model = (build_lm(model_cfg) if family == "pelmo" else build_encoder(model_cfg, fidelity)).to(rt.device)
    batches_per_epoch = math.ceil(n_train / hp.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / rt.world)
    total_steps = steps_per_epoch * hp.epochs
    if hp.max_steps:
        total_steps = min(total_steps, hp.max_steps)
    opt, sched, clip_global = build_optimizer(model, hp, total_steps, fidelity)
    want_mlm, want_sfp = loss_active(hp.lambda_mlm), loss_active(hp.lambda_sfp)
    if rt.world > 1:
        model = DDP(model, find_unused_parameters=family == "tfm" or (family == "rnn" and not (want_mlm and want_sfp)))

    definition = state.run_definition("pretrain", seed, hparams,
                                      {"corpus": state.file_digest(f"{corpus_dir}/stats.json")}, rt.world)
    state_file = state.StateFile(state_dir, settings.save_every_minutes, settings.save_every_steps,
                                 definition, rt)
    heads = ("lm",) if family == "pelmo" else ("mlm", "sfp")  # the curve's loss/accuracy columns
    step, curve, best = 0, [], {"loss": math.inf, "step": 0, "state": None, "val": None}
    running = {k: [] for k in ("loss", *heads)}  # training losses/accuracies since the last curve row
    eval_pending = False  # the state was saved on a signal that interrupted the evaluation at its step

    def check(saved):
        state.require(isinstance(saved, dict) and {"model", "optimizer", "scheduler", "step", "curve", "best",
                                                   "running", "eval_pending"} <= saved.keys(), "missing keys")
        net_state = unwrap(model).state_dict()
        state.check_tensors(saved["model"], net_state, "model")
        state.check_optimizer(saved["optimizer"], opt)
        state.require((saved["scheduler"] is None) == (sched is None), "scheduler")
        state.require(isinstance(saved["step"], int) and 0 <= saved["step"] <= total_steps, f"step {saved['step']!r}")
        state.require(isinstance(saved["curve"], list) and isinstance(saved["best"], dict)
                      and {"loss", "step", "state", "val"} <= saved["best"].keys(), "curve or best model")
        state.require(isinstance(saved["running"], dict) and saved["running"].keys() == running.keys(), "running means")
        if saved["best"]["state"] is not None:
            state.check_tensors(saved["best"]["state"], net_state, "best model")

    saved = state_file.load(check)
    if saved is not None:
        unwrap(model).load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if sched is not None:
            sched.load_state_dict(saved["scheduler"])
        step, curve, best, eval_pending = saved["step"], saved["curve"], saved["best"], saved["eval_pending"]
        running = saved["running"]
        print(f"resumed from {state_file.loaded_from} at step {step}", file=sys.stderr, flush=True)

    def snapshot(pending=False):
        return {"model": unwrap(model).state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None,
                "step": step, "curve": curve, "best": best, "running": running, "eval_pending": pending}

    saved_at = step if saved is not None else None

    def stop_now(pending=False):
        if rt.is_main and (pending or saved_at != step):
            state_file.save(snapshot(pending), f"step {step}")
        rt.barrier()
        bar.close()
        rt.close()
        stop.exit(f"step {step}", state_file.path)

    def run_eval(interruptible=True):
        val = evaluate(val_set, stop if interruptible else None)
        curve.append({"step": step, "split": "val", "loss": val["loss"],
                      **{f"{k}_loss": val[f"{k}_loss"] for k in heads}, **{f"{k}_acc": val[f"{k}_acc"] for k in heads},
                      "lr": opt.param_groups[0]["lr"], "elapsed_s": time.monotonic() - t0})
        if val["loss"] < best["loss"]:
            best.update(loss=val["loss"], step=step, val=val,
                        state={k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()})
        print(f"step {step}: val loss {val['loss']:.4f} " + " ".join(f"{k}_acc {val[f'{k}_acc']:.4f}" for k in heads),
              file=sys.stderr, flush=True)

    t0 = time.monotonic()
    model.train()
    bar = _progress(total_steps, step, progress and rt.is_main)
    stop.progress = f"step {step}"
    if eval_pending:
        try:
            run_eval()
        except state.Interrupted:
            stop_now(pending=True)
        model.train()
    while step < total_steps:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        anchors = np.random.default_rng([seed, epoch]).permutation(n_train)
        data = SequenceBatches(corpus, hp.batch_size, anchors) if family == "pelmo" else \
            PairBatches(corpus, index, family, hp, fidelity, seed, epoch, anchors, max_len)
        # every rank takes the same number of batches (wrapping around), or DDP's all-reduce would hang
        order = [(k * rt.world + rt.rank) % batches_per_epoch for k in range(in_epoch, steps_per_epoch)]
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, order), batch_size=None,
                                             num_workers=hp.num_workers)
        for batch in loader:
            torch.manual_seed(seed * 1_000_003 + step)  # dropout stream depends only on the step
            r = forward_losses(model, batch, family, hp, fidelity, rt.device, True, want_mlm, want_sfp)
            opt.zero_grad(set_to_none=True)
            r["loss"].backward()
            if clip_global:
                torch.nn.utils.clip_grad_norm_(model.parameters(), hp.clip_grad_norm)
            opt.step()
            if sched is not None:
                sched.step()
            if family == "rnn" and not fidelity.get("b3_unclamped_ordinal_weight", True):
                with torch.no_grad():
                    unwrap(model).ordinal_weight.clamp_(min=0)  # B3 fixed: in-place clamp
            step += 1
            stop.progress = f"step {step}"
            running["loss"].append(r["loss"].item())
            for k in heads:
                if f"{k}_loss" in r:
                    running[k].append(r[f"{k}_correct"] / max(r[f"{k}_n"], 1))
            bar.update(1)
            if step % max(1, hp.log_every) == 0 or step == total_steps:
                curve.append({"step": step, "split": "train", "loss": np.mean(running["loss"]),
                              **{f"{k}_acc": np.mean(running[k]) if running[k] else None for k in heads},
                              "lr": opt.param_groups[0]["lr"], "elapsed_s": time.monotonic() - t0})
                running = {k: [] for k in running}
            if step % hp.eval_every == 0 or step == total_steps:
                try:
                    run_eval()
                except state.Interrupted:
                    stop_now(pending=True)
                model.train()
            if rt.is_main and (state_file.due(step) or step == total_steps):
                state_file.save(snapshot(), f"step {step}")
                saved_at = step
            if stop.requested():
                stop_now()
            if step >= total_steps:
                break
    bar.close()

    in_sync = params_in_sync(unwrap(model), rt.world)
    result = {}
    if rt.is_main:
        if best["state"] is None:
            run_eval(interruptible=False)
        net = unwrap(model)
        net.load_state_dict(best["state"])
        test = evaluate(test_set)
        freq = residue_counts(corpus.token_array, int(corpus.offsets[n_train]))[1:21]
        freq_acc = float(freq.max() / freq.sum())  # always predicting the most frequent residue
        result = {
            "model": model_name, "ablation": ablation, "seed": seed, "family": family,
            "steps": step, "best_step": best["step"], "selected_on": select_file,
            "val": best["val"], "test": test,
            "baselines": {"lm_freq_acc": freq_acc} if family == "pelmo" else
            {"mlm_freq_acc": freq_acc, "sfp_chance": 0.5},
            "n_train_sequences": n_train, "n_families": int(index.n_families),
            "train_time_s": curve[-1]["elapsed_s"] if curve else 0.0,
            "world_size": rt.world, "ranks_in_sync": in_sync, "precision": hp.precision,
            "run_fingerprint": state_file.fingerprint, "run_definition": definition,
        }
        from plus.provenance import collect_provenance

        result["provenance"] = collect_provenance(seed=seed, hparams=hparams)
        save_model(out_model, best["state"])
        write_curve(out_curve, curve)
        write_json(out_metrics, result)
        state_file.finish(f"step {step}")
    rt.barrier()
    rt.close()
    return result


def residue_counts(tokens, end: int, chunk: int = 1 << 26) -> np.ndarray:
    """Counts of each token id (0..21) in tokens[:end], read in chunks: at paper scale the memory-mapped
    corpus holds billions of tokens, and one np.bincount over all of them materialised an int64 copy
    (8 bytes per token, 24 GiB for Pfam 27.0)."""
    counts = np.zeros(22, np.int64)
    for lo in range(0, end, chunk):
        counts += np.bincount(np.asarray(tokens[lo:min(end, lo + chunk)]), minlength=22)[:22]
    return counts


def params_in_sync(model, world: int) -> bool:
    """True when every rank holds bitwise the same parameters (always true for one process)."""
    if world == 1:
        return True
    import torch.distributed as dist

    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def _progress(total, initial, enabled):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, file=sys.stderr, mininterval=5,
                desc="pretrain")
