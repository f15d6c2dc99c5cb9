"""Paired effect sizes of the ablations, with bootstrap confidence intervals, from the runs' predictions.

For one task, every contrast A - B of :data:`CONTRASTS` whose two ablations ran for the same model on the
same seed gives one row per (test set, metric of the task's ``effects``, model):

* ``delta`` = mean over the matched seeds s of metric(A_s) - metric(B_s). Each metric is recomputed from the
  run's ``predictions.npz`` as ``plus evaluate`` computed it (the run's fidelity switches and recorded
  cut-offs from its metrics.json) and must equal the value in metrics.json, else the run is refused.
* ``ci95_low`` / ``ci95_high``: paired percentile bootstrap over the test units the metric is defined on
  (pairs for pair tasks, proteins for protein and residue tasks). Resample b draws N units with replacement
  (``numpy.random.default_rng(SeedSequence([bootstrap_seed, crc32("<task>/<test set>")]))``, one
  ``integers(0, N, N)`` per resample) and applies the same indices to every run of that test set, both
  ablations and every seed: d_b = mean_s [metric(A_s on b) - metric(B_s on b)]. Each metric is recomputed on
  each resample (Spearman, MCC, AUPR, and homology's level cut-offs refitted where the run fits them on the
  evaluated set); a residue task's ratio metrics (Task.per_protein_sums) are the summed numerators over the
  summed denominators of the resampled proteins, which equals recomputing them. The interval is the 2.5th and
  97.5th percentile of the d_b over the resamples where the metric is defined.
  The seeds share the indices because all of them are evaluated on one and the same test set: its sampling
  error is common to every seed, and independent draws per seed would treat one test set as several and
  narrow the interval. The interval therefore covers test-set sampling for these trained models; training
  randomness enters only through the average over seeds.
* ``verdict``: ``better`` (A better than B in the metric's direction; lower is better for
  :data:`LOWER_IS_BETTER`) or ``worse`` when the interval excludes 0, ``inconclusive`` when it includes 0,
  ``n/a`` when the metric is undefined (e.g. an AUPR without positives).

A contrast with no matched seed has no row (never a zero). The two runs of a contrast are paired example by
example: when they were evaluated on the same examples (ids and labels, in order; ``paired_on`` = ``all``) the
recorded metrics are checked and compared. When a data switch of the ablation changed the test set (the
``corrected`` ablation's localization and transmembrane data, results/data_corrected), the contrast is computed
on the examples both runs share, with the same id and the same label (``paired_on`` = ``shared``; ``n_units``
says how many), the metrics of both runs recomputed on that subset; with none shared, the contrast has no row.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from plus.html_table import html_page
from plus.io import InputError, atomic_write, read_json
from plus.report.tables import headline_test_set, read_run_metrics
from plus.tasks.registry import TASKS, Task

# (A, B) ablation pairs, A - B; the phrase says what "A better than B" means for the paper's question.
CONTRASTS = [
    ("plus", "mlm_only", "SFP improves on MLM-only pre-training"),
    ("plus", "none", "Pre-training (MLM + SFP) improves on no pre-training"),
    ("mlm_only", "none", "MLM-only pre-training improves on no pre-training"),
    ("sfp_only", "plus", "SFP-only pre-training improves on MLM + SFP"),
    ("corrected", "plus", "The corrected code (reference bugs fixed) improves on the reference code"),
]
LOWER_IS_BETTER = frozenset({"mse", "loss", "loss_ce", "bce_loss", "avg_loss_ce", "mlm_loss", "sfp_loss",
                             "lm_loss"})
UNITS = {"pair": "pairs", "protein": "proteins", "residue": "proteins"}  # resampled unit by Task.kind
COLUMNS = ["task", "test_set", "metric", "model", "contrast", "n_seeds", "delta", "ci95_low", "ci95_high",
           "verdict", "mean_a", "mean_b", "seeds", "unit", "n_units", "paired_on", "n_boot", "n_boot_valid",
           "bootstrap_seed", "headline"]
_INT_COLUMNS = ("n_seeds", "n_units", "n_boot", "n_boot_valid", "bootstrap_seed")
_TEXT = ("task", "test_set", "metric", "model", "contrast", "verdict", "seeds", "unit", "paired_on")
VERDICTS = ("better", "worse", "inconclusive", "n/a")


def contrast_name(a: str, b: str) -> str:
    return f"{a} - {b}"


@dataclass
class TestSetPredictions:
    """One test set of one run: ids (N,), outputs/targets (arrays over N units, or per-protein lists for
    residue tasks), the fixed cut-offs the run applied (None: fitted on the evaluated set), metrics.json's values."""

    ids: np.ndarray
    outputs: np.ndarray | list
    targets: np.ndarray | list
    cutoffs: np.ndarray | None
    recorded: dict[str, float]


