"""Paired bootstrap effects of the ablation contrasts (plus.report.effects), on fixture runs written in the
layout of `plus evaluate` (metrics.json + predictions.npz), with hand-computed expectations."""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, matthews_corrcoef

from plus.io import InputError
from plus.report import cli, effects, plots
from plus.tasks import metrics as M
from plus.tasks.registry import TASKS
from plus.train.evaluate import _store_predictions


def write_run(root: Path, task_name: str, ablation: str, sets: dict, seed: int = 0, model: str = "rnn",
              fidelity: dict | None = None, cutoffs=None) -> str:
    """One run as `plus evaluate` writes it: metrics from the task's own metrics(), predictions.npz by the
    evaluation's own writer. sets: {test set: (ids, outputs, targets)}."""
    task, fidelity = TASKS[task_name], fidelity or {}
    results, arrays = {}, {}
    for ts, (ids, out, tgt) in sets.items():
        res = task.metrics(out, tgt, fidelity, cutoffs=cutoffs)
        results[ts] = {**task.report(res), "n": len(ids)}
        if cutoffs is not None:
            results[ts]["cutoffs"] = list(cutoffs)
        recs = [tuple(i.split("|")) if task.kind == "pair" else (i,) for i in ids]
        _store_predictions(arrays, ts, task, recs, out, tgt)
    run_dir = root / "finetune" / task_name / model / ablation / f"seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(run_dir / "predictions.npz", **arrays)
    metrics = {"task": task_name, "model": model, "ablation": ablation, "seed": seed, "test_sets": results,
               "dev": {}, "provenance": {"seed": seed, "hparams": {"fidelity": fidelity}}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return str(run_dir / "metrics.json")


def logits_for(pred: np.ndarray, n_classes: int = 2) -> np.ndarray:
    """Logits whose argmax is `pred`."""
    out = np.zeros((len(pred), n_classes), dtype=np.float32)
    out[np.arange(len(pred)), pred] = 1.0
    return out


def ids(n: int, prefix: str = "p") -> np.ndarray:
    return np.array([f"{prefix}{i}" for i in range(n)])


def draws(task: str, test_set: str, n_units: int, n_boot: int, seed: int = 0):
    """The resample indices effects documents: default_rng(SeedSequence([seed, crc32(task/test set)]))."""
    rng = np.random.default_rng(effects._seed_sequence(seed, task, test_set))
    return [rng.integers(0, n_units, n_units) for _ in range(n_boot)]


def row(df: pd.DataFrame, **kw) -> pd.Series:
    sel = np.ones(len(df), bool)
    for k, v in kw.items():
        sel &= (df[k] == v).to_numpy()
    assert sel.sum() == 1, (kw, df[list(kw)].to_dict("records"))
    return df[sel].iloc[0]


@pytest.fixture
def solubility(tmp_path):
    """200 proteins; none correct on the first 100, mlm_only on the same 100, plus on the first 120."""
    n = 200
    y = np.zeros(n, dtype=np.int64)
    y[::2] = 1
    wrong = 1 - y

    def pred(n_correct):
        p = wrong.copy()
        p[:n_correct] = y[:n_correct]
        return logits_for(p)

    files = {a: write_run(tmp_path, "solubility", a, {"deepsol": (ids(n), pred(k), y)})
             for a, k in (("plus", 120), ("mlm_only", 100), ("none", 100))}
    return files


def test_identical_predictions_give_zero_and_a_zero_interval(solubility):
    df = effects.ablation_effects("solubility", list(solubility.values()), n_boot=300)
    same = row(df, contrast="mlm_only - none")  # same predictions in both runs
    assert same["delta"] == 0 and same["ci95_low"] == 0 and same["ci95_high"] == 0
    assert same["verdict"] == "inconclusive" and same["n_boot_valid"] == 300
    assert set(df["metric"]) == {"acc"} and same["unit"] == "proteins" and same["n_units"] == 200


def test_a_known_shift_gives_that_delta_with_a_covering_interval(solubility):
    df = effects.ablation_effects("solubility", list(solubility.values()), n_boot=2000, seed=3)
    shift = row(df, contrast="plus - none")
    assert shift["delta"] == pytest.approx(20 / 200, abs=1e-15)  # 20 more proteins correct out of 200
    assert shift["mean_a"] == pytest.approx(0.6) and shift["mean_b"] == pytest.approx(0.5)
    assert shift["ci95_low"] < 0.1 < shift["ci95_high"]
    # paired: the difference per resample is (resampled draws among the 20 changed proteins) / 200, i.e.
    # Binomial(200, 0.1) / 200 with sd 0.0212: a 95 % interval about 0.1 +- 0.042
    assert 0.05 < shift["ci95_low"] < 0.08 and 0.12 < shift["ci95_high"] < 0.15
    assert shift["verdict"] == "better" and shift["bootstrap_seed"] == 3
    expected = [np.isin(idx, np.arange(100, 120)).sum() / 200 for idx in draws("solubility", "deepsol", 200, 2000, 3)]
    assert (shift["ci95_low"], shift["ci95_high"]) == pytest.approx(tuple(np.percentile(expected, [2.5, 97.5])),
                                                                     abs=1e-12)
    assert row(df, contrast="plus - mlm_only")["delta"] == pytest.approx(0.1, abs=1e-15)


def test_mcc_is_recomputed_on_each_resample(tmp_path):
    rng = np.random.default_rng(1)
    n = 150
    y = rng.integers(0, 2, n)
    pa = np.where(rng.random(n) < 0.75, y, 1 - y)
    pb = np.where(rng.random(n) < 0.6, y, 1 - y)
    runs = [write_run(tmp_path, "solubility", a, {"test": (ids(n), logits_for(p), y)})
            for a, p in (("plus", pa), ("none", pb))]
    df = effects.ablation_effects("solubility", runs, n_boot=400, metrics=["acc", "mcc"])
    mcc = row(df, metric="mcc")
    assert mcc["delta"] == pytest.approx(matthews_corrcoef(y, pa) - matthews_corrcoef(y, pb), abs=1e-12)
    d = [matthews_corrcoef(y[i], pa[i]) - matthews_corrcoef(y[i], pb[i]) for i in draws("solubility", "test", n, 400)]
    assert (mcc["ci95_low"], mcc["ci95_high"]) == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])), abs=1e-12)


