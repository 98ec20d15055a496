"""The probability a reader sees: Platt scaling fitted on val, the decision rules, the prior re-estimate."""
import numpy as np
import pytest
from scipy.special import expit

from pneumo.calibration import IDENTITY, RULES, adapt_to_prior, calibrate, fit_decision_rule, fit_platt
from pneumo.metrics import calibration as calibration_metrics


def scores(n=4000, share=0.5, scale=2.0, shift=-1.0, seed=0):
    """Labels and a model's log-odds scores z = scale * x + shift, where x is N(+1, 1) on pneumonia and
    N(-1, 1) on normal films, so the true log odds at even prior odds are 2x: the right Platt map is slope
    2 / scale, intercept -2 * shift / scale, whatever the batch's pneumonia share."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < share).astype(int)
    x = rng.normal(np.where(labels == 1, 1.0, -1.0), 1.0)
    return labels, scale * x + shift


def test_platt_recovers_the_even_odds_map_whatever_the_class_mix():
    for share in (0.5, 0.74):
        labels, z = scores(share=share)
        cal = fit_platt(z, labels)
        assert cal["slope"] == pytest.approx(1.0, abs=0.08) and cal["intercept"] == pytest.approx(1.0, abs=0.1), share


def test_calibrated_probabilities_have_a_small_expected_calibration_error():
    labels, z = scores()
    raw = calibration_metrics(labels, expit(z))["ece"]
    fitted = calibration_metrics(labels, calibrate(z, fit_platt(z, labels)))["ece"]
    assert fitted < 0.03 < raw


def test_identity_calibration_is_the_network_probability():
    z = np.array([-3.0, 0.0, 2.0])
    np.testing.assert_allclose(calibrate(z, IDENTITY), expit(z))


def test_even_odds_rules_put_the_threshold_at_one_half_and_youden_on_val():
    labels, z = scores()
    for rule in RULES:
        shifted = np.stack([z + 1.0, z - 1.0])
        cal, t = fit_decision_rule(z, labels, rule, shifted)
        if rule.startswith("even_odds"):
            assert t == 0.5
        else:
            assert 0.2 < t < 0.8 and t != 0.5


def test_shifted_rules_fit_on_the_corrupted_copies_too():
    """A corruption that pushes every score up moves the shifted fit, not the clean one."""
    labels, z = scores()
    clean, _ = fit_decision_rule(z, labels, "even_odds_clean")
    shifted, _ = fit_decision_rule(z, labels, "even_odds_shifted", np.stack([z + 4.0] * 3))
    assert shifted["intercept"] < clean["intercept"] - 1.0
    with pytest.raises(ValueError, match="corrupted"):
        fit_decision_rule(z, labels, "youden_shifted")
    with pytest.raises(ValueError, match="rule"):
        fit_decision_rule(z, labels, "median")


def test_em_prior_estimate_finds_the_batch_prevalence():
    """Probabilities calibrated at even odds, on a batch that is 80 % pneumonia: EM finds about 0.8, and the
    re-weighted probabilities are calibrated for the batch (smaller ECE than before)."""
    labels, z = scores(n=6000, share=0.8, scale=2.0, shift=0.0)
    probs = expit(z)
    share, adapted = adapt_to_prior(probs, prior=0.5)
    assert share == pytest.approx(labels.mean(), abs=0.03)
    assert calibration_metrics(labels, adapted)["ece"] < calibration_metrics(labels, probs)["ece"]
    same, _ = adapt_to_prior(expit(scores(n=6000, share=0.5, scale=2.0, shift=0.0)[1]), prior=0.5)
    assert same == pytest.approx(0.5, abs=0.03)
