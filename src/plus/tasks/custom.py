"""Users' own tasks from config alone (config ``custom_tasks:``): a registry entry made from the task's kind.

A custom task is a CSV per split (``sequence,label``) and a kind. Registering it adds its entry to the task
registry and its converter to the converters' declaration, so training, evaluation, the trivial baseline,
tables, plots and effects treat it as any paper task. Its classes (or residue states) come from its training
data (``Task.for_data``). The `plus` command registers the tasks given by ``--custom-task NAME=KIND``; the
workflow registers those of ``custom_tasks:`` (rules/common.smk).
"""

from __future__ import annotations

import numpy as np

from plus.data.converters import DATA, TaskData
from plus.data.converters import register as register_data
from plus.data.converters.custom import csv_converter
from plus.io import InputError
from plus.tasks import metrics as M
from plus.tasks.registry import FAMILIES, SUPPORTED, TASKS, Task

# the encoder P-ELMo's protein and residue tasks reuse, frozen, as the paper's tasks do
_PELMO_ENCODER_TASK = next(t.pelmo_encoder_task for t in TASKS.values() if t.pelmo_encoder_task)


def _classification(outputs, targets, fidelity=None, cutoffs=None) -> dict:
    """Accuracy, and MCC for two classes or macro-averaged F1 for more."""
    outputs, targets = np.asarray(outputs), np.asarray(targets)
    n_classes = outputs.shape[1]
    res = M.classification_metrics(outputs, targets, n_classes)
    if n_classes > 2:
        res["f1_macro"] = M.macro_f1(outputs.argmax(1), targets, n_classes)
    return res


def _regression(outputs, targets, fidelity=None, cutoffs=None) -> dict:
    return M.regression_metrics(np.asarray(outputs).reshape(-1), np.asarray(targets))


def _residue(outputs, targets, fidelity=None, cutoffs=None) -> dict:
    return M.residue_metrics(outputs, targets)


def _residue_bootstrap(outputs, targets, fidelity, seed, n_boot) -> dict:
    """Per-residue accuracy resampled over proteins (their correct residues over their residues)."""
    correct = np.array([int((np.asarray(o).argmax(1) == t).sum()) for o, t in zip(outputs, targets, strict=True)])
    lengths = np.array([len(t) for t in targets])
    ratio = lambda c, n: c.sum() / n.sum()  # noqa: E731
    return {"acc": list(M.bootstrap_ci(ratio, correct, lengths, n=n_boot, seed=seed))}


_COMMON = dict(n_out=0, labels_from_data=True, pelmo_encoder_task=_PELMO_ENCODER_TASK)
# kind -> (converted data kind, registry fields); the default head is Task.default_head for every kind
KINDS: dict[str, tuple[str, dict]] = {
    "protein_classification": ("protein", dict(
        loss="ce", metric_fn=_classification, reported=("acc", "mcc", "f1_macro"),
        table_metrics=("acc", "mcc", "f1_macro"), plot_metrics=("acc",), headline_metric="acc")),
    "protein_regression": ("protein", dict(
        loss="mse", metric_fn=_regression, reported=("spearman", "pearson", "mse"),
        table_metrics=("spearman", "pearson", "mse"), plot_metrics=("spearman",), headline_metric="spearman")),
    "residue_classification": ("residue", dict(
        loss="ce", metric_fn=_residue, reported=("acc",), table_metrics=("acc",), plot_metrics=("acc",),
        headline_metric="acc", per_protein_sums={"acc": ("correct", "n")}, bootstrap_fn=_residue_bootstrap)),
}


def register(name: str, kind: str) -> Task:
    """Add a user's task to the registry and the converters; a paper task's name or an unknown kind stops."""
    if kind not in KINDS:
        raise InputError(f"unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    existing = TASKS.get(name)
    if existing is not None and not existing.labels_from_data:
        raise InputError(f"{name!r} is a paper task's name; choose another name")
    data_kind, fields = KINDS[kind]
    converter = csv_converter(name, kind)
    DATA.pop(name, None)  # registered again (a workflow parsed twice in one process): the new definition
    register_data(name, TaskData(data_kind, converter, converter, {}, {}, {}))
    TASKS[name] = Task(name, **_COMMON, **fields)
    SUPPORTED.update((name, family) for family in FAMILIES)  # every model family, as the paper's tasks
    return TASKS[name]


def register_flags(items: list[str]) -> None:
    """Register the tasks of ``--custom-task NAME=KIND`` arguments."""
    for item in items:
        name, sep, kind = item.partition("=")
        if not sep or not name:
            raise InputError(f"--custom-task {item!r}: expected NAME=KIND")
        try:
            register(name, kind)
        except InputError as exc:
            raise InputError(f"--custom-task {item}: {exc}") from None
