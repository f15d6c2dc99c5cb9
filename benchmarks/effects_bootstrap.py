"""Cost of the ablation-effects bootstrap (plus.report.effects) per task at paper-scale test-set sizes.

Builds one synthetic run per task with the paper's test-set size (random outputs in each task's output layout)
and times ``bootstrap_draws`` on it: every metric of the task's `effects` recomputed on each resample (homology refits
its level cut-offs), residue tasks through their per-protein sums. Prints one JSON line per task: n_units,
s_per_resample, s_per_run (resamples x s_per_resample, one test set) and the one-off setup seconds, plus
load_avg_1min to judge timings taken on a shared machine.

    python benchmarks/effects_bootstrap.py [--resamples 20] [--tasks homology stability ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

from plus.report.effects import RunPredictions, TestSetPredictions, bootstrap_draws
from plus.tasks.registry import TASKS

# paper-scale test sets: units (pairs or proteins) and, for residue tasks, the mean protein length
SIZES = {"homology": (100_000, 0), "solubility": (2_001, 0), "localization": (2_773, 0),
         "stability": (12_851, 0), "fluorescence": (27_217, 0), "secstr": (513, 165), "transmembrane": (300, 400)}


def synthetic_run(name: str, rng: np.random.Generator) -> RunPredictions:
    task, (n, length) = TASKS[name], SIZES[name]
    if task.kind == "residue":
        lengths = rng.integers(length // 2, 3 * length // 2, n)
        out = [rng.normal(size=(L, task.n_out)).astype(np.float32) for L in lengths]
        tgt = [rng.integers(0, task.n_out, L) for L in lengths]
    elif task.loss == "mse":
        out, tgt = rng.normal(size=(n, 1)).astype(np.float32), rng.normal(size=n)
    elif task.kind == "pair":
        out, tgt = rng.normal(size=(n, task.n_out - 1)).astype(np.float32), rng.integers(0, task.n_out, n)
    else:
        out, tgt = rng.normal(size=(n, task.n_out)).astype(np.float32), rng.integers(0, task.n_out, n)
    ids = np.array([f"x{i}" for i in range(n)])
    return RunPredictions("synthetic", "m", "plus", 0, {}, {"test": TestSetPredictions(ids, out, tgt, None, {})})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resamples", type=int, default=20)
    p.add_argument("--full", type=int, default=1000, help="resamples of a real run, to scale s_per_run")
    p.add_argument("--tasks", nargs="*", default=list(SIZES))
    a = p.parse_args()
    rng = np.random.default_rng(0)
    threadpool_limits(limits=1)  # as plus effects runs it
    for name in a.tasks:
        run, task = synthetic_run(name, rng), TASKS[name]
        t0 = time.perf_counter()
        bootstrap_draws(task, run, "test", TASKS[name].effects, 1, 0)  # the one-off part (point, per-protein sums)
        setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        bootstrap_draws(task, run, "test", TASKS[name].effects, a.resamples + 1, 0)
        per = max(time.perf_counter() - t0 - setup, 0.0) / a.resamples
        print(json.dumps({"task": name, "n_units": SIZES[name][0], "metrics": TASKS[name].effects,
                          "s_per_resample": round(per, 5), "setup_s": round(setup, 3),
                          "s_per_run": round(setup + a.full * per, 1), "resamples_timed": a.resamples,
                          "load_avg_1min": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
