import numpy as np
import pytest

from pneumo.metrics import binary_metrics, youden_threshold


def test_metrics_by_name_on_a_hand_counted_case():
    labels = [0, 0, 0, 1, 1, 1, 1, 1]
    probs = [0.1, 0.6, 0.2, 0.9, 0.8, 0.4, 0.7, 0.95]
    m = binary_metrics(labels, probs, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (4, 1, 2, 1)
    assert m["accuracy"] == pytest.approx(6 / 8) and m["recall"] == pytest.approx(4 / 5)
    assert m["specificity"] == pytest.approx(2 / 3) and m["precision"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(0.8) and m["auc"] == pytest.approx(14 / 15)


def test_youden_threshold_separates_as_roc_curve_says():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    probs = np.clip(labels * 0.3 + rng.random(400) * 0.7, 0, 1)
    thr = youden_threshold(labels, probs)
    m = binary_metrics(labels, probs, thr)
    best_j = max(binary_metrics(labels, probs, t)["recall"] + binary_metrics(labels, probs, t)["specificity"]
                 for t in np.unique(probs) - 1e-9)
    assert m["recall"] + m["specificity"] == pytest.approx(best_j)


def test_vectorised_rank_metrics_match_scikit_learn_with_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from pneumo.metrics import rank_metrics_rows
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (5, 60))
    probs = np.round(rng.random((5, 60)), 1)  # many ties, as in bootstrap resamples
    auc, ap = rank_metrics_rows(labels, probs)
    for row in range(5):
        assert auc[row] == pytest.approx(roc_auc_score(labels[row], probs[row]), abs=1e-12)
        assert ap[row] == pytest.approx(average_precision_score(labels[row], probs[row]), abs=1e-12)


def test_a_probability_equal_to_the_threshold_is_normal():
    """The one decision rule (medmnist's): pneumonia strictly above the threshold, everywhere it is used."""
    from pneumo.metrics import decide, with_bootstrap
    assert decide([0.3, 0.5, 0.7], 0.5).tolist() == [0, 0, 1]
    m = binary_metrics([0, 1, 1], [0.5, 0.5, 0.9], 0.5)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (1, 0, 1, 1)
    labels, probs = [0] * 5 + [1] * 5, [0.5] * 5 + [0.9] * 5  # every normal film sits on the threshold
    [point] = with_bootstrap(labels, probs, (0.5,), n_resamples=50)
    assert point["accuracy"] == 1.0 and point["ci95"]["accuracy"] == [1.0, 1.0]  # the resamples decide alike


def test_the_vectorised_bootstrap_statistic_equals_binary_metrics_row_by_row():
    """with_bootstrap scores every resample with metrics_rows; each row must be what binary_metrics
    (scikit-learn) gives for the same images, at every threshold."""
    from pneumo.metrics import CI_METRICS, metrics_rows
    rng = np.random.default_rng(0)
    labels = np.tile(np.r_[0, 1, rng.integers(0, 2, 38)], (6, 1))
    probs = np.round(rng.random(labels.shape), 1)  # ties, and values equal to a threshold
    rows = rng.permuted(np.arange(labels.shape[1])[None].repeat(6, 0), axis=1)  # six resample orders
    labels, probs = np.take_along_axis(labels, rows, 1), np.take_along_axis(probs, rows, 1)
    no_positive_call = np.full(labels.shape[1], 0.1)  # every ratio over predicted positives has no denominator
    one_positive_call = no_positive_call.copy()
    one_positive_call[np.flatnonzero(labels[0] == 1)[0]] = 0.95  # denominators of exactly 1
    labels, probs = np.vstack([labels, labels[:2]]), np.vstack([probs, no_positive_call, one_positive_call])
    thresholds = (0.5, 0.3, 0.85)
    got = metrics_rows(labels, probs, thresholds)
    for r in range(len(labels)):
        for t, threshold in enumerate(thresholds):
            expected = binary_metrics(labels[r], probs[r], threshold)
            for i, name in enumerate(CI_METRICS):
                assert got[t * len(CI_METRICS) + i, r] == pytest.approx(expected[name], abs=1e-12), (name, threshold)


def test_degenerate_counts_follow_one_rule():
    """No positive prediction: precision 0; one class: no AUC (nan); both stated, never a crash."""
    m = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3], 0.5)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (3, 0, 0, 0) and m["threshold"] == 0.5
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0 and m["specificity"] == 1.0
    assert np.isnan(m["auc"]) and np.isnan(m["pr_auc"])
    m = binary_metrics([1, 1], [0.1, 0.2], 0.5)
    assert m["specificity"] == 0.0 and m["recall"] == 0.0 and np.isnan(m["auc"])
    m = binary_metrics([0, 1, 1, 0], [0.9, 0.8, 0.1, 0.2], 0.5)  # tp = fp = fn = tn = 1
    assert (m["precision"], m["recall"], m["specificity"], m["f1"]) == (0.5, 0.5, 0.5, 0.5)


