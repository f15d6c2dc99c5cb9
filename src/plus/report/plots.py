"""Figures from the runs' metrics.json / curve.csv / embedding .npz files (PNG and SVG; never loads a model).

Every function saves both files atomically and returns the (closed) matplotlib Figure so that callers and
tests can inspect titles, axis labels and legends.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from plus.io import InputError, atomic_path  # noqa: E402
from plus.report.tables import parse_run_path, read_run_metrics  # noqa: E402
from plus.tasks.registry import TASKS as TASK_REGISTRY  # noqa: E402

METRIC_LABELS = {
    "acc": "accuracy (fraction correct)",
    "acc3": "Q3 accuracy (fraction of residues)",
    "acc8": "Q8 accuracy (fraction of residues)",
    "acc_p": "protein-level accuracy (fraction of proteins)",
    "mcc": "MCC (unitless, -1 to 1)",
    "spearman": "Spearman ρ (unitless)",
    "pearson": "Pearson r (unitless)",
    "mse": "MSE (target units²)",
    "r": "Pearson r (unitless)",
    "rho": "Spearman ρ (unitless)",
    "aupr_cl": "AUPR, class level (unitless)",
    "aupr_fo": "AUPR, fold level (unitless)",
    "aupr_sf": "AUPR, superfamily level (unitless)",
    "aupr_fa": "AUPR, family level (unitless)",
}
SCOP_CLASSES = {"a": "all-α", "b": "all-β", "c": "α/β", "d": "α+β", "e": "multi-domain", "f": "membrane",
                "g": "small"}
ABLATION_ORDER = ["plus", "mlm_only", "sfp_only", "none", "corrected"]

plt.rcParams.update({"svg.fonttype": "none", "figure.dpi": 100, "savefig.dpi": 150})


def _save(fig, out_png, out_svg, rect=(0, 0, 1, 1)):
    fig.tight_layout(rect=rect)
    for out in (out_png, out_svg):
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=Path(out).suffix.lstrip(".").lower())
    plt.close(fig)
    return fig


def _grid(n: int, ncols: int = 3, size=(4.6, 3.6)):
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def plot_ablation(task: str, run_metric_files: Sequence, out_png, out_svg,
                  metrics: Sequence[str] | None = None):
    """Bars = mean over seeds per ablation (hue = model), points = single seeds; one panel per
    (test set, metric). Missing runs are simply absent, never drawn as zero."""
    rows = []
    for path in run_metric_files:
        run = read_run_metrics(path, task)
        for ts, vals in run.values.items():
            for m, v in vals.items():
                if np.isfinite(v):
                    rows.append({"model": run.model, "ablation": run.ablation, "seed": run.seed,
                                 "test_set": ts, "metric": m, "value": v})
    if not rows:
        raise InputError(f"{task}: no run metrics to plot")
    df = pd.DataFrame(rows)
    plotted = TASK_REGISTRY[task].plot_metrics if task in TASK_REGISTRY else ()
    metrics = list(metrics or [m for m in plotted if m in set(df["metric"])]
                   or df["metric"].unique()[:2])
    panels = [(ts, m) for ts in df["test_set"].unique() for m in metrics
              if ((df["test_set"] == ts) & (df["metric"] == m)).any()]
    order = [a for a in ABLATION_ORDER if a in set(df["ablation"])]
    order += sorted(set(df["ablation"]) - set(order))
    models = list(df["model"].unique())
    palette = dict(zip(models, sns.color_palette("colorblind", len(models)), strict=True))
    fig, axes = _grid(len(panels))
    for ax, (ts, m) in zip(axes, panels, strict=True):
        sub = df[(df["test_set"] == ts) & (df["metric"] == m)]
        sns.barplot(data=sub, x="ablation", y="value", hue="model", order=order, hue_order=models,
                    palette=palette, errorbar=None, alpha=0.6, ax=ax)
        sns.stripplot(data=sub, x="ablation", y="value", hue="model", order=order, hue_order=models,
                      palette=palette, dodge=True, size=5, edgecolor="black", linewidth=0.6, ax=ax,
                      legend=False)
        ax.set_title(f"{ts}: {METRIC_LABELS.get(m, m).split(' (')[0]}")
        ax.set_xlabel("ablation")
        ax.set_ylabel(METRIC_LABELS.get(m, m))
        ax.tick_params(axis="x", rotation=20)
        handles, labels = ax.get_legend_handles_labels()
        ax.get_legend().remove()
    fig.legend(handles, labels, title="model", loc="lower center", ncol=len(models), frameon=False)
    sep = "\n" if fig.get_figwidth() < 9 else " "  # one panel: the title on two lines, not cut off
    fig.suptitle(f"{task}: test metrics by ablation{sep}(bars: mean over seeds; points: individual seeds)")
    return _save(fig, out_png, out_svg, rect=(0, 0.75 / fig.get_figheight(), 1, 1))  # room for the legend


def _read_curve(path, required: Sequence[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: unreadable CSV ({exc})") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing columns {missing}")
    return df


def _curve_panels(curves, x, panels, title, out_png, out_svg, xlabel, split_col=None):
    """curves: list of (run label, seed, DataFrame); panels: list of (column, y label). Colour = run label;
    line style = split (train dashed, val solid) with `split_col`, else the seed. One legend below the panels."""
    labels = list(dict.fromkeys(label for label, _, _ in curves))
    colors = dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))
    if split_col:
        styles, kind = {"train": "--", "val": "-"}, "split"
    else:
        seeds = sorted({seed for _, seed, _ in curves})
        styles, kind = dict(zip(seeds, itertools.cycle(["-", "--", ":", "-."]))), "seed"
    fig, axes = _grid(len(panels))
    for ax, (col, ylabel) in zip(axes, panels, strict=True):
        for label, seed, df in curves:
            parts = df.groupby(split_col, sort=False) if split_col else [(seed, df)]
            for key, part in parts:
                if col not in part:
                    continue
                part = part[[x, col]].apply(pd.to_numeric, errors="coerce").dropna()
                if len(part):
                    ax.plot(part[x], part[col], color=colors[label], linestyle=styles.get(key, "-"),
                            marker="o" if len(part) < 30 else None, markersize=3, linewidth=1.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel.split(" (")[0])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[lb], label=lb) for lb in labels]
    handles += [Line2D([], [], color="grey", linestyle=s, label=f"{kind} {k}" if kind == "seed" else k)
                for k, s in styles.items()]
    ncol = min(len(handles), 5)
    fig.legend(handles=handles, title=f"model/ablation; line style: {kind}", loc="lower center", ncol=ncol,
               fontsize=8, frameon=False)
    fig.suptitle(title)
    legend_in = 0.35 + 0.18 * math.ceil(len(handles) / ncol)
    return _save(fig, out_png, out_svg, rect=(0, legend_in / fig.get_figheight(), 1, 1))


def plot_pretrain_curves(curve_files: Sequence, out_png, out_svg):
    """Loss, MLM, SFP and (P-ELMo) LM accuracy vs optimizer step for each model/ablation (train dashed, val
    solid; seeds share a colour). Columns with no values (an ablation without MLM or SFP) are skipped."""
    curves = []
    for path in curve_files:
        model, ablation, seed = parse_run_path(path)
        curves.append((f"{model}/{ablation}", seed, _read_curve(path, ["step", "split", "loss"])))
    panels = [("loss", "loss (cross-entropy, nats)"),
              ("mlm_acc", "MLM accuracy (fraction of masked residues)"),
              ("sfp_acc", "SFP accuracy (fraction of pairs)"),
              ("lm_acc", "P-ELMo LM accuracy (fraction of residues)")]
    panels = [p for p in panels if any(p[0] in df and df[p[0]].notna().any() for _, _, df in curves)]
    return _curve_panels(curves, "step", panels, "Pre-training curves", out_png, out_svg,
                         "optimizer step", split_col="split")


def plot_finetune_curves(task: str, curve_files: Sequence, out_png, out_svg):
    """Train and dev loss (plus every other dev_* column) vs epoch for each model/ablation (colour) and seed
    (line style) of a task. Losses are in nats per example; regression tasks: MSE in squared target units (plus
    the auxiliary MLM term in nats when it is on)."""
    curves = []
    for path in curve_files:
        model, ablation, seed = parse_run_path(path)
        curves.append((f"{model}/{ablation}", seed,
                       _read_curve(path, ["epoch", "train_loss", "dev_loss", "elapsed_s"])))
    task_def = TASK_REGISTRY.get(task)
    unit = "MSE, target units²" if task_def and task_def.loss == "mse" else "nats per example"
    panels = [("train_loss", f"training loss ({unit})"), ("dev_loss", f"dev loss ({unit})")]
    extra = [c for _, _, df in curves for c in df.columns if c.startswith("dev_") and c != "dev_loss"]
    panels += [(c, _dev_label(c.removeprefix("dev_"))) for c in dict.fromkeys(extra)]
    return _curve_panels(curves, "epoch", panels, f"{task}: fine-tuning curves", out_png, out_svg, "epoch")


def _dev_label(metric: str) -> str:
    if metric in METRIC_LABELS:
        return f"dev {METRIC_LABELS[metric]}"
    unit = "nats" if "loss" in metric else "unitless"
    return f"dev {metric.replace('_', ' ')} ({unit})"


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project rows of x onto the first two principal components (numpy SVD); returns (coords, explained
    variance fractions of the two components)."""
    xc = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    total = (s**2).sum()
    frac = (s[:2] ** 2) / total if total > 0 else np.zeros(2)
    return u[:, :2] * s[:2], frac