def test_spearman_is_recomputed_on_each_resample_and_mse_is_lower_better(tmp_path):
    rng = np.random.default_rng(2)
    n = 120
    y = rng.normal(size=n)
    good, bad = y + 0.5 * rng.normal(size=n), y + 1.5 * rng.normal(size=n)
    runs = [write_run(tmp_path, "stability", a, {"tape": (ids(n), p.reshape(-1, 1).astype(np.float32), y)})
            for a, p in (("plus", good), ("mlm_only", bad), ("none", good + 3.0))]
    df = effects.ablation_effects("stability", runs, n_boot=300, metrics=["spearman", "mse"])
    good32, bad32 = good.astype(np.float32), bad.astype(np.float32)  # the stored outputs are float32
    rho = row(df, metric="spearman", contrast="plus - mlm_only")
    d = [spearmanr(good32[i], y[i])[0] - spearmanr(bad32[i], y[i])[0] for i in draws("stability", "tape", n, 300)]
    assert (rho["ci95_low"], rho["ci95_high"]) == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])), abs=1e-9)
    assert rho["verdict"] == "better"
    # a constant shift keeps every rank: Spearman identical on every resample, MSE worse by the shift's effect
    shifted = row(df, metric="spearman", contrast="plus - none")
    assert abs(shifted["delta"]) < 1e-6 and abs(shifted["ci95_low"]) < 1e-6 and abs(shifted["ci95_high"]) < 1e-6
    mse = row(df, metric="mse", contrast="plus - none")
    assert mse["delta"] < 0 and mse["ci95_high"] < 0 and mse["verdict"] == "better"  # lower MSE is better
    assert row(df, metric="mse", contrast="mlm_only - none")["mean_a"] == pytest.approx(
        float(np.mean((bad32 - y) ** 2)), rel=1e-9)


def test_verdict_follows_the_metric_direction():
    assert effects.verdict("acc", 0.01, 0.03) == "better" and effects.verdict("acc", -0.03, -0.01) == "worse"
    assert effects.verdict("mse", -0.03, -0.01) == "better" and effects.verdict("mse", 0.01, 0.03) == "worse"
    assert effects.verdict("acc", -0.01, 0.01) == "inconclusive" and effects.verdict("acc", 0.0, 0.0) == "inconclusive"
    assert effects.verdict("acc", float("nan"), float("nan")) == "n/a"


def _homology_set(rng, n):
    levels = rng.integers(0, 5, n)
    logits = (rng.normal(size=(n, 4)) + (levels[:, None] - np.arange(4)[None, :] - 0.5)).astype(np.float32)
    pairs = np.array([f"d{i}|e{i}" for i in range(n)])
    return pairs, logits, levels


