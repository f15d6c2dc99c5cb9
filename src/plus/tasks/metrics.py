"""Evaluation metrics of the PLUS downstream tasks (golden README §5, reference spec §3).

Every function takes numpy arrays (or lists of per-protein arrays) and returns plain Python numbers, so
the values can be written to JSON directly. ``reference=True`` variants reproduce the released code,
bugs included; the corrected variants are documented where they differ.
"""

from typing import NamedTuple

import numpy as np

EPS = np.finfo(np.float64).eps
SS8_TO_SS3 = np.array([0, 0, 0, 1, 1, 2, 2, 2])  # NetSurfP Q8 order GHIBESTC -> H, E, C
TM_LABELS = "IOM"  # label ids 0, 1, 2
HOMOLOGY_LEVELS = ("cl", "fo", "sf", "fa")  # AUPR positives: level > 0, > 1, > 2, > 3


# ---------------------------------------------------------------------------------------------------------
# Generic metrics
# ---------------------------------------------------------------------------------------------------------


def accuracy(pred, true):
    """Fraction of positions where ``pred == true``."""
    pred, true = np.asarray(pred), np.asarray(true)
    return float(np.mean(pred == true))


def mcc(pred, true):
    """Binary Matthews correlation coefficient (0 when a marginal is empty, as scikit-learn).

    The reference logs ``mcc`` without filling its confusion counts, so it always printed 0 (bug B8);
    this computes the real value from the predictions.
    """
    pred, true = np.asarray(pred).astype(bool), np.asarray(true).astype(bool)
    tp = float(np.sum(pred & true))
    tn = float(np.sum(~pred & ~true))
    fp = float(np.sum(pred & ~true))
    fn = float(np.sum(~pred & true))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denom) if denom > 0 else 0.0


def macro_f1(pred, true, n_classes):
    """F1 averaged over the classes with equal weight (a class never predicted nor true scores 0)."""
    pred, true = np.asarray(pred), np.asarray(true)
    scores = []
    for c in range(n_classes):
        tp = float(np.sum((pred == c) & (true == c)))
        denom = float(np.sum(pred == c) + np.sum(true == c))
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def _finite_pairs(x, y):
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


# Pearson, Spearman and average precision are written out in NumPy (the definitions of scipy.stats.pearsonr,
# scipy.stats.spearmanr and sklearn.metrics.average_precision_score, which the tests compare against): importing
# scipy.stats and sklearn.metrics costs every fine-tuning and evaluation job 1.6 s.
def _pearson(x, y):
    xm, ym = x - x.mean(), y - y.mean()
    r = np.dot(xm / np.linalg.norm(xm), ym / np.linalg.norm(ym))
    return float(np.clip(r, -1.0, 1.0))


def average_ranks(x):
    """1-based ranks, ties getting the mean of their ranks (scipy.stats.rankdata's "average")."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse.reshape(-1)]


def pearson(x, y):
    """Pearson r over the pairs where both values are finite (nan for fewer than 2 or constant input)."""
    x, y = _finite_pairs(x, y)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return _pearson(x, y)


def spearman(x, y):
    """Spearman rho over the pairs where both values are finite (nan for fewer than 2 or constant input)."""
    x, y = _finite_pairs(x, y)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return _pearson(average_ranks(x), average_ranks(y))


def average_precision(positive, score):
    """Area under the precision-recall curve as the step sum over distinct score thresholds (highest first),
    sum of (R_k - R_k-1) * P_k, ties in score forming one threshold; nan without a positive."""
    positive, score = np.asarray(positive, dtype=bool), np.asarray(score, dtype=np.float64)
    if not positive.any():
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    score, positive = score[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # last index of each threshold
    tp = np.cumsum(positive)[last]
    precision, recall = tp / (last + 1), tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def regression_metrics(pred, true):
    """Stability / fluorescence metrics: ``{"spearman", "pearson", "mse"}``."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    return {"spearman": spearman(pred, true), "pearson": pearson(pred, true),
            "mse": float(np.mean((pred - true) ** 2))}


