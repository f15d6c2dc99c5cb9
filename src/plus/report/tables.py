"""Comparison tables built from the runs' metrics.json files and the published-numbers CSVs.

Nothing here loads a model: every number comes from a JSON or CSV file. Layout of a table (one
``pandas.DataFrame``, written as CSV plus a Markdown rendering):

* rows: one per (model, ablation) of our fine-tuning runs, then the trivial baselines (``kind`` =
  ``baseline``), then the published reference models of the task (``kind`` = ``published``, not rerun);
* identity columns :data:`ID_COLUMNS`;
* one column group per (test set, metric), named ``"{test_set}/{metric}/{stat}"`` for each stat in
  :data:`STATS`: mean over seeds, std (ddof=1, empty for one seed), n_seeds, ci95_low/ci95_high (the mean
  over seeds of each run's bootstrap bounds over test examples), the published value for that cell and
  ``delta`` = mean - published.

Unknown values are NaN: empty in the CSV, "n/a" in Markdown, never 0. A run that was expected but has no
metrics.json counts in ``missing_runs``; a row whose runs are all missing has empty values.

The CSV keeps every column; its Markdown/HTML renderings (plus.report.render) are compact.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from plus.io import InputError, read_json
from plus.tasks.registry import TASKS

# Metrics of the pre-training table (the tasks' metric columns are their registry entries' `table_metrics`).
PRETRAINING_METRICS = ["mlm_acc", "sfp_acc", "lm_acc", "loss", "mlm_loss", "sfp_loss", "lm_loss"]
# Our metric key -> the metric name used in published_results.csv / plus_paper.csv.
PUBLISHED_METRIC = {
    "acc": "accuracy",
    "acc3": "q3",
    "acc8": "q8",
    "mcc": "mcc",
    "spearman": "spearman",
    "pearson": "pearson",
    "r": "pearson",
    "rho": "spearman",
    "aupr_cl": "aupr_class",
    "aupr_fo": "aupr_fold",
    "aupr_sf": "aupr_superfamily",
    "aupr_fa": "aupr_family",
    "acc_p": "protein_accuracy",
    "mlm_acc": "mlm_accuracy",
    "sfp_acc": "sfp_accuracy",
}
STATS = ("mean", "std", "n_seeds", "ci95_low", "ci95_high", "published", "delta")
ID_COLUMNS = ["kind", "model", "ablation", "label", "paper", "status", "n_runs", "missing_runs"]
PUBLISHED_COLUMNS = ["paper", "model", "task", "test_set", "metric", "value", "pretrained", "status",
                     "source"]
_TEXT_COLUMNS = ("kind", "model", "ablation", "label", "paper", "status")
_SEED_DIR = re.compile(r"^seed(\d+)$")


@dataclass
class Run:
    """One run's test metrics: values[test_set][metric], ci[test_set][metric] = (low, high)."""

    model: str
    ablation: str
    seed: int
    values: dict[str, dict[str, float]]
    ci: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)


def parse_run_path(path: str | os.PathLike) -> tuple[str, str, int]:
    """(model, ablation, seed) from a run path ``.../{model}/{ablation}/seed{seed}/<file>``."""
    parts = Path(path).parts
    m = _SEED_DIR.match(parts[-2]) if len(parts) >= 4 else None
    if m is None:
        raise InputError(f"{path}: expected a run path .../{{model}}/{{ablation}}/seed{{N}}/<file>")
    return parts[-4], parts[-3], int(m.group(1))


def _number(value, path, where) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{path}: {where}: expected a number or null, got {value!r}")
    return float(value)


def _metric_block(block, path, where) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    if not isinstance(block, dict):
        raise InputError(f"{path}: {where}: expected an object of metrics")
    values = {k: _number(v, path, f"{where}.{k}") for k, v in block.items()
              if k not in ("n", "ci95") and not isinstance(v, list | dict)}  # lists/objects are not metrics
    ci = {}
    for k, bounds in (block.get("ci95") or {}).items():
        if not (isinstance(bounds, list | tuple) and len(bounds) == 2):
            raise InputError(f"{path}: {where}.ci95.{k}: expected [low, high], got {bounds!r}")
        ci[k] = (_number(bounds[0], path, f"{where}.ci95.{k}"), _number(bounds[1], path, f"{where}.ci95.{k}"))
    return values, ci


def read_run_metrics(path: str | os.PathLike, task: str | None = None) -> Run:
    """Read a fine-tuning (or baseline) metrics.json; `task` given: its "task" field must match."""
    d = read_json(path)
    for key in ("task", "model", "ablation", "seed", "test_sets"):
        if key not in d:
            raise InputError(f"{path}: missing key {key!r}")
    if task is not None and d["task"] != task:
        raise InputError(f"{path}: task {d['task']!r}, expected {task!r}")
    values, ci = {}, {}
    for ts, block in d["test_sets"].items():
        values[ts], ci[ts] = _metric_block(block, path, f"test_sets.{ts}")
    return Run(str(d["model"]), str(d["ablation"]), int(d["seed"]), values, ci)