def plot_embeddings(npz_file: str | os.PathLike, out_png, out_svg, title: str | None = None):
    """2-D PCA of pooled embeddings (npz keys pooled (N, D), labels (N,) SCOP class letters, ids (N,), as
    written by `plus embed --data <homology>`), one colour per class; an optional `source` (N,) array (the
    sequence files) is named in the title."""
    try:
        data = np.load(npz_file, allow_pickle=False)
    except FileNotFoundError as exc:
        raise InputError(f"{npz_file}: file not found") from exc
    for key in ("pooled", "labels", "ids"):
        if key not in data:
            raise InputError(f"{npz_file}: missing array {key!r}")
    pooled, labels = np.asarray(data["pooled"], dtype=float), np.asarray(data["labels"]).astype(str)
    if pooled.ndim != 2 or len(pooled) != len(labels) or len(data["ids"]) != len(labels) or len(pooled) < 3:
        raise InputError(f"{npz_file}: pooled {pooled.shape}, labels {labels.shape}, "
                         f"ids {data['ids'].shape}: need pooled (N, D) with N >= 3 and N labels and ids")
    coords, frac = pca_2d(pooled)
    classes = sorted(set(labels))
    colors = dict(zip(classes, sns.color_palette("colorblind", len(classes)), strict=True))
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    for c in classes:
        sel = labels == c
        ax.scatter(coords[sel, 0], coords[sel, 1], s=12, alpha=0.75, color=colors[c],
                   label=f"{c}{': ' + SCOP_CLASSES[c] if c in SCOP_CLASSES else ''} (n={sel.sum()})")
    ax.set_xlabel(f"PC1 ({100 * frac[0]:.1f} % of variance; unitless)")
    ax.set_ylabel(f"PC2 ({100 * frac[1]:.1f} % of variance; unitless)")
    ax.legend(title="SCOP class", fontsize=8, markerscale=1.5)
    title = title or f"Pooled embeddings of {len(labels)} domains (PCA)"
    if "source" in data:
        title += f"\n{len(labels)} sequences from {', '.join(dict.fromkeys(map(str, data['source'])))}"
    ax.set_title(title, fontsize=10)
    return _save(fig, out_png, out_svg)


