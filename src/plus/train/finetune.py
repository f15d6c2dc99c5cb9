"""`plus finetune`: every task through one loop, driven by the task registry.

Protocol (spec §3.0): full fine-tuning with the auxiliary MLM loss where lambda_mlm != -1 (one masked
forward pass feeds both losses), dev loss selects the model after each epoch, patience, resumable state.
P-ELMo (spec §1.5, §3.1): the pre-trained LM is always frozen; homology trains the encoder and ordinal head
(plus the contact-map head where the data has contact maps); every other task starts from the homology
model of the same run, with LM and encoder frozen: only the MLP head trains (B17: frozen explicitly).
Resumable state as in pre-training (plus.train.state.StateFile: fingerprinted, saved on SIGTERM/SIGUSR1 too). The run's
fingerprint goes to `run.json` beside model.pt, with the model's sha256; `plus evaluate` (plus.train.evaluate) checks
both and copies the fingerprint into metrics.json.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time

import numpy as np
import torch

from plus.data.contacts import ContactMaps
from plus.data.tasks import load_manifest, read_split
from plus.io import write_json
from plus.tasks.registry import Task, get_task
from plus.train import state
from plus.train.common import Runtime, autocast, save_model, seed_everything, write_curve
from plus.train.finetune_batches import bucket_order, chunk_records, make_batch, subsample_dev, targets_of, to_device
from plus.train.finetune_losses import combined_loss
from plus.train.finetune_model import build_model
from plus.train.homology_sampler import HomologySampler
from plus.train.hparams import FinetuneHP, finetune_settings
from plus.train.inference import predict
from plus.train.masking import loss_active


def homology_contacts(task: Task, family: str, data_dir, manifest, hp: FinetuneHP, domains) -> ContactMaps | None:
    """P-ELMo homology: the contact maps of the converted data when the contact loss is on (every domain id
    in `domains` must have one); None, with a log line, when the data has none."""
    if family != "pelmo" or task.kind != "pair" or not loss_active(hp.lambda_contact):
        return None
    contacts = ContactMaps(data_dir, manifest)
    if not contacts:
        print(f"{data_dir}: no contact maps in the converted homology data (manifest contact_maps: "
              f"{manifest.get('contact_maps')}): P-ELMo's contact-map loss is off, the encoder trains on "
              f"{hp.lambda_task} x the ordinal loss only", file=sys.stderr)
        return None
    contacts.check(domains)
    return contacts


def data_identity(data_dir, manifest: dict, contacts: ContactMaps | None = None) -> dict:
    """sha256 of what fine-tuning reads from a converted task directory: the manifest, the train and dev split
    files and, when used, the contact maps."""
    ident = {"manifest": state.file_digest(f"{data_dir}/manifest.json"),
             **{split: state.file_digest(f"{data_dir}/{manifest['splits'][split]}") for split in ("train", "dev")}}
    if contacts is not None:
        listing = "".join(f"{key}\0{state.file_digest(path)}\n" for key, path in sorted(contacts.paths.items()))
        ident["contact_maps"] = hashlib.sha256(listing.encode()).hexdigest()
    return ident


def finetune_definition(task_name, data_dir, manifest, seed, hparams, pretrained=None, contacts=None) -> dict:
    return state.run_definition(f"finetune {task_name}", seed, hparams,
                                {"data": data_identity(data_dir, manifest, contacts),
                                 "pretrained": state.file_digest(pretrained) if pretrained else None})


def finetune(task_name, data_dir, seed, hparams, state_dir, out_model, out_curve, pretrained=None,
             progress=True, out_run=None) -> None:
    stop = state.Preemption()  # from the start: a signal during set-up stops the run after its first batch
    try:
        _finetune(task_name, data_dir, seed, hparams, state_dir, out_model, out_curve, pretrained, out_run, stop)
    finally:
        stop.close()


def _finetune(task_name, data_dir, seed, hparams, state_dir, out_model, out_curve, pretrained, out_run,
              stop: state.Preemption) -> None:
    settings = finetune_settings(hparams)
    manifest = load_manifest(data_dir)
    task = get_task(task_name).for_data(manifest)
    rt = Runtime(settings.allow_cpu, settings.threads)
    stop.rt = rt
    hp, fidelity = settings.train, settings.fidelity
    seed_everything(seed)
    train_recs = read_split(data_dir, manifest["splits"]["train"], manifest)
    dev_recs = subsample_dev(read_split(data_dir, manifest["splits"]["dev"], manifest), hp, seed)
    domains = {r[0] for r in train_recs} | {r[k] for r in dev_recs for k in (0, 1)} if task.kind == "pair" else set()
    contacts = homology_contacts(task, settings.family, data_dir, manifest, hp, domains)
    model = build_model(task, settings, pretrained, contact=contacts is not None).to(rt.device)
    sampler = HomologySampler(train_recs, fidelity.get("b4_broken_homology_sampler", True)) \
        if task.kind == "pair" else None
    if task.kind != "pair":
        train_recs, _ = chunk_records(task, model.family, train_recs, model.max_len)
        train_size = [len(r[1]) for r in train_recs]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=hp.lr)  # B17: frozen stay out
    definition = finetune_definition(task_name, data_dir, manifest, seed, hparams, pretrained, contacts)
    state_file = state.StateFile(state_dir, settings.save_every_minutes, settings.save_every_steps,
                                 definition, rt)
    st = {"epoch": 0, "batch": 0, "best": math.inf, "best_epoch": -1, "bad": 0, "curve": [], "best_state": None,
          "train_loss": 0.0, "train_n": 0}

    def check(saved):
        state.require(isinstance(saved, dict) and {"model", "optimizer", "st"} <= saved.keys(), "missing keys")
        state.check_tensors(saved["model"], model.state_dict(), "model")
        state.check_optimizer(saved["optimizer"], opt)
        got = saved["st"]
        state.require(isinstance(got, dict) and got.keys() == st.keys(), "progress record: other keys")
        state.require(isinstance(got["epoch"], int) and 0 <= got["epoch"] <= hp.max_epochs
                      and isinstance(got["batch"], int) and got["batch"] >= 0 and isinstance(got["curve"], list),
                      f"progress record: epoch {got['epoch']!r} batch {got['batch']!r}")
        if got["best_state"] is not None:
            state.check_tensors(got["best_state"], model.state_dict(), "best model")

    saved = state_file.load(check)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        st = saved["st"]
        print(f"resumed from {state_file.loaded_from} at epoch {st['epoch']} batch {st['batch']}", file=sys.stderr,
              flush=True)
    saved_at = (st["epoch"], st["batch"]) if saved is not None else None

    def position():
        return f"epoch {st['epoch']} batch {st['batch']}"

    def save():
        nonlocal saved_at
        state_file.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "st": st}, position())
        saved_at = (st["epoch"], st["batch"])

    def stop_now():
        if saved_at != (st["epoch"], st["batch"]):
            save()
        rt.close()
        stop.exit(position(), state_file.path)

    t0 = time.monotonic() - (st["curve"][-1]["elapsed_s"] if st["curve"] else 0.0)
    patience, bs = hp.patience, hp.batch_size
    shuffle = task.shuffle
    stop.progress = position()
    while st["epoch"] < hp.max_epochs and (patience < 0 or st["bad"] < patience):
        ep = st["epoch"]
        rng_ep = np.random.default_rng([seed, ep])
        if sampler is not None:
            epoch_recs = sampler.sample(hp.epoch_pairs, rng_ep)
        else:
            perm = rng_ep.permutation(len(train_recs)) if shuffle else np.arange(len(train_recs))
            if shuffle and hp.bucket_batches:
                perm = bucket_order(perm, train_size, bs, hp.bucket_batches, rng_ep)
            epoch_recs = [train_recs[i] for i in perm]
        n_batches = math.ceil(len(epoch_recs) / bs)
        for b in range(st["batch"], n_batches):
            rng = np.random.default_rng([seed, ep, b])
            torch.manual_seed(seed * 1_000_003 + ep * 100_003 + b)
            batch = to_device(make_batch(task, model.family, epoch_recs[b * bs:(b + 1) * bs], rng, hp,
                                   model.max_len, mask=True, contacts=contacts), rt.device)
            with autocast(rt.device, hp.precision):
                out, h = model(batch)
                loss = combined_loss(model, out, h, batch, hp, fidelity)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if hp.clip_grad_norm:  # the reference clips the RNN encoder and the MLP head, each globally
                for part in (model.encoder, getattr(model, "head", None)):
                    if part is not None:
                        torch.nn.utils.clip_grad_norm_(part.parameters(), hp.clip_grad_norm)
            opt.step()
            if model.family != "tfm" and task.kind == "pair" and not fidelity.get("b3_unclamped_ordinal_weight", True):
                with torch.no_grad():
                    model.encoder.ordinal_weight.clamp_(min=0)
            if contacts is not None:
                model.contact.symmetrize_()
            st["train_loss"] += loss.item() * batch["n_pairs"]
            st["train_n"] += batch["n_pairs"]
            st["batch"] = b + 1
            stop.progress = position()
            if state_file.due(b + 1) and b + 1 < n_batches:
                save()
            if stop.requested():
                stop_now()
        try:  # a stop signal here saves the epoch's training; the retry starts with this dev evaluation
            dev_out, dev_loss = predict(model, dev_recs, hp, rt.device, with_loss=True, seed=seed, contacts=contacts,
                                        stop=stop)
        except state.Interrupted:
            stop_now()
        row = {"epoch": ep + 1, "train_loss": st["train_loss"] / max(st["train_n"], 1), "dev_loss": dev_loss}
        dev_metrics = task.metrics(dev_out, targets_of(task, dev_recs), fidelity)
        row.update({f"dev_{k}": v for k, v in dev_metrics.items() if isinstance(v, float)})
        row["elapsed_s"] = time.monotonic() - t0
        st["curve"].append(row)
        print(f"epoch {ep + 1}: " + " ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float)),
              file=sys.stderr, flush=True)
        if dev_loss < st["best"]:
            st.update(best=dev_loss, best_epoch=ep + 1, bad=0,
                      best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        else:
            st["bad"] += 1
        st.update(epoch=ep + 1, batch=0, train_loss=0.0, train_n=0)
        stop.progress = position()
        save()
        if stop.requested():
            stop_now()
    save_model(out_model, st["best_state"])
    write_curve(out_curve, st["curve"])
    if out_run is not None:
        write_json(out_run, {"run_fingerprint": state_file.fingerprint, "run_definition": definition,
                             "model_sha256": state.file_digest(out_model), "epochs": st["epoch"],
                             "best_epoch": st["best_epoch"]})
    state_file.finish(position())
    rt.close()