def test_homology_resamples_pairs_refits_cutoffs_and_recomputes_aupr(tmp_path):
    rng = np.random.default_rng(4)
    pairs, la, levels = _homology_set(rng, 90)
    lb = (la + rng.normal(scale=2.0, size=la.shape)).astype(np.float32)
    cut = [-np.inf, 0.5, 1.5, 2.5, 3.5]  # a corrected run applies fixed (dev-fitted) cut-offs
    off = {"b6_cutoffs_on_eval_set": False}
    runs = [write_run(tmp_path, "homology", "plus", {"fold": (pairs, la, levels)}),
            write_run(tmp_path, "homology", "mlm_only", {"fold": (pairs, lb, levels)}),
            write_run(tmp_path, "homology", "corrected", {"fold": (pairs, lb, levels)}, fidelity=off, cutoffs=cut)]
    df = effects.ablation_effects("homology", runs, n_boot=200)
    assert set(df["metric"]) == {"acc", "r", "rho", "aupr_cl", "aupr_fo", "aupr_sf", "aupr_fa"}
    assert set(df["contrast"]) == {"plus - mlm_only", "corrected - plus"} and set(df["unit"]) == {"pairs"}
    sa, sb = M.expected_level(la), M.expected_level(lb)
    idx = draws("homology", "fold", 90, 200)
    ap = row(df, metric="aupr_fo", contrast="plus - mlm_only")
    d = [average_precision_score(levels[i] > 1, sa[i]) - average_precision_score(levels[i] > 1, sb[i]) for i in idx]
    assert (ap["ci95_low"], ap["ci95_high"]) == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])), abs=1e-9)

    def acc(scores, lv, cutoffs=None):
        return M.homology_metrics_from_scores(scores, lv, cutoffs)["acc"]

    # reference runs refit their cut-offs on every resample; the corrected run keeps its recorded ones
    acc_ref = row(df, metric="acc", contrast="plus - mlm_only")
    d = [acc(sa[i], levels[i]) - acc(sb[i], levels[i]) for i in idx]
    assert (acc_ref["ci95_low"], acc_ref["ci95_high"]) == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])),
                                                                         abs=1e-12)
    acc_fix = row(df, metric="acc", contrast="corrected - plus")
    assert acc_fix["mean_a"] == pytest.approx(acc(sb, levels, cut), abs=1e-12)
    d = [acc(sb[i], levels[i], cut) - acc(sa[i], levels[i]) for i in idx]
    assert (acc_fix["ci95_low"], acc_fix["ci95_high"]) == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])),
                                                                         abs=1e-12)
    assert row(df, metric="acc", contrast="plus - mlm_only")["headline"]
    assert not row(df, metric="rho", contrast="plus - mlm_only")["headline"]


def _residue_set(rng, task, n_proteins, n_classes):
    lengths = rng.integers(8, 30, n_proteins)
    tgt = [rng.integers(0, n_classes, L) for L in lengths]
    out = [(rng.normal(size=(L, n_classes)) + 2.0 * np.eye(n_classes)[t] * (rng.random((L, 1)) < 0.6)).astype(
        np.float32) for L, t in zip(lengths, tgt, strict=True)]
    return ids(n_proteins, task), out, tgt


@pytest.mark.parametrize("task_name, n_classes, metrics", [("secstr", 8, ["acc8", "acc3"]),
                                                           ("transmembrane", 3, ["acc", "acc_p"])])
def test_residue_tasks_resample_proteins_and_match_a_full_recompute(tmp_path, task_name, n_classes, metrics):
    rng = np.random.default_rng(5)
    names, oa, tgt = _residue_set(rng, task_name, 25, n_classes)
    ob = [(o + rng.normal(scale=1.5, size=o.shape)).astype(np.float32) for o in oa]
    runs = [write_run(tmp_path, task_name, a, {"set": (names, o, tgt)}) for a, o in (("plus", oa), ("none", ob))]
    df = effects.ablation_effects(task_name, runs, n_boot=60, metrics=metrics)
    task = TASKS[task_name]
    for metric in metrics:
        rec = row(df, metric=metric)
        assert rec["unit"] == "proteins" and rec["n_units"] == 25  # proteins, not residues
        d = []
        for idx in draws(task_name, "set", 25, 60):  # brute force: the task's metrics on the resampled proteins
            pick = [oa[i] for i in idx], [ob[i] for i in idx], [tgt[i] for i in idx]
            d.append(task.metrics(pick[0], pick[2], {})[metric] - task.metrics(pick[1], pick[2], {})[metric])
        assert (rec["ci95_low"], rec["ci95_high"]) == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])), abs=1e-9)


