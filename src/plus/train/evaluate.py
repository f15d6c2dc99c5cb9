"""`plus evaluate`: every test set of a task, with dev-fitted cut-offs where the task has them, bootstrap 95 %
CIs, predictions.npz, and metrics.json stating the fingerprint of the run that trained the model (its run.json,
checked against the model and this evaluation's settings first)."""

from __future__ import annotations

import numpy as np

from plus.data.contacts import ContactMaps
from plus.data.tasks import load_manifest, read_split
from plus.io import InputError, atomic_path, read_json, write_json
from plus.provenance import collect_provenance
from plus.tasks.registry import Task, get_task
from plus.train.common import Runtime, load_checkpoint
from plus.train.finetune_batches import subsample_dev, targets_of
from plus.train.finetune_model import build_model
from plus.train.hparams import FinetuneHP, finetune_settings
from plus.train.inference import predict
from plus.train.masking import loss_active
from plus.train.state import file_digest, fingerprint, run_definition


def check_run_record(path, model_path, task_name, data_dir, manifest, seed, hparams) -> dict:
    """The fine-tuning record `run.json` of `model_path`, checked: it names this very model file (sha256) and
    the settings and task data this evaluation uses; what metrics.json then states about the run is true."""
    run = read_json(path)
    if not isinstance(run, dict) or not {"run_fingerprint", "run_definition", "model_sha256"} <= run.keys():
        raise InputError(f"{path}: not a fine-tuning run record (run.json)")
    if run["model_sha256"] != file_digest(model_path):
        raise InputError(f"{path}: records another model than {model_path} (sha256 differs): rerun the fine-tuning")
    definition = run["run_definition"]
    if fingerprint(definition) != run["run_fingerprint"]:
        raise InputError(f"{path}: the fingerprint does not match the recorded run definition")
    ours = run_definition(f"finetune {task_name}", seed, hparams, {})
    for key in ("job", "seed", "hparams"):
        if definition.get(key) != ours[key]:
            raise InputError(f"{path}: {model_path} was trained with other settings than this evaluation's "
                             f"({key} differs): rerun the fine-tuning")
    if definition["inputs"]["data"]["manifest"] != file_digest(f"{data_dir}/manifest.json"):
        raise InputError(f"{path}: {model_path} was trained on other task data than {data_dir}")
    return run


def evaluate(task_name, data_dir, model_path, seed, hparams, out_metrics, out_predictions,
             model_name="", ablation="", n_boot=500, run_record=None) -> dict:
    """Every test set of a task; with `run_record` (the fine-tuning's run.json), metrics.json records the
    fingerprint of the run that trained the model (checked against the model and this evaluation first)."""
    settings = finetune_settings(hparams)
    manifest = load_manifest(data_dir)
    task = get_task(task_name).for_data(manifest)
    run = check_run_record(run_record, model_path, task_name, data_dir, manifest, seed, hparams) \
        if run_record else None
    rt = Runtime(settings.allow_cpu, settings.threads)
    hp, fidelity = settings.train, settings.fidelity
    state = load_checkpoint(model_path)
    contact = any(k.startswith("contact.") for k in state)
    model = build_model(task, settings, contact=contact).to(rt.device)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"{model_path}: not a fine-tuned {task_name} model of this architecture ({exc})") from exc
    dev_recs = subsample_dev(read_split(data_dir, manifest["splits"]["dev"], manifest), hp, seed)  # as in finetune
    contacts = (ContactMaps(data_dir, manifest) or None) if contact else None
    dev_out, dev_loss = predict(model, dev_recs, hp, rt.device, with_loss=True, seed=seed, contacts=contacts)
    dev_metrics = task.metrics(dev_out, targets_of(task, dev_recs), fidelity)
    cutoffs = task.cutoffs_from_dev(dev_metrics, fidelity)
    results, arrays = {}, {}
    for name, fname in manifest["splits"]["test"].items():
        recs = read_split(data_dir, fname, manifest)
        out, _ = predict(model, recs, hp, rt.device, seed=seed)
        tgt = targets_of(task, recs)
        res = task.metrics(out, tgt, fidelity, cutoffs=cutoffs)
        res = {**task.report(res), "n": len(recs)}
        if cutoffs is not None:  # fixed (dev-fitted) cut-offs: what reproduces acc from predictions.npz
            res["cutoffs"] = cutoffs.tolist()
        res["ci95"] = task.bootstrap(out, tgt, res, fidelity, seed, n_boot, cutoffs)
        results[name] = res
        _store_predictions(arrays, name, task, recs, out, tgt)
    metrics = {"task": task_name, "model": model_name, "ablation": ablation, "seed": seed,
               "test_sets": results, "dev": task.report(dev_metrics),
               "dev_loss": dev_loss, "precision": hp.precision,
               "run_fingerprint": run["run_fingerprint"] if run else None,
               "run_definition": run["run_definition"] if run else None,
               "model_sha256": run["model_sha256"] if run else file_digest(model_path),
               "provenance": collect_provenance(seed=seed, hparams=hparams)}
    if model.family == "pelmo":
        metrics["pelmo"] = pelmo_notes(task, contact, hp)
    with atomic_path(out_predictions) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    write_json(out_metrics, metrics)
    rt.close()
    return metrics


def pelmo_notes(task: Task, contact: bool, hp: FinetuneHP) -> dict:
    """How a P-ELMo run was trained (what metrics.json states next to its numbers)."""
    if task.kind != "pair":
        return {"lm": "frozen", "encoder": "frozen, from the P-ELMo homology fine-tuning of the same run",
                "trained": "MLP head only"}
    note = {"lm": "frozen", "encoder": "trained on homology", "contact_map_loss": contact}
    if not contact:
        why = ("no contact maps in the converted homology data" if loss_active(hp.lambda_contact)
               else "lambda_contact is -1")
        note["note"] = (f"{why}: the encoder was trained on {hp.lambda_task} x the ordinal loss only "
                        "(the reference adds 0.9 x the contact-map loss)")
    return note


def _store_predictions(arrays, name, task, recs, out, tgt):
    arrays[f"{name}__ids"] = np.array([r[0] if task.kind != "pair" else f"{r[0]}|{r[1]}" for r in recs])
    if task.kind == "residue":
        arrays[f"{name}__lengths"] = np.array([len(t) for t in tgt])
        arrays[f"{name}__outputs"] = np.concatenate(out) if out else np.zeros((0, task.n_out))
        arrays[f"{name}__targets"] = np.concatenate(tgt) if tgt else np.zeros(0)
    else:
        arrays[f"{name}__outputs"], arrays[f"{name}__targets"] = out, tgt
