import numpy as np
import pytest

from experiments import risk_ranking
from pneumo.metrics import MARGINS, certainty_order, risk_coverage


def test_log_odds_margin_treats_both_sides_of_a_low_threshold_alike():
    margin = MARGINS["log_odds"][1]
    assert margin(np.array([0.01, 0.5]), 0.1 / 1.0) == pytest.approx([np.log(11), np.log(9)], rel=1e-6)
    probs = np.array([0.001, 0.9, 0.05])  # at t = 0.1: |P - t| ranks 0.9 first; log odds ranks 0.001 first
    assert list(certainty_order(probs, 0.1, "probability")) == [1, 0, 2]
    assert list(certainty_order(probs, 0.1, "log_odds")) == [0, 1, 2]
    rc = risk_coverage([0, 1, 1], probs, 0.1, coverages=(1.0,), ranking="log_odds")
    assert rc["ranking"] == "log_odds" and rc["ranked_by"].startswith("|logit")


def test_plan_adopts_log_odds_only_when_lower_for_every_checkpoint():
    def run(p, lo):
        return {"val_aurc": {"probability": p, "log_odds": lo}}
    assert risk_ranking.adopted([run(0.003, 0.001), run(0.002, 0.0015)]) == "log_odds"
    assert risk_ranking.adopted([run(0.003, 0.001), run(0.002, 0.0025)]) == "probability"


def test_study_scores_val_only(trained_checkpoint, synthetic_root, tmp_path):
    result = risk_ranking.main(risk_ranking.parse_args(["--checkpoints", str(trained_checkpoint), "--data_root",
                                                        str(synthetic_root), "--device", "cpu", "--out", str(tmp_path)]))
    assert set(result["runs"][0]["val_aurc"]) == set(MARGINS) and result["adopted"] in MARGINS
    assert "Adopted by the plan" in (tmp_path / "risk_ranking.md").read_text()
