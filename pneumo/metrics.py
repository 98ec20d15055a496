"""Binary classification metrics by name, and the val-chosen decision threshold."""
import numpy as np
from scipy.stats import rankdata
from sklearn import metrics as skm


def binary_metrics(labels, probs, threshold: float = 0.5) -> dict:
    """Threshold-free (AUC, PR AUC) and thresholded metrics of P(pneumonia) against 0/1 labels.
    Pneumonia is predicted when the probability is strictly above the threshold (medmnist's rule)."""
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, dtype=float)
    preds = (probs > threshold).astype(int)
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