def test_youden_threshold_lies_between_the_scores_it_separates():
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.5)
    assert youden_threshold([0, 1, 0, 0], [0.1, 0.9, 0.2, 0.3]) == pytest.approx(0.6)  # the top score alone
    assert youden_threshold([1, 1, 0], [0.1, 0.2, 0.9]) == 1.0  # no threshold beats calling nothing pneumonia


def test_bootstrap_intervals_equal_scipys_plain_bootstrap_of_binary_metrics():
    """The vectorised pass gives the intervals that scipy.stats.bootstrap gives for each metric computed
    one resample at a time by binary_metrics, with the same seed and therefore the same resamples."""
    from scipy.stats import bootstrap

    from pneumo.metrics import CI_METRICS, with_bootstrap
    rng = np.random.default_rng(3)
    labels = np.r_[0, 1, rng.integers(0, 2, 58)]
    probs = np.clip(labels * 0.35 + rng.random(60) * 0.65, 0, 1)
    thresholds = (0.5, 0.42)
    results = with_bootstrap(labels, probs, thresholds, n_resamples=60, seed=7)
    for threshold, result in zip(thresholds, results):
        assert {k: v for k, v in result.items() if k != "ci95"} == binary_metrics(labels, probs, threshold)
        for name in CI_METRICS:
            def one(y, p, name=name, threshold=threshold):
                value = binary_metrics(y, p, threshold)[name] if len(set(y)) == 2 or name not in ("auc", "pr_auc") else np.nan
                return value
            with np.errstate(invalid="ignore"):
                plain = bootstrap((labels, probs), one, paired=True, vectorized=False, n_resamples=60, method="percentile",
                                  confidence_level=0.95, random_state=np.random.default_rng(7)).confidence_interval
            assert result["ci95"][name] == pytest.approx([plain.low, plain.high], abs=1e-12), (name, threshold)


def test_risk_coverage_abstains_on_the_cases_nearest_the_threshold_first():
    from pneumo.metrics import risk_coverage
    # distances from 0.5: the two mistakes (0.55 for a normal film, 0.42 for a pneumonia one) are the closest
    labels = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    probs = [0.01, 0.1, 0.3, 0.55, 0.2, 0.42, 0.97, 0.8, 0.9, 0.99]
    rc = risk_coverage(labels, probs, 0.5, coverages=(1.0, 0.9, 0.8, 0.5), borderline=0.06)
    by = {p["operating_point"]: p for p in rc["points"]}
    assert [by[f"decides {c} %"]["accuracy"] for c in (100, 90, 80, 50)] == [0.8, 8 / 9, 1.0, 1.0]
    assert by["decides 90 %"]["fn"] == 1 and by["decides 90 %"]["fp"] == 0  # 0.55 left out, 0.42 still decided
    assert by["decides 90 %"]["abstains_within"] == pytest.approx(0.05)
    assert by["decides 80 %"]["decided"] == 8 and by["decides 80 %"]["specificity"] == 1.0
    assert by["abstains within 0.06 of the threshold"]["decided"] == 9  # only 0.55 is within 0.06
    for p in rc["points"]:
        assert p["accuracy_ci95"][0] <= p["accuracy"] <= p["accuracy_ci95"][1]
    # mean risk over coverages 1/10 .. 10/10: zero until the 9th case (0.42), then 1/9 and 2/10
    assert rc["aurc"] == pytest.approx((1 / 9 + 2 / 10) / 10)


def test_risk_coverage_of_a_constant_model_does_not_improve_with_abstention():
    from pneumo.metrics import risk_coverage
    rc = risk_coverage([0, 1] * 50, [0.7] * 100, 0.5, coverages=(1.0, 0.8))
    assert [p["accuracy"] for p in rc["points"]] == [0.5, 0.5]
