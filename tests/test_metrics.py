"""Metrics against the golden vectors (golden README §5) plus hand-checked cases. Counts come from the golden
set's own files (golden_set.py)."""

import numpy as np
import pytest
from golden_set import GOLDEN, numbered, read

from plus.tasks import metrics as m

N_TM = numbered("transmembrane_vectors.npz", "logits_")  # proteins of the TM set
N_SS = numbered("secstr_eval_vectors.npz", "logits_")  # proteins of the SecStr set
N_REGION_CASES = len(read("transmembrane_metrics.json")["region_cases"])


def _golden(name):
    return np.load(GOLDEN / f"{name}_vectors.npz"), read(f"{name}_metrics.json")


@pytest.fixture(scope="module")
def tm():
    return _golden("transmembrane")


@pytest.fixture(scope="module")
def hom():
    return _golden("homology_eval")


@pytest.fixture(scope="module")
def ss():
    return _golden("secstr_eval")


# --- transmembrane -----------------------------------------------------------------------------------------


def test_tm_grammar_matches_golden(tm):
    vec, _ = tm
    grammar = m.tm_grammar()
    for key in ("start", "end", "trans", "emit"):
        np.testing.assert_allclose(getattr(grammar, key), vec[f"grammar_{key}"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(grammar.mapping, vec["grammar_mapping"])


@pytest.mark.parametrize("k", range(N_TM))
def test_viterbi_paths_and_scores(tm, k):
    vec, _ = tm
    path, score = m.viterbi_decode(m.log_softmax(vec[f"logits_{k}"]))
    np.testing.assert_array_equal(path, vec[f"decoded_{k}"])
    assert score == pytest.approx(vec["viterbi_scores"][k], abs=1e-6)
    path64, _ = m.viterbi_decode(m.log_softmax(vec[f"logits_{k}"].astype(np.float64)))
    np.testing.assert_array_equal(path64, vec[f"decoded_{k}"])


def test_tm_regions_of_golden_proteins(tm):
    vec, ref = tm
    for k, protein in enumerate(ref["per_protein"]):
        true_regions = m.tm_regions(vec[f"true_{k}"])
        pred_regions = m.tm_regions(vec[f"decoded_{k}"])
        assert [list(r) for r in true_regions] == protein["true_regions_ref"]
        assert [list(r) for r in pred_regions] == protein["decoded_regions_ref"]
        assert int(m.tm_protein_correct(pred_regions, true_regions)) == protein["protein_correct"]
        assert len(vec[f"true_{k}"]) == protein["length"]
        argmax = vec[f"logits_{k}"].argmax(axis=1)
        assert int(np.sum(argmax == vec[f"true_{k}"])) == protein["argmax_correct_residues"]


@pytest.mark.parametrize("case", range(N_REGION_CASES))
def test_tm_region_cases(tm, case):
    c = tm[1]["region_cases"][case]
    pred, true = m.tm_regions(c["pred"]), m.tm_regions(c["true"])
    assert [list(r) for r in pred] == c["pred_regions"]
    assert [list(r) for r in true] == c["true_regions"]
    assert int(m.tm_protein_correct(pred, true)) == c["is_correct"]


def test_transmembrane_metrics(tm):
    vec, ref = tm
    logits, labels = [vec[f"logits_{k}"] for k in range(N_TM)], [vec[f"true_{k}"] for k in range(N_TM)]
    out = m.transmembrane_metrics(logits, labels)
    assert out["n_residues"] == ref["n_residues"] == sum(len(t) for t in labels)
    assert out["correct_residues"] == ref["correct_residues"]
    assert out["acc"] == pytest.approx(ref["acc"], abs=1e-6)
    assert out["acc_p"] == pytest.approx(ref["acc_p"], abs=1e-6)
    assert out["avg_loss_ce"] == pytest.approx(ref["avg_loss_ce"], abs=1e-6)
    assert [int(v) for v in out["protein_correct"]] == [p["protein_correct"] for p in ref["per_protein"]]


def test_tm_regions_helix_at_residue_zero():
    labels = "MMMMMMIIIIIMMMMMMOOM"
    assert m.tm_regions(labels, reference=True) == []
    assert m.tm_regions(labels, reference=False) == [(0, 6), (11, 17), (19, 20)]
    assert m.tm_regions("IMMMMMMO", reference=True) == m.tm_regions("IMMMMMMO", reference=False) == [(1, 7)]


def test_tm_corrected_overlap_rule(tm):
    # a case the reference calls wrong although prediction and truth are identical (a 1-residue helix)
    cases = [c for c in tm[1]["region_cases"] if c["pred"] == c["true"] and not c["is_correct"]]
    if not cases:
        pytest.skip("this golden set records no identical prediction that the reference calls wrong")
    c = cases[0]
    pred, true = m.tm_regions(c["pred"], reference=False), m.tm_regions(c["true"], reference=False)
    assert not m.tm_protein_correct(pred, true, reference=True)
    assert m.tm_protein_correct(pred, true, reference=False)
    assert not m.tm_protein_correct([(0, 3)], [(3, 6)], reference=False)  # adjacent, no overlap
    assert not m.tm_protein_correct([(0, 21)], [(17, 40)], reference=False)  # overlap 4 < 5


# --- homology ----------------------------------------------------------------------------------------------


def test_level_probs_and_expected_level(hom):
    vec, _ = hom
    logits = vec["ordinal_logits"]
    np.testing.assert_allclose(m.level_probs_from_logits(logits), vec["level_probs"], atol=1e-6)
    np.testing.assert_allclose(m.expected_level(logits), vec["expected_level"], atol=1e-6)


def test_fit_level_cutoffs_and_predicted_levels(hom):
    vec, ref = hom
    cutoffs = m.fit_level_cutoffs(vec["expected_level"], vec["true_levels"])
    np.testing.assert_array_equal(cutoffs, vec["thresholds"])
    assert cutoffs[1:].tolist() == pytest.approx(ref["thresholds_1_to_4"], abs=1e-6)
    np.testing.assert_array_equal(m.predict_levels(vec["expected_level"], cutoffs), vec["pred_levels"])
    ours = m.fit_level_cutoffs(m.expected_level(vec["ordinal_logits"]), vec["true_levels"])
    np.testing.assert_allclose(ours, vec["thresholds"], atol=1e-6)


def test_homology_metrics(hom):
    vec, ref = hom
    out = m.homology_metrics(vec["ordinal_logits"], vec["true_levels"])
    assert out["correct"] == ref["correct"] and out["n"] == ref["N"] == len(vec["true_levels"])
    assert out["argmax_correct"] == ref["argmax_correct"]
    for key in ("acc", "r", "rho", "aupr_cl", "aupr_fo", "aupr_sf", "aupr_fa", "bce_loss"):
        assert out[key] == pytest.approx(ref[key], abs=1e-6), key
    np.testing.assert_allclose(out["cutoffs"], vec["thresholds"], atol=1e-6)


def test_homology_metrics_with_given_cutoffs(hom):
    vec, _ = hom
    scores, levels = vec["expected_level"], vec["true_levels"]
    half = len(scores) // 2  # fit on one half, apply to the other
    dev_cutoffs = m.fit_level_cutoffs(scores[:half], levels[:half])
    out = m.homology_metrics_from_scores(scores[half:], levels[half:], cutoffs=dev_cutoffs)
    assert out["cutoffs"] == dev_cutoffs.tolist()
    assert out["acc"] == np.mean(m.predict_levels(scores[half:], dev_cutoffs) == levels[half:])
    fitted = m.homology_metrics_from_scores(scores[half:], levels[half:])
    assert fitted["acc"] >= out["acc"]  # fitting on the evaluated set is optimistic (B6)


def test_homology_non_finite_scores_dropped_for_correlations(hom):
    vec, ref = hom
    scores = vec["expected_level"].astype(np.float64)
    k = max(1, len(scores) // 20)  # the first 5 % of the pairs get a non-finite score
    scores[:k] = -np.inf
    out = m.homology_metrics_from_scores(scores, vec["true_levels"])
    finite = m.homology_metrics_from_scores(scores[k:], vec["true_levels"][k:])
    for key in ("r", "rho", "aupr_cl", "aupr_fa"):
        assert out[key] == finite[key]
    assert out["n"] == ref["N"]


def test_fit_binary_cutoff_takes_first_maximiser():
    # accuracies for i = 0..4: 2, 3, 2, 3, 2 -> first maximiser i = 1 -> cut-off at the smallest score
    cutoffs = m.fit_level_cutoffs(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 1, 0, 1]), n_levels=2)
    assert cutoffs.tolist() == [-np.inf, 0.1]
    all_pos = m.fit_level_cutoffs(np.array([0.1, 0.2]), np.array([1, 1]), n_levels=2)
    assert all_pos.tolist() == [-np.inf, -np.inf]


# --- secondary structure -----------------------------------------------------------------------------------


def test_secstr_metrics(ss):
    vec, ref = ss
    out = m.secstr_metrics([vec[f"logits_{k}"] for k in range(N_SS)], [vec[f"labels_{k}"] for k in range(N_SS)])
    assert (out["n"], out["correct8"], out["correct3"]) == (ref["n"], ref["correct8"], ref["correct3"])
    assert out["acc8"] == pytest.approx(ref["acc8"], abs=1e-6)
    assert out["acc3"] == pytest.approx(ref["acc3"], abs=1e-6)
    assert m.SS8_TO_SS3.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


# --- generic -----------------------------------------------------------------------------------------------


def test_mcc_textbook():
    true = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    pred = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0])  # tp 3, fn 2, fp 1, tn 4
    assert m.mcc(pred, true) == pytest.approx((3 * 4 - 1 * 2) / np.sqrt(4 * 5 * 5 * 6), abs=1e-12)
    assert m.mcc(np.ones(4), np.array([0, 1, 0, 1])) == 0.0