def read_pretrain_metrics(path: str | os.PathLike) -> Run:
    """Read a pre-training metrics.json as a Run with test sets "val", "test" (the metrics of
    PRETRAINING_METRICS) and "trivial" (mlm_acc = unigram-frequency MLM accuracy,
    sfp_acc = chance; for the P-ELMo LM, lm_acc = unigram-frequency LM accuracy)."""
    d = read_json(path)
    for key in ("model", "ablation", "seed", "val", "test", "baselines"):
        if key not in d:
            raise InputError(f"{path}: missing key {key!r}")
    keep = PRETRAINING_METRICS
    values = {s: {k: v for k, v in _metric_block(d[s], path, s)[0].items() if k in keep}
              for s in ("val", "test")}
    base = d["baselines"]
    if "lm_freq_acc" in base:
        values["trivial"] = {"lm_acc": _number(base["lm_freq_acc"], path, "baselines.lm_freq_acc")}
    else:
        values["trivial"] = {
            "mlm_acc": _number(base.get("mlm_freq_acc"), path, "baselines.mlm_freq_acc"),
            "sfp_acc": _number(base.get("sfp_chance"), path, "baselines.sfp_chance"),
        }
    return Run(str(d["model"]), str(d["ablation"]), int(d["seed"]), values)


def read_published(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate published-number CSVs (:data:`PUBLISHED_COLUMNS`); an empty value is unknown (NaN)."""
    rows = []
    for path in paths:
        try:
            with open(path, newline="") as fh:
                reader = csv.DictReader(fh)
                missing = [c for c in PUBLISHED_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise InputError(f"{path}: missing columns {missing}")
                for n, rec in enumerate(reader, 2):
                    text = (rec["value"] or "").strip()
                    try:
                        value = float(text) if text else math.nan
                    except ValueError as exc:
                        raise InputError(f"{path}: line {n}: value {text!r} is not a number") from exc
                    if rec["status"] not in ("verified", "secondary"):
                        raise InputError(f"{path}: line {n}: status {rec['status']!r} not verified|secondary")
                    rows.append({**{c: rec[c] for c in PUBLISHED_COLUMNS}, "value": value,
                                 "where": f"{path}:{n}"})
        except FileNotFoundError as exc:
            raise InputError(f"{path}: file not found") from exc
    return pd.DataFrame(rows, columns=[*PUBLISHED_COLUMNS, "where"])


def _label(model_labels: Mapping[str, str], model: str, ablation: str) -> str:
    """Published label of a row: key "model/ablation", or bare "model" for the full method ("plus", "-")."""
    if f"{model}/{ablation}" in model_labels:
        return model_labels[f"{model}/{ablation}"]
    return model_labels.get(model, "") if ablation in ("plus", "-") else ""


def _ordered(keys: Iterable, first: Sequence = ()) -> list:
    keys = list(keys)
    present = set(keys)
    seen = [k for k in first if k in present]
    for k in keys:
        if k not in seen:
            seen.append(k)
    return seen


def _aggregate(runs: list[Run], ts: str, metric: str) -> dict[str, float]:
    vals = np.array([r.values.get(ts, {}).get(metric, math.nan) for r in runs], dtype=float)
    vals = vals[np.isfinite(vals)]
    cis = np.array([r.ci[ts][metric] for r in runs if metric in r.ci.get(ts, {})], dtype=float).reshape(-1, 2)
    cis = cis[np.isfinite(cis).all(axis=1)]
    return {
        "mean": vals.mean() if len(vals) else math.nan,
        "std": vals.std(ddof=1) if len(vals) > 1 else math.nan,
        "n_seeds": len(vals),
        "ci95_low": cis[:, 0].mean() if len(cis) else math.nan,
        "ci95_high": cis[:, 1].mean() if len(cis) else math.nan,
    }


def _build(task, groups, published, test_set_map, model_labels) -> pd.DataFrame:
    """groups: list of (kind, model, ablation, runs, n_missing) in row order."""
    metric_order = list(TASKS[task].table_metrics) if task in TASKS else PRETRAINING_METRICS
    ts_order = _ordered([ts for g in groups for r in g[3] for ts in r.values])
    metrics_seen = _ordered([m for g in groups for r in g[3] for ts in r.values for m in r.values[ts]],
                            metric_order)
    cols = [(ts, m) for ts in ts_order for m in metrics_seen
            if any(m in r.values.get(ts, {}) for g in groups for r in g[3])]
    if not cols:  # no run present at all: the configured test sets x the task's metrics, all empty
        cols = [(ts, m) for ts in test_set_map for m in metric_order]

    rows = []
    for kind, model, ablation, runs, n_missing in groups:
        label = _label(model_labels, model, ablation)
        rows.append({"kind": kind, "model": model, "ablation": ablation, "label": label, "paper": "",
                     "status": "", "n_runs": len(runs), "missing_runs": n_missing,
                     "cells": {c: _aggregate(runs, *c) for c in cols}})

    # Published cells: each CSV row of the task lands on our row with the same label, else on a reference row.
    pub = published[published["task"] == task]
    ts_back = {label: key for key, label in test_set_map.items()}
    our_labels = {r["label"]: i for i, r in enumerate(rows) if r["label"]}
    if len(our_labels) != sum(bool(r["label"]) for r in rows):
        raise InputError(f"{task}: model labels {sorted(model_labels.items())} give two rows the same label")
    ref_rows: dict[tuple[str, str], int] = {}
    chosen: dict[tuple[int, tuple[str, str]], dict] = {}
    for rec in pub.to_dict("records"):
        ts = ts_back.get(rec["test_set"], rec["test_set"])
        candidates = [m for m in metrics_seen if PUBLISHED_METRIC.get(m, m) == rec["metric"]]
        candidates = candidates or [m for m in metric_order if PUBLISHED_METRIC.get(m, m) == rec["metric"]]
        metric = candidates[0] if candidates else rec["metric"]
        if rec["model"] in our_labels:
            i = our_labels[rec["model"]]
        else:
            key = (rec["paper"], rec["model"])
            if key not in ref_rows:
                ref_rows[key] = len(rows)
                rows.append({"kind": "published", "model": rec["model"], "ablation": "",
                             "label": rec["model"], "paper": rec["paper"], "status": rec["status"],
                             "n_runs": pd.NA, "missing_runs": pd.NA, "cells": {}})
            i = ref_rows[key]
        if (ts, metric) not in cols:
            cols.append((ts, metric))
        prev = chosen.get((i, (ts, metric)))
        if prev is not None and prev["status"] == rec["status"] and not (
                prev["value"] == rec["value"] or (math.isnan(prev["value"]) and math.isnan(rec["value"]))):
            raise InputError(f"{rec['where']}: {rec['model']} {task} {rec['test_set']} {rec['metric']} = "
                             f"{rec['value']} conflicts with {prev['where']} = {prev['value']}")
        if prev is None or (prev["status"] == "secondary" and rec["status"] == "verified"):
            chosen[(i, (ts, metric))] = rec

    out = []
    for i, r in enumerate(rows):
        flat = {c: r[c] for c in ID_COLUMNS}
        for c in cols:
            cell = r["cells"].get(c) or {"mean": math.nan, "std": math.nan, "n_seeds": pd.NA,
                                         "ci95_low": math.nan, "ci95_high": math.nan}
            value = chosen[(i, c)]["value"] if (i, c) in chosen else math.nan
            cell = {**cell, "published": value, "delta": cell["mean"] - value}
            flat.update({f"{c[0]}/{c[1]}/{s}": cell[s] for s in STATS})
        out.append(flat)
    df = pd.DataFrame(out, columns=ID_COLUMNS + [f"{ts}/{m}/{s}" for ts, m in cols for s in STATS])
    for c in df.columns:
        if c in ("n_runs", "missing_runs") or c.endswith("/n_seeds"):
            df[c] = df[c].astype("Int64")
    return df


def _group_runs(paths, expected, reader, kind="run"):
    """Read present run files; an expected path without a file counts as missing (from its path)."""
    order, runs, missing = [], {}, {}
    for path in _ordered([str(p) for p in expected or ()] + [str(p) for p in paths]):
        if Path(path).exists():
            run = reader(path)
            key = (run.model, run.ablation)
        else:
            model, ablation, _ = parse_run_path(path)
            key, run = (model, ablation), None
        if key not in runs:
            order.append(key)
            runs[key], missing[key] = [], 0
        if run is None:
            missing[key] += 1
        else:
            runs[key].append(run)
    return [(kind, m, a, runs[(m, a)], missing[(m, a)]) for m, a in order]


def build_task_table(task: str, run_metric_files: Sequence, baseline_metric_files: Sequence,
                     published_csvs: Sequence, test_set_map: Mapping[str, str],
                     model_labels: Mapping[str, str] | None = None,
                     expected_runs: Sequence | None = None) -> pd.DataFrame:
    """The paper-style table of one task.

    run_metric_files: fine-tuning metrics.json files; expected_runs: every run the config asks for (paths,
    present or not; default run_metric_files), a missing one is counted in ``missing_runs``.
    baseline_metric_files: trivial/phmmer metrics.json (rows of kind "baseline"). published_csvs: CSVs with
    :data:`PUBLISHED_COLUMNS`. test_set_map: our test-set key -> published test_set label (unmapped keys
    compare to the identical label). model_labels: "model/ablation" or "model" (= ablation "plus" or "-") ->
    published model label whose values fill that row's published cells.
    """
    groups = _group_runs(run_metric_files, expected_runs, lambda p: read_run_metrics(p, task))
    groups += _group_runs(baseline_metric_files, None, lambda p: read_run_metrics(p, task), kind="baseline")
    return _build(task, groups, read_published(published_csvs), dict(test_set_map), dict(model_labels or {}))


def build_pretraining_table(pretrain_metric_files: Sequence, expected_runs: Sequence | None = None,
                            published_csvs: Sequence = (), test_set_map: Mapping[str, str] | None = None,
                            model_labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """MLM and SFP accuracy (and loss) on val and test per model/ablation, mean over seeds; the column group
    "trivial" holds the baselines (unigram-frequency MLM accuracy, SFP chance). Published rows: task
    "pretraining" in the CSVs, metrics mlm_accuracy / sfp_accuracy."""
    groups = _group_runs(pretrain_metric_files, expected_runs, read_pretrain_metrics)
    return _build("pretraining", groups, read_published(published_csvs), dict(test_set_map or {}),
                  dict(model_labels or {}))


def split_column(column: str) -> tuple[str, str, str]:
    """"{test_set}/{metric}/{stat}" -> (test_set, metric, stat); the test set may itself contain "/"."""
    ts, metric, stat = column.rsplit("/", 2)
    return ts, metric, stat


def column_groups(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(test_set, metric) groups of a table in column order."""
    return _ordered([split_column(c)[:2] for c in df.columns if c not in ID_COLUMNS])


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a table CSV written by :func:`write_table` back (empty cells -> NaN/<NA>)."""
    try:
        df = pd.read_csv(path, dtype={c: str for c in _TEXT_COLUMNS}, keep_default_na=False, na_values=[""])
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    missing = [c for c in ID_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: not a results table (missing columns {missing})")
    for c in _TEXT_COLUMNS:
        df[c] = df[c].fillna("")
    for c in df.columns:
        if c in ("n_runs", "missing_runs") or c.endswith("/n_seeds"):
            df[c] = df[c].astype("Int64")
    return df


def headline_test_set(task: str, test_sets: Sequence[str]) -> str | None:
    """The test set of a task's headline cell among `test_sets` (table order): its entry's preferred one,
    else the first."""
    preferred = TASKS[task].headline_test_set
    return preferred if preferred in test_sets else next(iter(test_sets), None)


def build_summary_table(task_tables: Mapping[str, pd.DataFrame | str | os.PathLike]) -> pd.DataFrame:
    """The tasks' summary: one row per model/ablation, then per baseline, then per published model (in
    order of first appearance within each kind), one column group
    ``"{task}:{test_set}/{metric}/{stat}"`` per task's headline metric (its registry entry's); ``n_runs`` is the
    largest number of runs (seeds) of a task, ``missing_runs`` the sum over tasks."""
    keys, rows, cols = [], {}, []
    for task, table in task_tables.items():
        df = table if isinstance(table, pd.DataFrame) else read_table(table)
        metric = TASKS[task].headline_metric
        test_sets = [ts for ts, m in column_groups(df) if m == metric]
        with_values = [ts for ts in test_sets if df[f"{ts}/{metric}/mean"].notna().any()] or test_sets
        if not with_values:
            raise InputError(f"{task}: table has no {metric!r} column")
        ts = headline_test_set(task, with_values)
        group = f"{task}:{ts}"
        cols.append((group, metric))
        for rec in df.to_dict("records"):
            key = tuple(rec[c] for c in _TEXT_COLUMNS)
            if key not in rows:
                keys.append(key)
                rows[key] = {**dict(zip(_TEXT_COLUMNS, key, strict=True)), "n_runs": pd.NA,
                             "missing_runs": pd.NA}
            row = rows[key]
            for c, combine in (("n_runs", max), ("missing_runs", lambda a, b: a + b)):
                if not pd.isna(rec[c]):
                    row[c] = rec[c] if pd.isna(row[c]) else combine(row[c], rec[c])
            row.update({f"{group}/{metric}/{s}": rec[f"{ts}/{metric}/{s}"] for s in STATS})
    rank = {"run": 0, "baseline": 1, "published": 2}  # our runs, then baselines, then published references
    keys.sort(key=lambda k: rank.get(k[0], 1))
    out = pd.DataFrame([rows[k] for k in keys],
                       columns=ID_COLUMNS + [f"{g}/{m}/{s}" for g, m in cols for s in STATS])
    for c in out.columns:
        if c in ("n_runs", "missing_runs") or c.endswith("/n_seeds"):
            out[c] = out[c].astype("Int64")
    return out