def test_seeds_share_the_resample_indices_and_are_averaged(tmp_path):
    n = 100
    y = np.ones(n, dtype=np.int64)
    runs = []
    for seed, (ka, kb) in enumerate([(60, 50), (70, 50)]):  # plus: 60 then 70 correct; none: 50
        for ablation, k in (("plus", ka), ("none", kb)):
            p = np.zeros(n, dtype=np.int64)
            p[:k] = 1
            runs.append(write_run(tmp_path, "solubility", ablation, {"test": (ids(n), logits_for(p), y)}, seed=seed))
    df = effects.ablation_effects("solubility", runs, n_boot=500)
    rec = row(df, contrast="plus - none")
    assert rec["n_seeds"] == 2 and rec["seeds"] == "0;1" and rec["delta"] == pytest.approx((0.1 + 0.2) / 2)
    d = [(np.isin(i, np.arange(50, 60)).sum() + np.isin(i, np.arange(50, 70)).sum()) / 2 / n
         for i in draws("solubility", "test", n, 500)]  # the same indices for both seeds
    assert (rec["ci95_low"], rec["ci95_high"]) == pytest.approx(tuple(np.percentile(d, [2.5, 97.5])), abs=1e-12)


def test_a_missing_run_gives_no_row_never_a_zero(tmp_path):
    n = 40
    y = np.ones(n, dtype=np.int64)
    p = np.ones(n, dtype=np.int64)
    runs = [write_run(tmp_path, "solubility", "plus", {"test": (ids(n), logits_for(p), y)}, seed=s) for s in (0, 1)]
    runs.append(write_run(tmp_path, "solubility", "none", {"test": (ids(n), logits_for(1 - p), y)}, seed=0))
    runs.append(write_run(tmp_path, "solubility", "plus", {"test": (ids(n), logits_for(p), y)}, model="tfm"))
    df = effects.ablation_effects("solubility", runs, n_boot=50)
    assert list(df["contrast"]) == ["plus - none"]  # no mlm_only run: no plus - mlm_only row; tfm: no pair
    rec = df.iloc[0]
    assert rec["model"] == "rnn" and rec["n_seeds"] == 1 and rec["seeds"] == "0" and rec["delta"] == 1.0
    empty = effects.ablation_effects("solubility", runs[:2], n_boot=50)
    assert empty.empty and list(empty.columns) == effects.COLUMNS


def test_runs_on_different_test_examples_are_compared_on_the_shared_ones(tmp_path):
    """A data switch of the ablation (corrected localization/transmembrane data) changes the test set: the
    contrast pairs the examples with the same id and label, whatever their order, and recomputes both metrics
    on them; runs sharing no example give no row."""
    n = 30
    y = np.ones(n, dtype=np.int64)
    y[::3] = 0
    good, bad = logits_for(y), logits_for(1 - y)
    a = write_run(tmp_path, "solubility", "plus", {"test": (ids(n), good, y)})
    # the corrected data: the first 10 examples gone, 5 new ones, 2 kept ids relabelled, order reversed
    keep = np.arange(10, n)
    c_ids = np.concatenate([ids(n)[keep], ids(5, "new")])[::-1].copy()
    c_y = np.concatenate([y[keep], np.zeros(5, np.int64)])[::-1].copy()
    c_y[5:7] = 1 - c_y[5:7]  # two kept ids relabelled: not shared
    b = write_run(tmp_path, "solubility", "corrected", {"test": (c_ids, logits_for(1 - c_y), c_y)})
    df = effects.ablation_effects("solubility", [a, b], n_boot=200)
    rec = row(df, contrast="corrected - plus")
    shared = [i for i, lab in zip(c_ids, c_y, strict=True) if i in set(ids(n)) and lab == y[int(i[1:])]]
    assert rec["paired_on"] == "shared" and rec["n_units"] == len(shared) == 18
    assert rec["mean_a"] == 0.0 and rec["mean_b"] == 1.0 and rec["delta"] == -1.0  # on the shared examples only
    assert rec["ci95_low"] == rec["ci95_high"] == -1.0 and rec["verdict"] == "worse"
    full = effects.ablation_effects("solubility", [a, write_run(tmp_path, "solubility", "none",
                                                                {"test": (ids(n), bad, y)})], n_boot=20)
    assert list(full["paired_on"]) == ["all"] and list(full["n_units"]) == [n]
    disjoint = write_run(tmp_path / "x", "solubility", "corrected", {"test": (ids(5, "q"), good[:5], y[:5])})
    assert effects.ablation_effects("solubility", [a, disjoint], n_boot=20).empty


