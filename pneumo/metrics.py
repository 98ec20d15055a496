"""Binary classification metrics by name, and the val-chosen decision threshold."""
from types import SimpleNamespace

import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm

from .data import ensure_data_file


def decide(probs, threshold: float):
    """The one decision rule: pneumonia (1) where P(pneumonia) is strictly above the threshold
    (medmnist's rule), normal (0) elsewhere. Works on any array shape."""
    return (np.asarray(probs, dtype=float) > threshold).astype(int)


def binary_metrics(labels, probs, threshold: float = 0.5) -> dict:
    """Threshold-free (AUC, PR AUC) and thresholded metrics of P(pneumonia) against 0/1 labels.
    Pneumonia is predicted when the probability is strictly above the threshold (medmnist's rule)."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=float)
    preds = decide(probs, threshold)
    tn, fp, fn, tp = skm.confusion_matrix(labels, preds, labels=[0, 1]).ravel()
    both = len(np.unique(labels)) == 2
    return {
        "threshold": float(threshold),
        "accuracy": float((tp + tn) / len(labels)),
        "precision": float(tp / (tp + fp)) if tp + fp else 0.0,
        "recall": float(tp / (tp + fn)) if tp + fn else 0.0,
        "specificity": float(tn / (tn + fp)) if tn + fp else 0.0,
        "f1": float(skm.f1_score(labels, preds, zero_division=0)),
        "auc": float(skm.roc_auc_score(labels, probs)) if both else float("nan"),
        "pr_auc": float(skm.average_precision_score(labels, probs)) if both else float("nan"),
        "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
    }


def youden_threshold(labels, probs) -> float:
    """The threshold that maximises sensitivity + specificity - 1 (Youden's J). It does not
    depend on class prevalence, so a threshold chosen on val (74 % pneumonia) carries over to a
    test split with another mix (62.5 %) better than an accuracy-maximising one would."""
    fpr, tpr, thresholds = skm.roc_curve(labels, probs, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))
    if best == 0:  # predicting no pneumonia at all is best: only for degenerate scores
        return 1.0
    # roc_curve predicts positive at score >= thresholds[best]; halfway to the next lower score
    # gives the same split under the strict ">" rule.
    lower = thresholds[best + 1] if best + 1 < len(thresholds) else 0.0
    return float((thresholds[best] + lower) / 2)


def rank_metrics_rows(labels, probs):
    """ROC AUC and average precision of every row of (R, N) label / probability arrays at once, as
    scikit-learn defines them (ties grouped); for bootstrap resamples, where calling scikit-learn
    per row costs seconds. Every row must hold both classes."""
    pos = labels == 1
    n_pos, n_neg = pos.sum(axis=1), (~pos).sum(axis=1)
    ranks = rankdata(probs, axis=1)  # average ranks: a tie counts one half (Mann-Whitney U)
    auc = ((ranks * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    at_or_above = rankdata(-probs, method="max", axis=1)  # cases scored >= this one
    positives_at_or_above = rankdata(np.where(pos, -probs, np.inf), method="max", axis=1)
    average_precision = (positives_at_or_above / at_or_above * pos).sum(axis=1) / n_pos
    return auc, average_precision


CI_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "auc", "pr_auc")


def with_bootstrap(labels, probs, thresholds, n_resamples=1000, seed=0) -> list:
    """binary_metrics at each threshold plus a 95 % percentile interval per metric (`ci95`), from
    scipy.stats.bootstrap resampling images with replacement: the same resamples for every metric and
    threshold, each resample scored in one vectorised pass."""
    from scipy.stats import bootstrap
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)

    def statistic(y, p, axis=-1):
        y, p = np.moveaxis(y, axis, -1), np.moveaxis(p, axis, -1)
        rows = metrics_rows(y.reshape(-1, y.shape[-1]), p.reshape(-1, p.shape[-1]), thresholds)
        return rows.reshape(len(rows), *y.shape[:-1])

    if len(labels) < 2:  # one image: nothing to resample, no interval
        nan = np.full(len(thresholds) * len(CI_METRICS), np.nan)
        ci = SimpleNamespace(low=nan, high=nan)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample with one class has no AUC (nan)
            ci = bootstrap((labels, probs), statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                           method="percentile", confidence_level=0.95, random_state=np.random.default_rng(seed)
                           ).confidence_interval
    results = []
    for t, threshold in enumerate(thresholds):
        point = binary_metrics(labels, probs, threshold)
        offset = t * len(CI_METRICS)
        point["ci95"] = {name: [float(ci.low[offset + i]), float(ci.high[offset + i])]
                         for i, name in enumerate(CI_METRICS)}
        results.append(point)
    return results


def metrics_rows(labels, probs, thresholds):
    """CI_METRICS of every row of (R, N) label / probability arrays at each threshold, as binary_metrics
    computes them for one row (0 where a ratio has no denominator): a (len(thresholds) * len(CI_METRICS), R)
    array, threshold-major. Every row must hold both classes for its AUCs."""
    auc, pr_auc = rank_metrics_rows(labels, probs)
    rows = []
    for threshold in thresholds:
        pred, pos = decide(probs, threshold).astype(bool), labels == 1
        tp, fp = (pred & pos).sum(1), (pred & ~pos).sum(1)
        fn, tn = (~pred & pos).sum(1), (~pred & ~pos).sum(1)
        rows += [(tp + tn) / labels.shape[1], _ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(tn, tn + fp),
                 _ratio(2 * tp, 2 * tp + fp + fn), auc, pr_auc]
    return np.stack(rows)


def _ratio(num, den):
    return np.divide(num, den, out=np.zeros(num.shape), where=den > 0)


def mean_sd(values) -> dict:
    """{"mean", "std"} of per-seed values: the sample standard deviation, 0 for a single value."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def mean_with_interval(values, n_resamples=1000, seed=0) -> tuple:
    """The mean of `values` and its 95 % percentile bootstrap interval (scipy.stats.bootstrap)."""
    from scipy.stats import bootstrap
    values = np.asarray(values, dtype=float)
    ci = bootstrap((values,), np.mean, n_resamples=n_resamples, method="percentile",
                   random_state=np.random.default_rng(seed)).confidence_interval
    return float(values.mean()), [float(ci.low), float(ci.high)]


COVERAGES = (1.0, 0.95, 0.9, 0.8)


def _log_odds(p):
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


# How far a decision lies from the threshold. "probability": |P - t|, the distance of the product's
# "borderline" status (pneumo.screening). "log_odds": |logit P - logit t|, which treats both sides of a
# threshold far from 0.5 alike (at t = 0.1, P = 0.01 and P = 0.5 are equally far from it).
MARGINS = {"probability": ("|P(pneumonia) - threshold|", lambda p, t: np.abs(np.asarray(p, dtype=float) - t)),
           "log_odds": ("|logit P(pneumonia) - logit threshold|", lambda p, t: np.abs(_log_odds(p) - _log_odds(t)))}
RANKING = "probability"


def certainty_order(probs, threshold: float, ranking=RANKING):
    """Indices from the most to the least certain decision, by the margin named `ranking` (MARGINS)."""
    return np.argsort(-MARGINS[ranking][1](probs, threshold), kind="stable")


def selective_accuracy_curve(labels, probs, threshold: float, ranking=RANKING):
    """(coverage, accuracy) when the model decides only its most certain cases: coverage k/n and the
    accuracy over those k, for k = 1..n (the risk-coverage curve, risk = 1 - accuracy)."""
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    correct = (decide(probs, threshold) == labels)[certainty_order(probs, threshold, ranking)]
    kept = np.arange(1, len(labels) + 1)
    return kept / len(labels), np.cumsum(correct) / kept


def risk_coverage(labels, probs, threshold: float, coverages=COVERAGES, borderline=None, ranking=RANKING) -> dict:
    """Metrics when the model may abstain on its least certain cases: at each coverage (share of the
    split decided), the accuracy with a Wilson 95 % interval (scipy.stats.binomtest), sensitivity and
    specificity over the cases decided, and the margin (MARGINS[ranking]) below which it abstains.
    `borderline` adds the point where it abstains on P within that distance of the threshold. `aurc` is
    the area under the risk-coverage curve (mean risk over all coverages; lower is better)."""
    from scipy.stats import binomtest
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    order, margin = certainty_order(probs, threshold, ranking), MARGINS[ranking][1](probs, threshold)

    def point(kept, name, within):
        head = {"operating_point": name, "coverage": len(kept) / len(labels), "decided": int(len(kept)),
                "abstained": int(len(labels) - len(kept)), "abstains_within": float(within)}
        if not len(kept):  # the band holds every case back: nothing decided, nothing to score
            nan = float("nan")
            return {**head, "accuracy": nan, "accuracy_ci95": [nan, nan], "sensitivity": nan, "specificity": nan,
                    "fp": 0, "fn": 0}
        m = binary_metrics(labels[kept], probs[kept], threshold)
        ci = binomtest(m["tp"] + m["tn"], len(kept)).proportion_ci(method="wilson")
        return {**head, "accuracy": m["accuracy"], "accuracy_ci95": [float(ci.low), float(ci.high)],
                "sensitivity": m["recall"], "specificity": m["specificity"], "fp": m["fp"], "fn": m["fn"]}

    points = []
    for c in coverages:
        k = max(1, round(c * len(labels)))
        points.append(point(order[:k], f"decides {100 * c:g} %", margin[order[k]] if k < len(labels) else 0.0))
    if borderline is not None:
        points.append(point(np.flatnonzero(MARGINS["probability"][1](probs, threshold) >= borderline),
                            f"abstains within {borderline} of the threshold", borderline))
    _, accuracy = selective_accuracy_curve(labels, probs, threshold, ranking)
    return {"threshold": float(threshold), "ranking": ranking, "ranked_by": MARGINS[ranking][0],
            "aurc": float(np.mean(1 - accuracy)), "points": points}


def calibration(labels, probs, n_bins=10) -> dict:
    """Brier score and expected calibration error of P(pneumonia) over equal-width bins."""
    from sklearn.metrics import brier_score_loss
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=float)
    bins = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    ece = sum(abs(labels[bins == b].mean() - probs[bins == b].mean()) * (bins == b).mean()
              for b in range(n_bins) if (bins == b).any())
    return {"brier": float(brier_score_loss(labels, probs)), "ece": float(ece), "ece_bins": n_bins}


def medmnist_check(data_root, split, size, probs) -> dict:
    """AUC and ACC as medmnist.Evaluator computes them from the same probabilities (a cross-check)."""
    import medmnist

    root = ensure_data_file(data_root, size).parent
    scores = np.stack([1 - np.asarray(probs), np.asarray(probs)], axis=1)
    auc, acc = medmnist.Evaluator("pneumoniamnist", split, size=size, root=str(root)).evaluate(scores)
    return {"auc": float(auc), "accuracy": float(acc)}
