import json

import numpy as np
import pytest

from experiments import threshold_rules


def test_rules_on_scores_with_a_gap_and_one_low_positive():
    # Normals at 0.1-0.3, positives at 0.7-0.9 but one at 0.05: Youden gives up the outlier (one of ten
    # positives) to keep every normal, so it cuts in the gap; equal error gives up one normal as well,
    # cutting below the top normal, where sensitivity and specificity are both 0.9.
    labels = np.array([0] * 10 + [1] * 10)
    probs = np.concatenate([np.linspace(0.1, 0.3, 10), [0.05], np.linspace(0.7, 0.9, 9)])
    assert 0.3 < threshold_rules.RULES["youden"](labels, probs) < 0.7
    eer = threshold_rules.equal_error(labels, probs)
    assert probs[8] < eer < probs[9]
    assert 0.3 < threshold_rules.bagged_youden(labels, probs) < 0.7
    assert threshold_rules.RULES["fixed_0.5"](labels, probs) == 0.5


def test_plan_keeps_youden_unless_a_rule_wins_for_every_checkpoint():
    def run(scores):
        return {"held_out": {n: {"balanced_accuracy": scores.get(n, 0.9)} for n in threshold_rules.RULES}}
    assert threshold_rules.adopted([run({"equal_error": 0.95}), run({"equal_error": 0.85})]) == "youden"
    assert threshold_rules.adopted([run({"equal_error": 0.95, "fixed_0.5": 0.91}),
                                    run({"equal_error": 0.92, "fixed_0.5": 0.91})]) == "equal_error"
    assert threshold_rules.adopted([run({"youden": 0.95}), run({"youden": 0.95})]) == "youden"


@pytest.mark.parametrize("flag", [["--folds", "1"], ["--repeats", "0"]])
def test_a_split_that_cannot_be_made_is_refused_by_the_flags(flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        threshold_rules.parse_args(["--checkpoints", "a.pth", *flag])
    assert exit_.value.code == 2 and flag[0] in capsys.readouterr().err


def test_study_reads_test_only_when_asked(trained_checkpoint, synthetic_root, tmp_path):
    common = ["--checkpoints", str(trained_checkpoint), "--data_root", str(synthetic_root), "--device", "cpu",
              "--repeats", "2"]
    val_only = threshold_rules.main(threshold_rules.parse_args(common + ["--out", str(tmp_path / "val")]))
    assert "test" not in val_only and "test" not in val_only["runs"][0]
    held = val_only["runs"][0]["held_out"]
    assert set(held) == set(threshold_rules.RULES) and len(held["youden"]["per_split_balanced_accuracy"]) == 10
    saved = json.loads((tmp_path / "val" / "threshold_rules.json").read_text())
    assert saved["adopted"] in threshold_rules.RULES
    with_test = threshold_rules.main(threshold_rules.parse_args(common + ["--out", str(tmp_path / "test"),
                                                                          "--read_test", "equal_error"]))
    assert with_test["test"]["rule"] == "equal_error" and with_test["runs"][0]["test"]["threshold"] == pytest.approx(
        with_test["runs"][0]["val_thresholds"]["equal_error"])
    assert "Test, read once with equal_error" in (tmp_path / "test" / "threshold_rules.md").read_text()