def log_softmax(logits):
    """Numerically stable log-softmax over the last axis (float32 input stays float32, as the reference)."""
    x = np.asarray(logits)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def classification_metrics(logits, true, n_classes):
    """Protein-level classification: ``{"acc", "loss_ce"}`` plus ``"mcc"`` when ``n_classes == 2``.

    ``logits`` is (N, n_classes); predictions are the argmax. ``mcc`` is the real MCC (the reference's
    logged value is always 0, bug B8).
    """
    logits, true = np.asarray(logits), np.asarray(true, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[1] != n_classes:
        raise ValueError(f"logits shape {logits.shape} does not match n_classes={n_classes}")
    pred = logits.argmax(axis=1)
    loss = -log_softmax(logits)[np.arange(len(true)), true].astype(np.float64).mean()
    out = {"acc": accuracy(pred, true), "loss_ce": float(loss)}
    if n_classes == 2:
        out["mcc"] = mcc(pred, true)
    return out


# ---------------------------------------------------------------------------------------------------------
# Homology (ordinal levels 0-4)
# ---------------------------------------------------------------------------------------------------------


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def level_probs_from_logits(ordinal_logits):
    """(N, K) ordinal logits -> (N, K+1) level probabilities, normalised per row (golden §2.4).

    Computed in the input's float dtype (float32 logits give float32 probabilities, as the reference).
    """
    x = np.asarray(ordinal_logits)
    s = _sigmoid(x)
    one = np.ones_like(s[:, :1])
    p = np.concatenate([one, s], axis=1) * np.concatenate([1 - s, one], axis=1)
    return p / p.sum(axis=1, keepdims=True)


def expected_level(ordinal_logits):
    """Expected similarity level sum_k k*P_k of (N, K) ordinal logits."""
    p = level_probs_from_logits(ordinal_logits)
    return (p * np.arange(p.shape[1], dtype=p.dtype)).sum(axis=1)


def _fit_binary_cutoff(x, y, previous):
    """Greedy binary cut-off: the first i maximising the accuracy of "i smallest negative, rest positive"."""
    order = np.argsort(x)
    x, y = x[order], y[order].astype(np.int64)
    neg_below = np.concatenate([[0], np.cumsum(1 - y)])
    pos_above = y.sum() - np.concatenate([[0], np.cumsum(y)])
    i = int(np.argmax(neg_below + pos_above))
    return previous if i == 0 else float(x[i - 1])


def fit_level_cutoffs(scores, levels, n_levels=5):
    """Fit ``n_levels`` cut-offs t (t[0] = -inf) greedily, one binary fit per level (golden §5.3).

    For k = 0..n_levels-2 the items with score > t[k] are split by (level > k). The reference fits
    them on the evaluated set itself (bug B6); pass dev scores here to fit them out of sample.
    """
    scores, levels = np.asarray(scores, dtype=np.float64), np.asarray(levels)
    cutoffs = np.full(n_levels, -np.inf)
    for k in range(n_levels - 1):
        keep = scores > cutoffs[k]
        cutoffs[k + 1] = _fit_binary_cutoff(scores[keep], levels[keep] > k, cutoffs[k])
    return cutoffs


def predict_levels(scores, cutoffs):
    """Predicted level = number of cut-offs t[1:] strictly below the score."""
    scores = np.asarray(scores, dtype=np.float64)
    return (scores[:, None] > np.asarray(cutoffs, dtype=np.float64)[None, 1:]).sum(axis=1)


def homology_metrics_from_scores(scores, true_levels, cutoffs=None):
    """Homology metrics of any similarity score (expected level, phmmer bit score, ...).

    Returns ``{"acc", "correct", "n", "r", "rho", "aupr_cl", "aupr_fo", "aupr_sf", "aupr_fa", "cutoffs"}``.
    ``acc`` uses ``cutoffs`` when given, else cut-offs fitted on these scores (reference, bug B6).
    Non-finite scores are dropped for r, rho and AUPR but kept for the accuracy, as the reference.
    An AUPR with no positive item is nan.
    """
    scores, true_levels = np.asarray(scores), np.asarray(true_levels, dtype=np.int64)
    if cutoffs is None:
        cutoffs = fit_level_cutoffs(scores, true_levels)
    cutoffs = np.asarray(cutoffs, dtype=np.float64)
    correct = int(np.sum(predict_levels(scores, cutoffs) == true_levels))
    out = {"acc": correct / len(true_levels), "correct": correct, "n": int(len(true_levels)),
           "r": pearson(scores, true_levels), "rho": spearman(scores, true_levels)}
    finite = np.isfinite(scores)
    x, y = scores[finite], true_levels[finite]
    for k, name in enumerate(HOMOLOGY_LEVELS):
        pos = y > k
        out[f"aupr_{name}"] = average_precision(pos, x)
    out["cutoffs"] = cutoffs.tolist()
    return out


def homology_metrics(ordinal_logits, true_levels, cutoffs=None):
    """Homology metrics of (N, 4) ordinal logits: ``homology_metrics_from_scores`` of the expected level,
    plus ``"argmax_acc"``/``"argmax_correct"`` (argmax of the level probabilities) and ``"bce_loss"``
    (mean ordinal BCE). Probabilities follow the input dtype; float32 values agree with the reference's
    torch computation to a few ulps."""
    logits, true_levels = np.asarray(ordinal_logits), np.asarray(true_levels, dtype=np.int64)
    out = homology_metrics_from_scores(expected_level(logits), true_levels, cutoffs)
    argmax_correct = int(np.sum(level_probs_from_logits(logits).argmax(axis=1) == true_levels))
    out["argmax_acc"], out["argmax_correct"] = argmax_correct / len(true_levels), argmax_correct
    x = logits.astype(np.float64)
    target = true_levels[:, None] > np.arange(x.shape[1])[None, :]
    out["bce_loss"] = float(np.mean(np.logaddexp(0, x) - target * x))
    return out


# ---------------------------------------------------------------------------------------------------------
# Secondary structure (Q8 / Q3)
# ---------------------------------------------------------------------------------------------------------


def secstr_metrics(logits_list, labels_list):
    """Q8 and Q3 over all residues of all proteins: ``{"acc8", "acc3", "n", "correct8", "correct3"}``.

    Q3 sums the 8 softmax probabilities into the groups of ``SS8_TO_SS3`` and takes the argmax; both
    accuracies divide by (n + 2.2e-16), as the reference.
    """
    correct8 = correct3 = n = 0
    for logits, labels in zip(logits_list, labels_list, strict=True):
        logits, labels = np.asarray(logits), np.asarray(labels, dtype=np.int64)
        p = np.exp(log_softmax(logits))
        p3 = np.stack([p[:, SS8_TO_SS3 == g].sum(axis=1) for g in range(3)], axis=1)
        correct8 += int(np.sum(logits.argmax(axis=1) == labels))
        correct3 += int(np.sum(p3.argmax(axis=1) == SS8_TO_SS3[labels]))
        n += len(labels)
    return {"acc8": correct8 / (n + 2.2e-16), "acc3": correct3 / (n + 2.2e-16), "n": n,
            "correct8": correct8, "correct3": correct3}


def residue_metrics(logits_list, labels_list):
    """Per-residue accuracy over all residues of all proteins: ``{"acc", "n", "correct"}``."""
    correct = n = 0
    for logits, labels in zip(logits_list, labels_list, strict=True):
        correct += int(np.sum(np.asarray(logits).argmax(axis=1) == np.asarray(labels, dtype=np.int64)))
        n += len(labels)
    return {"acc": correct / n if n else float("nan"), "n": n, "correct": correct}


# ---------------------------------------------------------------------------------------------------------
# Transmembrane (grammar, Viterbi, regions)
# ---------------------------------------------------------------------------------------------------------


class TMGrammar(NamedTuple):
    """Log-space TOPCONS-style grammar: start (S,), end (S,), trans (S, S), emit (S, 3) 0/1, mapping (S,)."""

    start: np.ndarray
    end: np.ndarray
    trans: np.ndarray
    emit: np.ndarray
    mapping: np.ndarray


def tm_grammar(helix_len=21):
    """The reference 45-state grammar: inner 0, outer 1, signal 2, then two helix chains (golden §5.1).

    Forbidden moves get log(eps) - log(row sum + eps) (about -36), not -inf.
    """
    n = 3 + 2 * helix_len
    io, oi = np.arange(3, 3 + helix_len), np.arange(3 + helix_len, n)  # inside->outside, outside->inside
    w = np.zeros((n, n))
    w[0, 0] = w[0, io[0]] = w[1, 1] = w[1, oi[0]] = w[2, 0] = w[2, 1] = 1
    w[io[:-1], io[1:]] = w[oi[:-1], oi[1:]] = 1
    w[io[-1], 1] = w[oi[-1], 0] = 1
    start, end = np.zeros(n), np.zeros(n)
    start[[0, 1, 2]] = 1
    end[[0, 1]] = 1
    emit = np.zeros((n, 3))
    emit[[0, 0, 1, 1], [0, 1, 0, 1]] = 1
    emit[3:, 2] = 1
    mapping = np.full(n, 2, dtype=np.int64)
    mapping[:3] = [0, 1, 3]

    def norm(x, total):
        return np.log(x + EPS) - np.log(total + EPS)

    return TMGrammar(norm(start, start.sum()), norm(end, end.sum()), norm(w, w.sum(axis=1, keepdims=True)),
                     emit, mapping)


_TM_GRAMMAR = tm_grammar()


def viterbi_decode(log_probs, grammar=_TM_GRAMMAR):
    """Max-product Viterbi of (L, 3) per-residue log-probs -> (label path (L,) int64, score float).

    Every argmax takes the lowest state index among ties, as the reference (inner/outer paths tie often).
    """
    log_probs = np.asarray(log_probs)
    with np.errstate(divide="ignore"):
        z = np.log(np.exp(log_probs) @ grammar.emit.T)  # signal state: log 0 = -inf
    n_steps, n_states = z.shape
    cols = np.arange(n_states)
    back = np.zeros((n_steps, n_states), dtype=np.int64)
    delta = z[0] + grammar.start
    for t in range(1, n_steps):
        cand = delta[:, None] + grammar.trans
        back[t] = cand.argmax(axis=0)
        delta = cand[back[t], cols] + z[t]
    delta = delta + grammar.end
    state = int(delta.argmax())
    score = float(delta[state])
    path = np.zeros(n_steps, dtype=np.int64)
    for t in range(n_steps - 1, -1, -1):
        path[t] = state
        state = back[t, state]
    return grammar.mapping[path], score


def _tm_ids(labels):
    if isinstance(labels, str):
        return np.array([TM_LABELS.index(c) for c in labels], dtype=np.int64)
    return np.asarray(labels)


def tm_regions(labels, reference=True):
    """Membrane regions [start, end) of a label path (ids 0/1/2 or an "IOM" string).

    With ``reference=True`` the scan tests ``start > 0`` (bug B12): a helix beginning at residue 0 is
    never closed, so such a protein yields no regions at all. ``reference=False`` tests ``start >= 0``.
    """
    regions, start = [], -1
    for t, label in enumerate(_tm_ids(labels)):
        if label == 2:
            if start < 0:
                start = t
        elif start > 0 or (not reference and start == 0):
            regions.append((start, t))
            start = -1
    if start > 0 or (not reference and start == 0):
        regions.append((start, len(labels)))
    return regions


def tm_protein_correct(pred_regions, true_regions, reference=True):
    """Whether a protein's predicted helices match the true ones: same count, and each pair (in order)
    intersects with overlap >= 5 residues.

    The reference rule fails a helix shorter than 5 even when predicted exactly; ``reference=False`` asks
    for overlap >= min(5, length of the shorter region of the pair) instead (and still > 0).
    """
    if len(pred_regions) != len(true_regions):
        return False
    for (p0, p1), (t0, t1) in zip(pred_regions, true_regions, strict=True):
        overlap = min(p1, t1) - max(p0, t0)
        need = 5 if reference else min(5, p1 - p0, t1 - t0)
        if overlap <= 0 or overlap < need:
            return False
    return True


def transmembrane_metrics(logits_list, labels_list, reference=True):
    """TM metrics over proteins of (L, 3) logits and (L,) labels (golden §5.2).

    Returns ``{"acc", "acc_p", "avg_loss_ce", "n_residues", "correct_residues", "protein_correct"}``:
    ``acc`` is the micro-averaged argmax accuracy of the raw logits, ``acc_p`` the mean protein
    correctness of the Viterbi paths (regions and overlap rule per ``reference``), ``avg_loss_ce`` the
    per-residue cross-entropy averaged over all residues, ``protein_correct`` the per-protein verdicts.
    """
    correct = n = 0
    loss = 0.0
    verdicts = []
    for logits, labels in zip(logits_list, labels_list, strict=True):
        labels = _tm_ids(labels)
        logp = log_softmax(logits)
        correct += int(np.sum(np.asarray(logits).argmax(axis=1) == labels))
        n += len(labels)
        loss -= float(logp[np.arange(len(labels)), labels].astype(np.float64).sum())
        path, _ = viterbi_decode(logp)
        verdicts.append(tm_protein_correct(tm_regions(path, reference), tm_regions(labels, reference),
                                           reference))
    return {"acc": correct / n, "acc_p": float(np.mean(verdicts)), "avg_loss_ce": loss / n,
            "n_residues": n, "correct_residues": correct, "protein_correct": verdicts}


# ---------------------------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------------------------


def bootstrap_ci(metric_fn, *arrays, n=1000, seed=0, alpha=0.05):
    """Percentile bootstrap CI (low, high) of ``metric_fn(*arrays)`` over examples.

    The arrays (numpy arrays or lists, one entry per example, e.g. per protein) are resampled jointly
    with replacement ``n`` times from ``np.random.default_rng(seed)``; nan resample values are ignored.
    """
    size = len(arrays[0])
    if any(len(a) != size for a in arrays):
        raise ValueError("bootstrap_ci: arrays differ in length")
    rng = np.random.default_rng(seed)
    values = np.empty(n)
    for b in range(n):
        idx = rng.integers(0, size, size)
        values[b] = metric_fn(*(a[idx] if isinstance(a, np.ndarray) else [a[i] for i in idx] for a in arrays))
    low, high = np.nanpercentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)