@dataclass
class RunPredictions:
    path: str
    model: str
    ablation: str
    seed: int
    fidelity: dict
    sets: dict[str, TestSetPredictions]


def read_run_predictions(metrics_path: str | os.PathLike, task: Task) -> RunPredictions:
    """A run's metrics.json and the predictions.npz beside it (``<set>__ids``, ``__outputs``, ``__targets`` and,
    for residue tasks, ``__lengths``, outputs concatenated over proteins)."""
    run = read_run_metrics(metrics_path, task.name)
    d = read_json(metrics_path)
    fidelity = ((d.get("provenance") or {}).get("hparams") or {}).get("fidelity") or {}
    npz_path = Path(metrics_path).with_name("predictions.npz")
    try:
        data = np.load(npz_path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise InputError(f"{npz_path}: file not found (plus evaluate writes it beside {metrics_path})") from exc
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(f"{npz_path}: not a readable .npz ({exc})") from exc
    sets = {}
    with data:
        for ts in run.values:
            keys = [f"{ts}__{k}" for k in ("ids", "outputs", "targets")]
            keys += [f"{ts}__lengths"] if task.kind == "residue" else []
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise InputError(f"{npz_path}: missing arrays {missing} (test set {ts!r} of {metrics_path})")
            ids, out, tgt = (data[k] for k in keys[:3])
            if task.kind == "residue":
                lengths = data[keys[3]].astype(np.int64)
                if (len(lengths) != len(ids) or (lengths < 0).any() or lengths.sum() != len(out)
                        or len(out) != len(tgt)):
                    raise InputError(f"{npz_path}: {ts}: {len(ids)} ids, {len(lengths)} lengths summing to "
                                     f"{lengths.sum()}, {len(out)} outputs and {len(tgt)} targets do not agree")
                cuts = np.cumsum(lengths)[:-1]
                out, tgt = (list(np.split(out, cuts)), list(np.split(tgt, cuts))) if len(lengths) else ([], [])
            elif len(out) != len(ids) or len(tgt) != len(ids):
                raise InputError(f"{npz_path}: {ts}: {len(ids)} ids, {len(out)} outputs and {len(tgt)} targets")
            cut = d["test_sets"][ts].get("cutoffs")
            sets[ts] = TestSetPredictions(ids, out, tgt, None if cut is None else np.asarray(cut, dtype=float),
                                          run.values[ts])
    return RunPredictions(str(metrics_path), run.model, run.ablation, run.seed, fidelity, sets)


def _subset(values, idx):
    return [values[i] for i in idx] if isinstance(values, list) else values[idx]


def _metrics(task: Task, run: RunPredictions, s: TestSetPredictions, idx=None) -> dict:
    out, tgt = (s.outputs, s.targets) if idx is None else (_subset(s.outputs, idx), _subset(s.targets, idx))
    return task.metrics(out, tgt, run.fidelity, cutoffs=s.cutoffs)


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _check(run: RunPredictions, ts: str, metric: str, value: float, how: str = "predictions.npz gives") -> None:
    recorded = run.sets[ts].recorded.get(metric)
    if recorded is not None and not _same(value, recorded):
        raise InputError(f"{run.path}: {ts}.{metric} = {recorded!r}, but {how} {value!r}: metrics.json and "
                         "predictions.npz are not from the same evaluation (rerun plus evaluate)")


def _scalar(value) -> float:
    return float(value[0] if isinstance(value, list | tuple) else value)


def _per_protein_terms(task: Task, run: RunPredictions, s: TestSetPredictions, metrics: Sequence[str]):
    """{metric: (numerators, denominators)} per protein for the task's ratio metrics among `metrics`."""
    spec = {m: task.per_protein_sums[m] for m in metrics if m in task.per_protein_sums}
    if not spec:
        return {}
    per = [task.metrics([o], [t], run.fidelity, cutoffs=s.cutoffs) for o, t in zip(s.outputs, s.targets,
                                                                                    strict=True)]
    terms = {}
    for m, (num_key, den_key) in spec.items():
        num = np.array([_scalar(p[num_key]) for p in per], dtype=float)
        den = np.ones(len(per)) if den_key is None else np.array([_scalar(p[den_key]) for p in per], dtype=float)
        terms[m] = (num, den)
    return terms


def _seed_sequence(seed: int, task: str, test_set: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(f"{task}/{test_set}".encode())])


