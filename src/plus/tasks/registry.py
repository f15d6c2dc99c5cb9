"""The one task registry: a task = its data kind + output size + loss + metrics (spec §3).

Adding a task is one entry here plus its converter in plus.data.tasks; training and evaluation code
never branches on task names except through these fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plus.tasks import metrics as M

LOCALIZATION_CLASSES = ["Cell.membrane", "Cytoplasm", "Endoplasmic.reticulum", "Extracellular",
                        "Golgi.apparatus", "Lysosome/Vacuole", "Mitochondrion", "Nucleus", "Peroxisome",
                        "Plastid"]


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # protein | residue | pair
    n_out: int  # classes (1 for regression; 5 levels for homology)
    loss: str  # ce | mse | ordinal
    headline: str  # metric that selects the summary-table column
    label_chars: str = ""  # residue tasks: label alphabet, index = class id

    @property
    def reported(self) -> tuple[str, ...]:
        """The metrics the paper's tables report for this task (what metrics.json keeps per test set)."""
        return REPORTED[self.name]

    @property
    def per_protein_sums(self) -> dict[str, tuple[str, str | None]]:
        """Metrics that are a sum over proteins divided by a sum over proteins (residue tasks): metric ->
        (numerator key, denominator key or None = 1 per protein) in the output of :meth:`metrics` on one
        protein. A bootstrap over proteins resamples these per-protein terms instead of recomputing."""
        return PER_PROTEIN_SUMS.get(self.name, {})

    def report(self, values: dict) -> dict:
        return {k: float(values[k]) for k in self.reported if k in values}

    def metrics(self, outputs, targets, fidelity: dict, cutoffs=None) -> dict:
        """Test-set metrics from per-example outputs (logits / predictions) and targets."""
        if self.name == "homology":
            return homology_metrics(outputs, targets, cutoffs)
        if self.name == "secstr":
            return M.secstr_metrics(outputs, targets)
        if self.name == "transmembrane":
            return M.transmembrane_metrics(outputs, targets,
                                           reference=fidelity.get("b12_tm_region_quirk", True))
        if self.loss == "mse":
            return M.regression_metrics(np.asarray(outputs).reshape(-1), np.asarray(targets))
        return M.classification_metrics(np.asarray(outputs), np.asarray(targets), self.n_out)

    def bootstrap_metric(self, key: str, fidelity: dict):
        """A function of (outputs, targets) giving one metric, for bootstrap confidence intervals."""
        def fn(outputs, targets):
            return self.metrics(outputs, targets, fidelity).get(key, float("nan"))
        return fn


def homology_metrics(outputs, targets, cutoffs=None) -> dict:
    """outputs: ordinal logits (N, 4) for PLUS-RNN, or 5-way logits (N, 5) for PLUS-TFM (expected level)."""
    outputs = np.asarray(outputs, dtype=np.float32)
    if outputs.shape[1] == 4:
        return M.homology_metrics(outputs, np.asarray(targets), cutoffs=cutoffs)
    logits = outputs - outputs.max(1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    res = M.homology_metrics_from_scores(probs @ np.arange(5), np.asarray(targets), cutoffs=cutoffs)
    res["argmax_acc"] = float((probs.argmax(1) == np.asarray(targets)).mean())
    return res


REPORTED = {
    "homology": ("acc", "argmax_acc", "r", "rho", "aupr_cl", "aupr_fo", "aupr_sf", "aupr_fa"),
    "solubility": ("acc", "mcc"),
    "localization": ("acc",),
    "stability": ("spearman", "pearson", "mse"),
    "fluorescence": ("spearman", "pearson", "mse"),
    "secstr": ("acc8", "acc3"),
    "transmembrane": ("acc", "acc_p"),
}

# Residue-task metrics as ratios of per-protein sums (see Task.per_protein_sums); a one-element list
# (transmembrane's protein_correct) counts as its element.
PER_PROTEIN_SUMS = {
    "secstr": {"acc8": ("correct8", "n"), "acc3": ("correct3", "n")},
    "transmembrane": {"acc": ("correct_residues", "n_residues"), "acc_p": ("protein_correct", None)},
}

TASKS: dict[str, Task] = {t.name: t for t in [
    Task("homology", "pair", 5, "ordinal", "acc"),
    Task("solubility", "protein", 2, "ce", "acc"),
    Task("localization", "protein", 10, "ce", "acc"),
    Task("stability", "protein", 1, "mse", "spearman"),
    Task("fluorescence", "protein", 1, "mse", "spearman"),
    Task("secstr", "residue", 8, "ce", "acc3", label_chars="01234567"),
    Task("transmembrane", "residue", 3, "ce", "acc_p", label_chars="IOM"),
]}

# (task, model family) pairs the paper ran; anything else is refused before work starts.
SUPPORTED = {(t, f) for t in TASKS for f in ("rnn", "tfm", "pelmo")}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise SystemExit(f"error: unknown task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]
