"""What the probability a reader sees means, and where the decision falls.

The network gives a log-odds score z = logit(pneumonia) - logit(normal). A checkpoint's calibration maps
it to P(pneumonia) = sigmoid(slope * z + intercept) (Platt scaling, fitted on val by scikit-learn's
logistic regression with each class weighing half, so P reads as the probability at even prior odds,
the prior the class-balanced training loss assumes). The decision threshold is a probability on that
calibrated scale. A batch of films from one place can have its own prevalence re-estimated without
labels (Saerens, Latinne and Decaestecker 2002, `adapt_to_prior`).
"""
import numpy as np
from scipy.special import expit, logit

IDENTITY = {"method": "none", "slope": 1.0, "intercept": 0.0}


def calibrate(z, calibration: dict) -> np.ndarray:
    """P(pneumonia) from log-odds scores under a checkpoint's calibration."""
    return expit(calibration["slope"] * np.asarray(z, dtype=np.float64) + calibration["intercept"])


def fit_platt(z, labels, sample_weight=None) -> dict:
    """Platt scaling with the classes weighted equally (scikit-learn's LogisticRegression, no penalty)."""
    from sklearn.linear_model import LogisticRegression
    z, labels = np.asarray(z, dtype=np.float64).reshape(-1, 1), np.asarray(labels).astype(int)
    model = LogisticRegression(C=np.inf, class_weight="balanced", max_iter=1000)  # C=inf: no penalty
    model.fit(z, labels, sample_weight=sample_weight)
    return {"method": "platt", "slope": float(model.coef_[0, 0]), "intercept": float(model.intercept_[0])}


def shift_prior(probs, old: float, new: float) -> np.ndarray:
    """P(pneumonia) calibrated at pneumonia share `old`, re-weighted to share `new` (Bayes' rule)."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1 - 1e-12)
    return expit(logit(probs) - logit(old) + logit(new))


def adapt_to_prior(probs, prior: float = 0.5, tol: float = 1e-6, max_iter: int = 1000):
    """EM re-estimate of the pneumonia share of an unlabelled batch (Saerens et al. 2002), from P(pneumonia)
    calibrated at `prior`. Returns (the batch's estimated share, P re-weighted to that share)."""
    share = prior
    for _ in range(max_iter):
        adapted = shift_prior(probs, prior, share)
        new = float(np.clip(adapted.mean(), 1e-6, 1 - 1e-6))
        if abs(new - share) < tol:
            share = new
            break
        share = new
    return share, shift_prior(probs, prior, share)


# How a checkpoint's calibration and threshold are chosen on val (experiments/shift_study.py compares them):
# fitted on the clean val films alone, or on them pooled with their MedMNIST-C-corrupted copies (films that
# look like another scanner's); the threshold at Youden's J on the same films, or at even odds (0.5).
RULES = ("youden_clean", "even_odds_clean", "youden_shifted", "even_odds_shifted")


def fit_decision_rule(z, labels, rule: str, shifted_z=None) -> tuple:
    """(calibration dict, threshold on its P scale) from val log-odds scores z (N,) and, for the *_shifted
    rules, the same films' scores under corruptions (..., N)."""
    from .metrics import youden_threshold
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, not {rule!r}")
    labels = np.asarray(labels).astype(int)
    z = np.asarray(z, dtype=np.float64)
    if rule.endswith("_shifted"):
        if shifted_z is None:
            raise ValueError(f"rule {rule} needs the corrupted films' scores")
        shifted_z = np.asarray(shifted_z, dtype=np.float64).reshape(-1, len(labels))
        z = np.concatenate([z, shifted_z.ravel()])
        labels = np.tile(labels, 1 + len(shifted_z))
    calibration = fit_platt(z, labels)
    threshold = 0.5 if rule.startswith("even_odds") else youden_threshold(labels, calibrate(z, calibration))
    return calibration, float(threshold)
