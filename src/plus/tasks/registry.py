"""The one task registry: each task's facts and behaviour, as fields and functions of its entry (spec §3).

Training, evaluation, baselines, tables, plots, effects and the rules read a task through its entry; no code
outside ``plus.tasks`` and the converters (``plus.data.converters``, whose modules declare each task's data and
raw files) compares a task's name. Adding a task is one entry here plus one converter module with its
``TaskData`` declaration in ``DATA`` (tests/test_registry.py checks that nothing else names a task).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from plus.data.converters import DATA
from plus.tasks import metrics as M


@dataclass(frozen=True)
class Task:
    name: str
    n_out: int  # classes (1 for regression; 5 levels for homology)
    loss: str  # ce | mse | ordinal
    metric_fn: Callable  # (outputs, targets, fidelity, cutoffs) -> every metric of one evaluated set
    reported: tuple[str, ...]  # the metrics the paper's tables report (what metrics.json keeps per test set)
    table_metrics: tuple[str, ...]  # the task table's metric columns, in the paper's order
    plot_metrics: tuple[str, ...]  # the ablation plot's panels (one per test set x metric)
    headline_metric: str  # the summary table's cell and the effects' headline rows
    headline_test_set: str | None = None  # the headline's preferred test set (None = the first)
    effect_metrics: tuple[str, ...] = ()  # metrics of the ablation-effects table (default: the headline metric)
    label_chars: str = ""  # residue tasks: label alphabet, index = class id
    # metrics that are a ratio of per-protein sums: metric -> (numerator key, denominator key or None = 1 per
    # protein) in the output of `metrics` on one protein; a bootstrap over proteins resamples these terms
    per_protein_sums: dict = field(default_factory=dict)
    bootstrap_fn: Callable | None = None  # (outputs, targets, fidelity, seed, n_boot) -> {metric: CI}; None = generic
    ordinal_thresholds: int = 1  # thresholds of the ordinal (SSA) head: homology's 5 levels have 4
    level_cutoffs: bool = False  # the metrics fit level cut-offs on the evaluated set (B6; corrected: on dev)
    shuffle: bool = True  # the fine-tuning loader shuffles the training records (the reference's SecStr does not)
    baselines: tuple[str, ...] = ("trivial",)  # the baselines that apply (config `baselines:` selects)
    pelmo_encoder_task: str | None = None  # P-ELMo: reuse, frozen, the encoder fine-tuned on this task
    embeddings: bool = False  # its test set is the embedding picture's (pooled PLUS-RNN embeddings)
    demo_corpus_search: bool = False  # the demo Pfam corpus is enlarged by searching its training split
    default_head: tuple = ("h", 512)  # PLUS-RNN / P-ELMo head (source, hidden units) when a model has no `heads:`
    labels_from_data: bool = False  # n_out and label_chars come from the converted data (users' own tasks)

    @property
    def kind(self) -> str:
        """The converted data's kind: pair | protein | residue (declared with its converters)."""
        return DATA[self.name].kind

    @property
    def effects(self) -> tuple[str, ...]:
        return self.effect_metrics or (self.headline_metric,)

    def for_data(self, manifest: dict) -> Task:
        """This entry sized by a converted task directory's manifest (a user's task learns its classes or
        residue states from its training data); a paper task's entry is returned as it is."""
        if not self.labels_from_data:
            return self
        if self.kind == "residue":
            return replace(self, n_out=len(manifest["label_chars"]), label_chars=manifest["label_chars"])
        return replace(self, n_out=len(manifest["labels"]) if manifest["labels"] else 1)

    def report(self, values: dict) -> dict:
        return {k: float(values[k]) for k in self.reported if k in values}

    def metrics(self, outputs, targets, fidelity: dict, cutoffs=None) -> dict:
        """Test-set metrics from per-example outputs (logits / predictions) and targets."""
        return self.metric_fn(outputs, targets, fidelity, cutoffs)

    def cutoffs_from_dev(self, dev_metrics: dict, fidelity: dict):
        """The level cut-offs fitted on dev, applied to the test sets (`corrected`), or None (B6: refitted on
        each evaluated set)."""
        if self.level_cutoffs and not fidelity.get("b6_cutoffs_on_eval_set", True):
            return np.asarray(dev_metrics["cutoffs"])
        return None

    def bootstrap(self, out, tgt, point, fidelity, seed, n_boot, cutoffs) -> dict:
        """95 % percentile bootstrap intervals over test examples (proteins or pairs) for the reported metrics."""
        keys = [k for k in self.reported if k in point and k != "argmax_acc"]
        if len(tgt) < 2 or n_boot <= 0:
            return {}
        if self.bootstrap_fn is not None:
            return self.bootstrap_fn(out, tgt, fidelity, seed, n_boot)
        # every metric from the same resamples (one metrics call per resample); homology refits its level
        # cut-offs inside each resample, as the reference fits them on the evaluated set
        out, tgt = np.asarray(out), np.asarray(tgt)
        rng = np.random.default_rng(seed)
        draws = {k: [] for k in keys}
        for _ in range(n_boot):
            idx = rng.integers(0, len(tgt), len(tgt))
            values = self.metrics(out[idx], tgt[idx], fidelity, cutoffs=cutoffs)
            for k in keys:
                draws[k].append(values.get(k, np.nan))
        return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in draws.items()}