def test_predictions_that_do_not_reproduce_metrics_json_are_refused(tmp_path):
    n = 30
    y = np.ones(n, dtype=np.int64)
    p = logits_for(np.ones(n, dtype=np.int64))
    a = write_run(tmp_path, "solubility", "plus", {"test": (ids(n), p, y)})
    b = write_run(tmp_path, "solubility", "none", {"test": (ids(n), p, y)})
    d = json.loads(Path(b).read_text())
    d["test_sets"]["test"]["acc"] = 0.5
    Path(b).write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"none/seed0/metrics.json: test.acc = 0.5, but predictions.npz gives 1.0"):
        effects.ablation_effects("solubility", [a, b], n_boot=10)
    Path(b).with_name("predictions.npz").unlink()
    with pytest.raises(InputError, match="predictions.npz: file not found"):
        effects.ablation_effects("solubility", [a, b], n_boot=10)
    # a corrected homology run whose metrics.json lacks the dev cut-offs it applied cannot be reproduced
    rng = np.random.default_rng(6)
    pairs, logits, levels = _homology_set(rng, 40)
    off = {"b6_cutoffs_on_eval_set": False}
    h = [write_run(tmp_path, "homology", "plus", {"fold": (pairs, logits, levels)}),
         write_run(tmp_path, "homology", "corrected", {"fold": (pairs, logits, levels)}, fidelity=off,
                   cutoffs=[-np.inf, 3.9, 3.95, 3.98, 3.99])]
    d = json.loads(Path(h[1]).read_text())
    del d["test_sets"]["fold"]["cutoffs"]
    Path(h[1]).write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"corrected/seed0/metrics.json: fold.acc = .*rerun plus evaluate"):
        effects.ablation_effects("homology", h, n_boot=10)


def test_deterministic_and_seeded(tmp_path):
    rng = np.random.default_rng(9)
    y = rng.normal(size=80)
    files = [write_run(tmp_path, "stability", a, {"tape": (ids(80), (y + s * rng.normal(size=80)).reshape(-1, 1), y)})
             for a, s in (("plus", 0.5), ("none", 1.0))]
    a = effects.ablation_effects("stability", files, n_boot=200, seed=7)
    b = effects.ablation_effects("stability", files, n_boot=200, seed=7)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(effects.ablation_effects("stability", files, n_boot=200, seed=7, workers=2), a)
    c = effects.ablation_effects("stability", files, n_boot=200, seed=8)
    assert a["ci95_low"].iloc[0] != c["ci95_low"].iloc[0] and set(c["bootstrap_seed"]) == {8}
    effects.write_effects(a, tmp_path / "e.csv")
    pd.testing.assert_frame_equal(effects.read_effects(tmp_path / "e.csv"), a)