def plot_effects(effects_csv, out_png, out_svg):
    """Forest plot of the ablation effects (``ablation_effects.csv``): one panel per task with its headline
    metric on every test set; a point = Δ = A − B (mean over matched seeds), a bar = its 95 % paired-bootstrap
    CI, colour = contrast, filled = the CI excludes 0. A task without any contrast is left out."""
    from plus.report.effects import CONTRASTS, LOWER_IS_BETTER, contrast_name, read_effects

    df = read_effects(effects_csv)
    headline = {name: task.headline_metric for name, task in TASK_REGISTRY.items()}
    df = df[np.array([headline.get(t) == m for t, m in zip(df["task"], df["metric"], strict=True)], dtype=bool)]
    df = df[np.isfinite(df["delta"].to_numpy(dtype=float))]
    if df.empty:
        fig, ax = plt.subplots(figsize=(6.4, 2.0))
        ax.axis("off")
        ax.text(0.5, 0.5, "No ablation contrast ran: no model has two of the ablations\n"
                "plus, mlm_only, sfp_only, none, corrected on the same seed.", ha="center", va="center")
        return _save(fig, out_png, out_svg)
    order = [contrast_name(a, b) for a, b, _ in CONTRASTS]
    order += sorted(set(df["contrast"]) - set(order))
    colors = dict(zip(order, sns.color_palette("colorblind", len(order)), strict=True))
    tasks = list(dict.fromkeys(df["task"]))
    several_models = df["model"].nunique() > 1
    sizes = [len(df[df["task"] == t]) for t in tasks]
    fig, axes = plt.subplots(len(tasks), 1, figsize=(8.0, 1.2 + sum(0.3 * n + 0.9 for n in sizes)),
                             gridspec_kw={"height_ratios": [n + 1.5 for n in sizes]}, squeeze=False)
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        sub = df[df["task"] == task]  # in table order: test set, model, contrast
        y = np.arange(len(sub))[::-1]
        for yi, rec in zip(y, sub.to_dict("records"), strict=True):
            color = colors[rec["contrast"]]
            low, high = rec["ci95_low"], rec["ci95_high"]
            if np.isfinite(low) and np.isfinite(high):
                ax.plot([low, high], [yi, yi], color=color, linewidth=2)
            decided = rec["verdict"] in ("better", "worse")
            ax.plot([rec["delta"]], [yi], "o", color=color, markersize=7,
                    markerfacecolor=color if decided else "white", markeredgewidth=1.5)
        labels = [f"{r['test_set']}: {r['contrast'].replace(' - ', ' − ')}"
                  + (f" ({r['model']})" if several_models else "") for r in sub.to_dict("records")]
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_ylim(-0.7, len(sub) - 0.3)
        ax.axvline(0, color="grey", linestyle="--", linewidth=1)
        metric = sub["metric"].iloc[0]
        label = METRIC_LABELS.get(metric, metric)
        direction = " (lower is better)" if metric in LOWER_IS_BETTER else ""
        ax.set_title(f"{task}: {label.split(' (')[0]}{direction}", fontsize=10, loc="left")
        ax.set_xlabel(f"Δ = A − B, {label}", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    handles = [Line2D([], [], color=colors[c], marker="o", linewidth=2, label=c.replace(" - ", " − "))
               for c in order if c in set(df["contrast"])]
    handles += [Line2D([], [], color="grey", marker="o", linestyle="", label="CI excludes 0"),
                Line2D([], [], color="grey", marker="o", markerfacecolor="white", linestyle="",
                       label="CI includes 0")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False,
               title="contrast A − B", title_fontsize=8)
    seeds = sorted(set(df["n_seeds"].astype(int)))
    fig.suptitle("Ablation effects: Δ with 95 % paired-bootstrap CI over test examples\n"
                 f"(each task's headline metric; mean over {' or '.join(map(str, seeds))} matched "
                 f"seed{'s' if seeds != [1] else ''})", fontsize=10)
    legend_in = 0.45 + 0.22 * math.ceil(len(handles) / 4)
    height = fig.get_figheight()
    return _save(fig, out_png, out_svg, rect=(0, legend_in / height, 1, 1 - 0.1 / height))