# ------------------------------------------------------------------ metric functions of the entries
def homology_metrics(outputs, targets, fidelity=None, cutoffs=None) -> dict:
    """outputs: ordinal logits (N, 4) for PLUS-RNN, or 5-way logits (N, 5) for PLUS-TFM (expected level)."""
    outputs = np.asarray(outputs, dtype=np.float32)
    if outputs.shape[1] == 4:
        return M.homology_metrics(outputs, np.asarray(targets), cutoffs=cutoffs)
    logits = outputs - outputs.max(1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    res = M.homology_metrics_from_scores(probs @ np.arange(5), np.asarray(targets), cutoffs=cutoffs)
    res["argmax_acc"] = float((probs.argmax(1) == np.asarray(targets)).mean())
    return res


def _classification(n_out: int) -> Callable:
    def fn(outputs, targets, fidelity, cutoffs=None):
        return M.classification_metrics(np.asarray(outputs), np.asarray(targets), n_out)
    return fn


def _regression(outputs, targets, fidelity, cutoffs=None):
    return M.regression_metrics(np.asarray(outputs).reshape(-1), np.asarray(targets))


def _secstr(outputs, targets, fidelity, cutoffs=None):
    return M.secstr_metrics(outputs, targets)


def _transmembrane(outputs, targets, fidelity, cutoffs=None):
    return M.transmembrane_metrics(outputs, targets, reference=fidelity.get("b12_tm_region_quirk", True))


def _ratio(correct, total):
    return correct.sum() / total.sum()


def _transmembrane_bootstrap(out, tgt, fidelity, seed, n_boot):
    """Per-protein verdicts and counts reused across resamples: Viterbi runs once."""
    full = _transmembrane(out, tgt, fidelity)
    correct = np.array([int((np.asarray(o).argmax(1) == t).sum()) for o, t in zip(out, tgt)])
    lengths = np.array([len(t) for t in tgt])
    verdict = np.asarray(full["protein_correct"], dtype=float)
    return {"acc": list(M.bootstrap_ci(_ratio, correct, lengths, n=n_boot, seed=seed)),
            "acc_p": list(M.bootstrap_ci(lambda v: v.mean(), verdict, n=n_boot, seed=seed))}


def _secstr_bootstrap(out, tgt, fidelity, seed, n_boot):
    def per(o, t):
        p8 = np.asarray(o).argmax(1)
        e = np.exp(o - o.max(1, keepdims=True))
        prob = e / e.sum(1, keepdims=True)
        groups = np.stack([prob[:, :3].sum(1), prob[:, 3:5].sum(1), prob[:, 5:].sum(1)], 1).argmax(1)
        return int((p8 == t).sum()), int((groups == np.asarray(M.SS8_TO_SS3)[t]).sum())
    counts = np.array([per(np.asarray(o), np.asarray(t)) for o, t in zip(out, tgt)])
    lengths = np.array([len(t) for t in tgt])
    return {key: list(M.bootstrap_ci(_ratio, counts[:, k], lengths, n=n_boot, seed=seed))
            for k, key in enumerate(("acc8", "acc3"))}


# ------------------------------------------------------------------ the entries
_HOMOLOGY_METRICS = ("acc", "r", "rho", "aupr_cl", "aupr_fo", "aupr_sf", "aupr_fa")
_REGRESSION = dict(n_out=1, loss="mse", metric_fn=_regression, reported=("spearman", "pearson", "mse"),
                   table_metrics=("spearman", "pearson", "mse"), plot_metrics=("spearman",),
                   headline_metric="spearman")

TASKS: dict[str, Task] = {t.name: t for t in [
    Task("homology", 5, "ordinal", homology_metrics, reported=("acc", "argmax_acc", *_HOMOLOGY_METRICS[1:]),
         table_metrics=_HOMOLOGY_METRICS, plot_metrics=("acc", "rho"), headline_metric="acc",
         effect_metrics=_HOMOLOGY_METRICS, ordinal_thresholds=4, level_cutoffs=True,
         baselines=("trivial", "phmmer"), embeddings=True),
    Task("solubility", 2, "ce", _classification(2), reported=("acc", "mcc"), table_metrics=("acc", "mcc"),
         plot_metrics=("acc",), headline_metric="acc", pelmo_encoder_task="homology", demo_corpus_search=True),
    Task("localization", 10, "ce", _classification(10), reported=("acc",), table_metrics=("acc",),
         plot_metrics=("acc",), headline_metric="acc", pelmo_encoder_task="homology", demo_corpus_search=True),
    Task("stability", **_REGRESSION, pelmo_encoder_task="homology", demo_corpus_search=True),
    Task("fluorescence", **_REGRESSION, pelmo_encoder_task="homology"),
    Task("secstr", 8, "ce", _secstr, reported=("acc8", "acc3"), table_metrics=("acc8", "acc3"),
         plot_metrics=("acc8", "acc3"), headline_metric="acc3", headline_test_set="cb513", label_chars="01234567",
         per_protein_sums={"acc8": ("correct8", "n"), "acc3": ("correct3", "n")}, bootstrap_fn=_secstr_bootstrap,
         shuffle=False, pelmo_encoder_task="homology"),
    # a one-element list (protein_correct) counts as its element in per_protein_sums
    Task("transmembrane", 3, "ce", _transmembrane, reported=("acc", "acc_p"), table_metrics=("acc", "acc_p"),
         plot_metrics=("acc", "acc_p"), headline_metric="acc_p", label_chars="IOM",
         per_protein_sums={"acc": ("correct_residues", "n_residues"), "acc_p": ("protein_correct", None)},
         bootstrap_fn=_transmembrane_bootstrap, pelmo_encoder_task="homology"),
]}

# (task, model family) pairs the paper ran; anything else is refused before work starts.
FAMILIES = ("rnn", "tfm", "pelmo")
SUPPORTED = {(t, f) for t in TASKS for f in FAMILIES}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise SystemExit(f"error: unknown task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]