def bootstrap_draws(task: Task, run: RunPredictions, ts: str, metrics: Sequence[str], n_boot: int,
                    seed: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(point metrics, {metric: (n_boot,) values on each resample}) of one run's test set; the resample
    indices depend only on (seed, task, test set, N), so every run of the test set gets the same ones."""
    s = run.sets[ts]
    point = _metrics(task, run, s)
    point = {m: float(point[m]) if m in point else math.nan for m in metrics}
    for m in metrics:
        _check(run, ts, m, point[m])
    terms = _per_protein_terms(task, run, s, metrics)
    with np.errstate(invalid="ignore", divide="ignore"):
        for m, (num, den) in terms.items():
            _check(run, ts, m, float(num.sum() / den.sum()), "its per-protein sums give")
    rest = [m for m in metrics if m not in terms]
    n = len(s.ids)
    draws = {m: np.full(n_boot, np.nan) for m in metrics}
    if n < 2:
        return point, draws
    rng = np.random.default_rng(_seed_sequence(seed, task.name, ts))
    with np.errstate(invalid="ignore", divide="ignore"):
        for b in range(n_boot):
            idx = rng.integers(0, n, n)
            for m, (num, den) in terms.items():
                draws[m][b] = num[idx].sum() / den[idx].sum()
            if rest:
                values = _metrics(task, run, s, idx)
                for m in rest:
                    draws[m][b] = values.get(m, np.nan)
    return point, draws


def verdict(metric: str, low: float, high: float) -> str:
    """better / worse for A - B from its interval (direction of the metric), inconclusive when it covers 0."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "n/a"
    sign = -1 if metric in LOWER_IS_BETTER else 1
    if sign * low > 0 and sign * high > 0:
        return "better"
    if sign * low < 0 and sign * high < 0:
        return "worse"
    return "inconclusive"


def _examples(s: TestSetPredictions) -> list[tuple[str, bytes]]:
    """(id, label bytes) per test example: two runs were evaluated on the same examples iff these are equal."""
    return [(str(i), np.asarray(t).tobytes()) for i, t in zip(s.ids, s.targets, strict=True)]


def _restricted(run: RunPredictions, ts: str, idx: list[int]) -> RunPredictions:
    """`run` with test set `ts` only, cut to the examples `idx` (metrics.json does not describe that subset)."""
    s = run.sets[ts]
    sub = TestSetPredictions(s.ids[idx], _subset(s.outputs, idx), _subset(s.targets, idx), s.cutoffs, {})
    return RunPredictions(run.path, run.model, run.ablation, run.seed, run.fidelity, {ts: sub})


def _shared(run_a: RunPredictions, run_b: RunPredictions, ts: str):
    """Both runs cut to the examples of `ts` they share (same id and label), in A's order; None if none."""
    where_b = {}
    for k, example in enumerate(_examples(run_b.sets[ts])):
        where_b.setdefault(example, k)
    pairs = [(k, where_b[e]) for k, e in enumerate(_examples(run_a.sets[ts])) if e in where_b]
    if not pairs:
        return None
    idx_a, idx_b = (list(x) for x in zip(*pairs, strict=True))
    return _restricted(run_a, ts, idx_a), _restricted(run_b, ts, idx_b)


def _bootstrap_file(task_name: str, path: str, ts: str, metrics, n_boot: int, seed: int):
    task = TASKS[task_name]
    with threadpool_limits(limits=1):
        return bootstrap_draws(task, read_run_predictions(path, task), ts, metrics, n_boot, seed)


def ablation_effects(task_name: str, run_files: Sequence[str | os.PathLike], n_boot: int = 1000,
                     seed: int = 0, metrics: Sequence[str] | None = None, workers: int = 1) -> pd.DataFrame:
    """The effects table of one task (:data:`COLUMNS`, method in the module docstring) from fine-tuning
    metrics.json files (each with its predictions.npz). `metrics` defaults to the task's `effects`;
    `workers` > 1 bootstraps the runs' test sets in that many processes (the same result)."""
    if task_name not in TASKS:
        raise InputError(f"unknown task {task_name!r} (known: {', '.join(TASKS)})")
    if n_boot < 1:
        raise InputError(f"n_boot must be >= 1, got {n_boot}")
    task = TASKS[task_name]
    metrics = list(metrics or task.effects)
    paths: dict[tuple[str, str, int], str] = {}
    for path in run_files:
        run = read_run_metrics(path, task.name)
        key = (run.model, run.ablation, run.seed)
        if key in paths:
            raise InputError(f"{path}: model {run.model!r}, ablation {run.ablation!r}, seed {run.seed} again "
                             f"(also {paths[key]})")
        paths[key] = str(path)
    models = list(dict.fromkeys(m for m, _, _ in paths))
    contrasts = []  # (model, A, B, matched seeds)
    for model in models:
        for a, b, _ in CONTRASTS:
            seeds = sorted(s for m, x, s in paths if m == model and x == a and (model, b, s) in paths)
            if seeds:
                contrasts.append((model, a, b, seeds))
    needed = list(dict.fromkeys((m, x, s) for m, a, b, seeds in contrasts for x in (a, b) for s in seeds))
    runs = {key: read_run_predictions(paths[key], task) for key in needed}
    test_sets = list(dict.fromkeys(ts for run in runs.values() for ts in run.sets))
    head_metric, head_ts = task.headline_metric, headline_test_set(task.name, test_sets)

    # what to bootstrap: (run key, test set, None) = the whole test set; (run key, test set, other ablation) =
    # the examples shared with that ablation's run of the same seed (their test sets differ)
    full, subsets = set(), {}
    for ts in test_sets:
        for model, a, b, seeds in contrasts:
            for s in seeds:
                ka, kb = (model, a, s), (model, b, s)
                if ts not in runs[ka].sets or ts not in runs[kb].sets:
                    continue
                if _examples(runs[ka].sets[ts]) == _examples(runs[kb].sets[ts]):
                    full |= {(ka, ts), (kb, ts)}
                elif (shared := _shared(runs[ka], runs[kb], ts)) is not None:
                    subsets[(ka, ts, b)], subsets[(kb, ts, a)] = shared
    jobs = sorted(full)
    # one BLAS thread per process: on a busy machine a threaded np.dot (Pearson) was measured 100x slower
    if workers > 1 and len(jobs) > 1:  # each worker reads its run again: no large arrays are pickled
        with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
            futures = [pool.submit(_bootstrap_file, task.name, paths[k], ts, metrics, n_boot, seed) for k, ts in jobs]
            results = {(k, ts, None): f.result() for (k, ts), f in zip(jobs, futures, strict=True)}
    else:
        with threadpool_limits(limits=1):
            results = {(k, ts, None): bootstrap_draws(task, runs[k], ts, metrics, n_boot, seed) for k, ts in jobs}
    with threadpool_limits(limits=1):
        results |= {key: bootstrap_draws(task, run, key[1], metrics, n_boot, seed) for key, run in subsets.items()}

    rows = []
    for ts in test_sets:
        for metric in metrics:
            for model, a, b, seeds in contrasts:
                pairing = {}  # seed -> (A's draws key, B's draws key)
                for s in seeds:
                    ka, kb = ((model, a, s), ts, None), ((model, b, s), ts, None)
                    if ka not in results or kb not in results:
                        ka, kb = ((model, a, s), ts, b), ((model, b, s), ts, a)
                    if ka in results and kb in results:
                        pairing[s] = (ka, kb)
                if not pairing:
                    continue
                seeds = sorted(pairing)
                pa = np.array([results[pairing[s][0]][0][metric] for s in seeds])
                pb = np.array([results[pairing[s][1]][0][metric] for s in seeds])
                diff = np.mean([results[pairing[s][0]][1][metric] - results[pairing[s][1]][1][metric]
                                for s in seeds], axis=0)
                valid = diff[np.isfinite(diff)]
                low, high = (np.percentile(valid, [2.5, 97.5]) if len(valid) else (math.nan, math.nan))
                delta = float(np.mean(pa - pb))
                first = pairing[seeds[0]][0]
                rows.append({
                    "task": task.name, "test_set": ts, "metric": metric, "model": model,
                    "contrast": contrast_name(a, b), "n_seeds": len(seeds), "delta": delta,
                    "ci95_low": float(low), "ci95_high": float(high),
                    "verdict": verdict(metric, low, high) if np.isfinite(delta) else "n/a",
                    "mean_a": float(pa.mean()), "mean_b": float(pb.mean()),
                    "seeds": ";".join(map(str, seeds)), "unit": UNITS[task.kind],
                    "n_units": len((subsets.get(first) or runs[first[0]]).sets[ts].ids),
                    "paired_on": "shared" if first[2] else "all", "n_boot": n_boot,
                    "n_boot_valid": len(valid), "bootstrap_seed": seed,
                    "headline": bool(metric == head_metric and ts == head_ts),
                })
    return _typed(pd.DataFrame(rows, columns=COLUMNS))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    for c in _INT_COLUMNS:
        df[c] = df[c].astype("Int64")
    for c in ("delta", "ci95_low", "ci95_high", "mean_a", "mean_b"):
        df[c] = df[c].astype(float)
    df["headline"] = df["headline"].astype(bool)
    return df


def read_effects(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> pd.DataFrame:
    """Concatenate effects CSVs written by :func:`write_effects` (columns checked)."""
    frames = []
    for path in [paths] if isinstance(paths, str | os.PathLike) else paths:
        try:
            df = pd.read_csv(path, dtype={c: str for c in _TEXT}, keep_default_na=False, na_values=[""])
        except FileNotFoundError as exc:
            raise InputError(f"{path}: file not found") from exc
        except pd.errors.EmptyDataError as exc:
            raise InputError(f"{path}: empty file, expected the header {','.join(COLUMNS)}") from exc
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise InputError(f"{path}: not an ablation-effects table (missing columns {missing})")
        bad = sorted(set(df["verdict"]) - set(VERDICTS))
        if bad:
            raise InputError(f"{path}: unknown verdicts {bad} (expected {', '.join(VERDICTS)})")
        if df["headline"].dtype != bool:
            df["headline"] = df["headline"].astype(str).str.lower().map({"true": True, "false": False})
            if df["headline"].isna().any():
                raise InputError(f"{path}: column headline must be True or False")
        frames.append(df[COLUMNS])
    return _typed(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS))


def _fmt(x: float, spec: str = "+.3f") -> str:
    return "n/a" if pd.isna(x) else format(x, spec).replace("-", "−")


def _effect_cell(rec) -> str:
    return f"{_fmt(rec['delta'])} [{_fmt(rec['ci95_low'])}, {_fmt(rec['ci95_high'])}]"


def method_note(df: pd.DataFrame) -> str:
    """How the table was computed (one paragraph, the same in Markdown, HTML and the report caption)."""
    n_boot = sorted(set(df["n_boot"].dropna().astype(int))) or ["n/a"]
    seeds = sorted(set(df["bootstrap_seed"].dropna().astype(int))) or ["n/a"]
    return ("Δ = A − B of the contrast, averaged over the seeds where both ablations ran (Seeds). 95 % CI: "
            "paired percentile bootstrap over test examples (pairs for homology, proteins for the other tasks, "
            f"residue-level tasks included), {', '.join(map(str, n_boot))} resamples, bootstrap seed "
            f"{', '.join(map(str, seeds))}; each resample applies the same indices to both runs and to every "
            "seed, recomputes the metric (Spearman, MCC, AUPR, homology cut-offs included), and averages the "
            "per-seed differences. better / worse: the CI excludes 0 (A better / worse than B; lower is "
            "better for MSE); inconclusive: the CI includes 0. The CI covers test-set sampling for these "
            "trained models, not training randomness. A contrast whose two ablations did not both run has "
            "no row. Paired on: all = both runs were tested on the same examples; shared = the ablation's data "
            "switches changed the test set, and both runs are compared on the examples they share (same id "
            "and label, N of them).")


def display_rows(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["Task", "Test set", "Metric", "Model", "Contrast (A − B)", "Seeds", "A", "B", "Δ [95 % CI]",
              "Verdict"]
    rows = [[rec["task"], rec["test_set"], rec["metric"], rec["model"], rec["contrast"].replace(" - ", " − "),
             str(rec["n_seeds"]), _fmt(rec["mean_a"], ".3f"), _fmt(rec["mean_b"], ".3f"), _effect_cell(rec),
             rec["verdict"]] for rec in df.to_dict("records")]
    return header, rows


def headline_blocks(df: pd.DataFrame, escape: Callable[[str], str] = str) -> list[str | list[str]]:
    """The paper's question answered for this run from the headline rows (each task's headline metric on its
    headline test set): per model a paragraph and a list (one item per contrast), then a closing paragraph.
    Paragraphs are strings, lists are lists of strings; `escape` quotes names for the output markup."""
    head = df[df["headline"]]
    if head.empty:
        return ["No ablation contrast could be computed in this run: no model ran two of the ablations "
                f"{', '.join(escape(a) for a in ('plus', 'mlm_only', 'sfp_only', 'none', 'corrected'))} on "
                "the same seed, so there is nothing to compare."]
    blocks: list[str | list[str]] = []
    for model in dict.fromkeys(head["model"]):
        sub = head[head["model"] == model]
        n_seeds = sorted(set(sub["n_seeds"].astype(int)))
        seeds = " or ".join(map(str, n_seeds)) + (" seed" if n_seeds == [1] else " seeds")
        blocks.append(f"{escape(model)} ({seeds}; each task's headline metric, 95 % paired-bootstrap CI over "
                      "test examples):")
        items = []
        for a, b, phrase in CONTRASTS:
            rows = sub[sub["contrast"] == contrast_name(a, b)]
            if rows.empty:
                continue
            by = {v: [escape(t) for t in rows.loc[rows["verdict"] == v, "task"]] for v in VERDICTS}
            count = {v: f"{len(names)}" + (f" ({', '.join(names)})" if names else "") for v, names in by.items()}
            text = (f"{phrase} ({escape(a)} − {escape(b)}) in {len(by['better'])} of {len(rows)} tasks"
                    + (f" ({', '.join(by['better'])})" if by["better"] else "")
                    + f" with a CI excluding 0; worse in {count['worse']}; inconclusive (CI includes 0) in "
                    + count["inconclusive"])
            items.append(text + (f"; undefined in {count['n/a']}." if by["n/a"] else "."))
        blocks.append(items)
    cells = ", ".join(f"{escape(r['task'])} {escape(r['metric'])} on {escape(r['test_set'])}"
                      for r in head.drop_duplicates("task").to_dict("records"))
    seeds_note = ("with one seed, training randomness is not measured at all" if (head["n_seeds"] == 1).any()
                  else "training randomness enters only through the average over seeds")
    blocks.append(f"Headline cells: {cells}. The intervals cover the sampling of test examples for these "
                  f"trained models; {seeds_note}.")
    return blocks


def _text_blocks(blocks: list[str | list[str]]) -> str:
    """Paragraphs and "* " lists separated by blank lines (the same in reStructuredText and Markdown)."""
    return "\n\n".join(b if isinstance(b, str) else "\n".join(f"* {item}" for item in b) for b in blocks) + "\n"


def _markup_escape(text: str) -> str:
    """Backslash-escape the characters that reStructuredText and Markdown would read as markup."""
    text = re.sub(r"([\\*`|])", r"\\\1", str(text))
    return re.sub(r"_(?=\W|$)", r"\\_", text)  # a trailing underscore makes a reST reference


def to_markdown(df: pd.DataFrame, title: str = "Ablation effects") -> str:
    header, rows = display_rows(df)
    lines = [f"## {title}", "", _text_blocks(headline_blocks(df, _markup_escape))]
    if rows:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(x.replace("|", "\\|") for x in row) + " |" for row in rows]
    lines += ["", method_note(df), ""]
    return "\n".join(lines)


def to_html(df: pd.DataFrame, title: str = "Ablation effects") -> str:
    header, rows = display_rows(df)
    return html_page(title, header, rows, method_note(df), intro=headline_blocks(df), text_columns=5)


def headline_rst(df: pd.DataFrame) -> str:
    """The headline paragraphs as reStructuredText (the report's landing page includes this file)."""
    return _text_blocks(headline_blocks(df, _markup_escape))


def write_effects(df: pd.DataFrame, csv_path, md_path=None, html_path=None, headline_path=None,
                  title: str = "Ablation effects") -> None:
    """CSV with every column (unknown = empty), and optionally Markdown, HTML and the headline paragraphs
    (reStructuredText), each atomically."""
    with atomic_write(csv_path, newline="") as fh:
        df.to_csv(fh, index=False, na_rep="", float_format="%.10g")
    renders = ((md_path, lambda: to_markdown(df, title)), (html_path, lambda: to_html(df, title)),
               (headline_path, lambda: headline_rst(df)))
    for path, render in renders:
        if path:
            with atomic_write(path, encoding="utf-8") as fh:
                fh.write(render())
