"""Baselines a biologist would reach for: a trivial predictor per task (majority class, mean value,
most frequent residue state) and, for homology, phmmer bit scores of each pair (pyhmmer)."""

from __future__ import annotations

import numpy as np

from plus.arguments import hparams_json
from plus.data.tasks import load_manifest, read_split
from plus.io import write_json
from plus.tasks import metrics as M
from plus.tasks.registry import get_task


def trivial(task_name: str, data_dir, out_metrics, fidelity: dict | None = None) -> dict:
    """Constant predictions learnt from the training split only, scored like the models."""
    manifest = load_manifest(data_dir)
    task = get_task(task_name).for_data(manifest)
    fidelity = fidelity or {}
    train = read_split(data_dir, manifest["splits"]["train"], manifest)
    results = {}
    for name, fname in manifest["splits"]["test"].items():
        recs = read_split(data_dir, fname, manifest)
        if task.kind == "pair":
            levels = np.array([r[4] for r in recs])
            res = M.homology_metrics_from_scores(np.zeros(len(recs)), levels)
            res.pop("cutoffs", None)
            majority = np.bincount(levels, minlength=5).argmax()
            res["acc"] = float((levels == majority).mean())  # the majority level of the test pairs' own prior
            how = "constant similarity score (ranking metrics are chance); acc = majority level"
        elif task.kind == "residue":
            counts = np.bincount([task.label_chars.index(c) for r in train for c in r[2]], minlength=task.n_out)
            logits = np.log(counts / counts.sum() + 1e-9)
            outs = [np.tile(logits, (len(r[1]), 1)) for r in recs]
            tgts = [np.array([task.label_chars.index(c) for c in r[2]]) for r in recs]
            res = task.metrics(outs, tgts, fidelity)
            how = f"most frequent training state ({task.label_chars[counts.argmax()]}) at every residue"
        elif task.loss == "mse":
            mean = float(np.mean([r[2] for r in train]))
            res = M.regression_metrics(np.full(len(recs), mean), np.array([r[2] for r in recs]))
            how = f"training mean {mean:.4g} (correlations undefined for a constant)"
        else:
            counts = np.bincount([r[2] for r in train], minlength=task.n_out)
            logits = np.log(counts / counts.sum() + 1e-9)
            res = task.metrics(np.tile(logits, (len(recs), 1)), np.array([r[2] for r in recs]), fidelity)
            how = f"majority training class {int(counts.argmax())}"
        results[name] = {**task.report(res), "n": len(recs)}
    metrics = {"task": task_name, "model": "trivial", "ablation": "-", "seed": 0, "test_sets": results,
               "description": how}
    write_json(out_metrics, metrics)
    return metrics


def phmmer_scores(pairs, cpus: int = 2) -> np.ndarray:
    """Bit score of sequence A (query) against sequence B for each pair; pairs without a hit get the
    lowest observed score minus 1 (ranked below every hit)."""
    import pyhmmer

    alphabet = pyhmmer.easel.Alphabet.amino()
    seqs = sorted({s for r in pairs for s in (r[2], r[3])})
    index = {s: i for i, s in enumerate(seqs)}
    digital = [pyhmmer.easel.TextSequence(name=str(i).encode(), sequence=_clean(s)).digitize(alphabet)
               for i, s in enumerate(seqs)]
    block = pyhmmer.easel.DigitalSequenceBlock(alphabet, digital)
    hits = {}
    for top in pyhmmer.hmmer.phmmer(block, block, cpus=cpus, E=1000.0, domE=1000.0, incE=1000.0):
        q = int(_text(top.query.name))
        for hit in top:
            hits[(q, int(_text(hit.name)))] = hit.score
    scores = np.array([hits.get((index[r[2]], index[r[3]]), np.nan) for r in pairs], dtype=np.float64)
    floor = np.nanmin(scores) - 1 if np.isfinite(scores).any() else 0.0
    return np.where(np.isfinite(scores), scores, floor)


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else name


def _clean(seq: str) -> str:
    return "".join(c if c in "ACDEFGHIKLMNPQRSTVWY" else "X" for c in seq.upper())


def phmmer(data_dir, out_metrics, cpus: int = 2, fidelity: dict | None = None) -> dict:
    """Homology baseline: phmmer bit scores ranked like the models' expected levels."""
    manifest = load_manifest(data_dir)
    fidelity = fidelity or {}
    cutoffs = None
    if not fidelity.get("b6_cutoffs_on_eval_set", True):
        dev = read_split(data_dir, manifest["splits"]["dev"], manifest)
        cutoffs = M.fit_level_cutoffs(phmmer_scores(dev, cpus), np.array([r[4] for r in dev]))
    results = {}
    for name, fname in manifest["splits"]["test"].items():
        recs = read_split(data_dir, fname, manifest)
        res = M.homology_metrics_from_scores(phmmer_scores(recs, cpus), np.array([r[4] for r in recs]), cutoffs)
        results[name] = {**get_task("homology").report(res), "n": len(recs)}
    metrics = {"task": "homology", "model": "phmmer", "ablation": "-", "seed": 0, "test_sets": results,
               "description": "pyhmmer phmmer bit score of A against B (E <= 1000 reported; no hit = lowest)"}
    write_json(out_metrics, metrics)
    return metrics


def add_parser(subparsers) -> None:
    """`plus baseline`."""
    p = subparsers.add_parser("baseline", help="trivial per-task baseline, or phmmer for homology")
    p.add_argument("--task", required=True)
    p.add_argument("--kind", choices=["trivial", "phmmer"], required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out-metrics", required=True)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--fidelity", type=hparams_json, default={})
    p.set_defaults(func=run)


def run(a) -> None:
    if a.kind not in get_task(a.task).baselines:
        raise SystemExit(f"error: the {a.kind} baseline does not apply to {a.task} "
                         f"(its baselines: {', '.join(get_task(a.task).baselines)})")
    if a.kind == "phmmer":
        phmmer(a.data, a.out_metrics, a.cpus, a.fidelity)
    else:
        trivial(a.task, a.data, a.out_metrics, a.fidelity)