def test_classification_and_regression_metrics():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    out = m.classification_metrics(logits, np.array([0, 1, 1, 1]), n_classes=2)
    assert out["acc"] == 0.75
    assert out["mcc"] == pytest.approx(1 / np.sqrt(3), abs=1e-12)
    assert "mcc" not in m.classification_metrics(np.eye(3), np.arange(3), n_classes=3)
    with pytest.raises(ValueError):
        m.classification_metrics(np.eye(3), np.arange(3), n_classes=2)
    reg = m.regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0]))
    assert reg == pytest.approx({"spearman": 0.8, "pearson": 0.8, "mse": 0.5})


def test_bootstrap_ci(hom):
    vec, _ = hom
    scores, levels = vec["expected_level"], vec["true_levels"]
    point = m.spearman(scores, levels)
    low, high = m.bootstrap_ci(m.spearman, scores, levels, n=200, seed=0)
    assert low < point < high
    assert m.bootstrap_ci(m.spearman, scores, levels, n=200, seed=0) == (low, high)
    assert m.bootstrap_ci(m.spearman, scores, levels, n=200, seed=1) != (low, high)


def test_bootstrap_ci_over_proteins(ss):
    vec, ref = ss
    logits, labels = [vec[f"logits_{k}"] for k in range(N_SS)], [vec[f"labels_{k}"] for k in range(N_SS)]
    low, high = m.bootstrap_ci(lambda a, b: m.secstr_metrics(a, b)["acc8"], logits, labels, n=100, seed=3)
    assert low <= ref["acc8"] <= high


def test_numpy_correlations_and_average_precision_equal_scipy_and_sklearn():
    """pearson/spearman/average_precision are NumPy rewrites (no scipy.stats/sklearn import per job)."""
    from scipy import stats
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(3, 300))
        x, y = rng.normal(size=n), rng.normal(size=n)
        if trial % 2:  # ties in both
            x, y = np.round(x, 1), rng.integers(0, 5, n).astype(float)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        assert abs(m.pearson(x, y) - stats.pearsonr(x, y)[0]) < 1e-12
        assert abs(m.spearman(x, y) - stats.spearmanr(x, y)[0]) < 1e-12
        positive = y > np.median(y)
        if positive.any():
            assert abs(m.average_precision(positive, x) - average_precision_score(positive, x)) < 1e-12
    assert np.isnan(m.average_precision(np.zeros(4, bool), np.arange(4.0)))
