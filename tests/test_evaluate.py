import csv
import json

import numpy as np
import pytest

from conftest import run_script
from pneumo.data import load_split
from task1 import evaluate


@pytest.fixture(scope="module")
def evaluation(trained_checkpoint, synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    evaluate.main(evaluate.parse_args(["--checkpoint", str(trained_checkpoint), "--data_root", str(synthetic_root),
                                       "--out", str(out), "--n_bootstrap", "200", "--k", "2", "--device", "cpu"]))
    return out


def test_auc_and_accuracy_agree_with_medmnist_evaluator(evaluation):
    metrics = json.loads((evaluation / "task1_metrics_test.json").read_text())
    assert metrics["at_0.5"]["auc"] == pytest.approx(metrics["medmnist_evaluator"]["auc"], abs=1e-12)
    assert metrics["at_0.5"]["accuracy"] == pytest.approx(metrics["medmnist_evaluator"]["accuracy"], abs=1e-12)


def test_predictions_file_recomputes_every_count(evaluation, synthetic_root):
    metrics = json.loads((evaluation / "task1_metrics_test.json").read_text())
    rows = list(csv.DictReader(open(evaluation / "task1_predictions_test.csv")))
    _, labels = load_split(synthetic_root, "test")
    assert [int(r["label"]) for r in rows] == labels.tolist()
    for key, column in (("at_threshold", "prediction"), ("at_0.5", "prediction_at_0.5")):
        preds = np.array([int(r[column]) for r in rows])
        probs = np.array([float(r["probability"]) for r in rows])
        assert np.array_equal(preds, (probs > metrics[key]["threshold"]).astype(int))
        assert int(((preds == 1) & (labels == 1)).sum()) == metrics[key]["tp"]
        assert int(((preds == 1) & (labels == 0)).sum()) == metrics[key]["fp"]


def test_intervals_bracket_the_estimates_and_figures_exist(evaluation):
    metrics = json.loads((evaluation / "task1_metrics_test.json").read_text())
    for key in ("at_0.5", "at_threshold"):
        for name, (low, high) in metrics[key]["ci95"].items():
            assert low <= metrics[key][name] + 1e-9 and metrics[key][name] <= high + 1e-9
    assert 0 <= metrics["calibration"]["ece"] <= 1 and 0 <= metrics["calibration"]["brier"] <= 1
    for name in ("confusion_matrix", "roc_pr", "reliability"):
        assert (evaluation / "figures" / f"task1_{name}_test.png").stat().st_size > 10_000


def test_bad_inputs_end_in_one_line(trained_checkpoint, synthetic_root, tmp_path):
    common = ["--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--out", tmp_path]
    result = run_script("task1/evaluate.py", *common, "--indices", "0", "96")
    assert result.returncode == 1 and "out of range" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "scan.jpeg").write_bytes(b"\x00" * 100)
    result = run_script("task1/evaluate.py", *common, "--images", tmp_path / "scan.jpeg")
    assert result.returncode == 1 and "not a readable image" in result.stderr
    missing = run_script("task1/evaluate.py", "--checkpoint", tmp_path / "none.pth", "--out", tmp_path)
    assert missing.returncode == 1 and "not found" in missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.jpeg"]


def test_tta_study_views_and_one_view_rows(trained_checkpoint, synthetic_root, tmp_path):
    from pneumo.checkpoint import load_checkpoint
    from pneumo.inference import predict_proba
    from pneumo.metrics import binary_metrics
    from task1 import tta_study
    images, labels = load_split(synthetic_root, "test")
    assert np.array_equal(tta_study.view(images, *tta_study.VIEWS["plain"]), images)
    shifted = tta_study.view(images, *tta_study.VIEWS["right 2 px"])
    assert np.array_equal(shifted[:, :, 2:], images[:, :, :-2]) and not shifted[:, :, :2].any()
    tta_study.main(tta_study.parse_args(["--checkpoints", str(trained_checkpoint), "--data_root", str(synthetic_root),
                                         "--out", str(tmp_path), "--device", "cpu"]))
    rows = json.loads((tmp_path / "tta.json").read_text())["rows"]
    assert len(rows) == 2 * len(tta_study.SETS)
    model, meta = load_checkpoint(trained_checkpoint)
    plain = binary_metrics(labels, predict_proba(model, images, meta["normalization"]))
    one = next(r for r in rows if r["split"] == "test" and r["views"] == "one view")
    assert one["auc"] == pytest.approx(plain["auc"]) and one["accuracy"] == pytest.approx(plain["accuracy"])
    assert "| test | 9 views |" in (tmp_path / "tta.md").read_text()


def test_seed_study_states_the_recipe_and_refuses_repeated_seeds(trained_checkpoint, synthetic_root, tmp_path):
    from task1 import seed_study
    result = seed_study.main(seed_study.parse_args(["--checkpoints", str(trained_checkpoint), "--data_root",
                                                    str(synthetic_root), "--out", str(tmp_path), "--device", "cpu"]))
    run = result["runs"][0]
    assert run["recipe"]["aug_border"] == "reflect" and run["recipe"]["batch_size"] == 16 and "seed" not in run["recipe"]
    assert result["summary"]["at_0.5"]["auc"]["mean"] == pytest.approx(run["at_0.5"]["auc"])
    text = (tmp_path / "task1_seeds.md").read_text()
    assert text.startswith("# Task 1: test metrics over 1 seed\n") and "`--aug_border reflect`" in text
    repeated = run_script("task1/seed_study.py", "--checkpoints", trained_checkpoint, trained_checkpoint,
                          "--data_root", synthetic_root, "--out", tmp_path / "again")
    assert repeated.returncode == 1 and "share seeds" in repeated.stderr
    assert not (tmp_path / "again" / "task1_seeds.json").exists()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    blocked = run_script("task1/seed_study.py", "--checkpoints", trained_checkpoint, "--data_root", synthetic_root,
                         "--out", a_file)
    assert blocked.returncode == 1 and len(blocked.stderr.strip().splitlines()) == 1
    assert "not a folder" in blocked.stderr and a_file.read_text() == "keep me"