def test_cli_table_headline_and_forest_plot(solubility, tmp_path):
    parser = argparse.ArgumentParser(prog="plus")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))

    def run(argv):
        args = parser.parse_args(argv)
        args.func(args)

    out = tmp_path / "out"
    run(["effects", "--task", "solubility", "--runs", *solubility.values(), "--n-boot", "300",
         "--out-csv", str(out / "solubility.csv")])
    run(["effects", "--task", "stability", "--runs", "--out-csv", str(out / "stability.csv")])
    argv = ["effects-table", "--effects", str(out / "solubility.csv"), str(out / "stability.csv"),
            "--out-csv", str(out / "all.csv"), "--out-md", str(out / "all.md"), "--out-html", str(out / "all.html"),
            "--out-headline", str(out / "headline.rst")]
    run(argv)
    df = effects.read_effects(out / "all.csv")
    assert list(df["contrast"]) == ["plus - mlm_only", "plus - none", "mlm_only - none"]  # stability: no runs
    headline = (out / "headline.rst").read_text()
    assert "SFP improves on MLM-only pre-training (plus − mlm_only) in 1 of 1 tasks (solubility)" in headline
    assert "(mlm_only − none) in 0 of 1 tasks with a CI excluding 0; worse in 0; inconclusive (CI includes " \
           "0) in 1 (solubility)" in headline
    assert "with one seed, training randomness is not measured" in headline
    md = (out / "all.md").read_text()
    assert "| solubility | deepsol | acc | rnn | plus − none | 1 | 0.600 | 0.500 | +0.100 [" in md
    assert "1000" not in md and "300 resamples, bootstrap seed 0" in md
    header = [c.strip() for c in next(x for x in md.splitlines() if x.startswith("| Task")).strip("|").split("|")]
    assert header == ["Task", "Test set", "Metric", "Model", "Contrast (A − B)", "Seeds", "A", "B", "Δ [95 % CI]",
                      "Verdict"]
    page = (out / "all.html").read_text()
    assert "<li>SFP improves on MLM-only pre-training (plus − mlm_only) in 1 of 1 tasks" in page
    run(["plot", "effects", "--effects", str(out / "all.csv"), "--out-png", str(out / "f.png"),
         "--out-svg", str(out / "f.svg")])
    svg = (out / "f.svg").read_text()
    assert "solubility: accuracy" in svg and "deepsol: plus − none" in svg and "CI excludes 0" in svg
    assert (out / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_contrast_says_so(tmp_path):
    df = effects.ablation_effects("solubility", [], n_boot=10)
    effects.write_effects(df, tmp_path / "e.csv", tmp_path / "e.md", tmp_path / "e.html", tmp_path / "h.rst")
    assert "No ablation contrast could be computed" in (tmp_path / "h.rst").read_text()
    fig = plots.plot_effects(tmp_path / "e.csv", tmp_path / "f.png", tmp_path / "f.svg")
    assert "No ablation contrast ran" in fig.axes[0].texts[0].get_text()
    with pytest.raises(InputError, match="not an ablation-effects table"):
        (tmp_path / "bad.csv").write_text("task,delta\nx,1\n")
        effects.read_effects(tmp_path / "bad.csv")


def test_real_evaluations_are_reproduced_including_dev_fitted_cutoffs(tmp_path):
    """A tiny homology model evaluated by `plus evaluate` as the reference (cut-offs fitted on each test set)
    and as `corrected` (cut-offs fitted on dev, recorded in metrics.json): the effects step recomputes both
    runs' metrics from predictions.npz exactly, and Δ is the difference of the two metrics.json values."""
    from plus.data import convert as C
    from plus.train.evaluate import evaluate
    from plus.train.finetune import finetune

    emb = Path(__file__).parents[1] / "data" / "embedded"
    C.convert_task("homology", "embedded", C.embedded_raw("homology", emb), tmp_path / "data", 0,
                   n_pairs_dev=60, n_pairs_test=80)
    train = {"lr": 3e-3, "batch_size": 16, "eval_batch_size": 64, "max_epochs": 1, "patience": -1,
             "epoch_pairs": 48, "lambda_mlm": -1, "max_dev": 40}
    hp = {"model": {"family": "rnn", "hidden_dim": 16, "num_layers": 1, "proj_dim": 8}, "train": train,
          "fidelity": {}, "allow_cpu": True, "threads": 1, "save_every_minutes": 10}
    finetune("homology", tmp_path / "data", 0, hp, tmp_path / "state", tmp_path / "model.pt", tmp_path / "c.csv",
             progress=False)
    runs = []
    for ablation, fidelity in (("plus", {}), ("corrected", {"b6_cutoffs_on_eval_set": False})):
        out = tmp_path / "finetune/homology/rnn" / ablation / "seed0"
        out.mkdir(parents=True)
        evaluate("homology", tmp_path / "data", tmp_path / "model.pt", 0, {**hp, "fidelity": fidelity},
                 out / "metrics.json", out / "predictions.npz", model_name="rnn", ablation=ablation, n_boot=0)
        runs.append(str(out / "metrics.json"))
    recorded = [json.loads(Path(r).read_text())["test_sets"] for r in runs]
    assert all("cutoffs" not in block for block in recorded[0].values())
    assert all(len(block["cutoffs"]) == 5 for block in recorded[1].values())
    df = effects.ablation_effects("homology", runs, n_boot=50)
    assert set(df["contrast"]) == {"corrected - plus"} and set(df["test_set"]) == set(recorded[0])
    for rec in df.to_dict("records"):
        a, b = recorded[1][rec["test_set"]][rec["metric"]], recorded[0][rec["test_set"]][rec["metric"]]
        assert rec["mean_a"] == a and rec["mean_b"] == b and rec["delta"] == pytest.approx(a - b, abs=1e-15)
        if rec["metric"] != "acc":  # the same model: only the cut-offs differ, so only acc can
            assert rec["delta"] == 0 and rec["ci95_low"] == 0 and rec["ci95_high"] == 0
