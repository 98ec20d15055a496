import csv
import json

import numpy as np
import pytest

from conftest import error_line, files_under, run_cli
from pneumo.classifier import Classifier
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
    for name in ("confusion_matrix", "roc_pr", "reliability", "risk_coverage"):
        assert (evaluation / "figures" / f"task1_{name}_test.png").stat().st_size > 10_000


def test_risk_coverage_recomputes_from_the_predictions_file(evaluation):
    """The abstention table is the one the predictions file gives at the stored threshold (probabilities
    there are rounded to 6 places, so one case at a cut may swap)."""
    from pneumo.metrics import risk_coverage
    from pneumo.screening import BORDERLINE
    metrics = json.loads((evaluation / "task1_metrics_test.json").read_text())
    rows = list(csv.DictReader(open(evaluation / "task1_predictions_test.csv")))
    probs = np.array([float(r["probability"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    rc = metrics["risk_coverage"]
    assert rc["threshold"] == metrics["at_threshold"]["threshold"]
    assert rc["points"][0]["accuracy"] == metrics["at_threshold"]["accuracy"]
    again = risk_coverage(labels, probs, rc["threshold"], borderline=BORDERLINE)
    for p, q in zip(rc["points"], again["points"], strict=True):
        assert p["operating_point"] == q["operating_point"] and abs(p["decided"] - q["decided"]) <= 1
        assert p["accuracy"] == pytest.approx(q["accuracy"], abs=1.01 / p["decided"])


def test_failure_cases_are_the_most_confident_mistakes_at_the_stored_threshold(evaluation, trained_checkpoint):
    metrics = json.loads((evaluation / "task1_metrics_test.json").read_text())
    rows = list(csv.DictReader(open(evaluation / "task1_predictions_test.csv")))
    threshold = Classifier.load(trained_checkpoint).threshold
    wrong_fp = sorted((float(r["probability"]) for r in rows if int(r["label"]) == 0 and float(r["probability"]) > threshold),
                      reverse=True)
    listed = [c["probability"] for c in metrics["failure_cases"]["false_positives"]]
    assert listed == pytest.approx(wrong_fp[:2])
    assert len(metrics["failure_cases"]["false_negatives"]) == min(2, metrics["at_threshold"]["fn"])


def test_bad_inputs_end_in_one_line(trained_checkpoint, synthetic_root, tmp_path):
    common = ["--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--out", tmp_path]
    (tmp_path / "scan.jpeg").write_bytes(b"\x00" * 100)
    before = files_under(tmp_path)
    result = run_cli(evaluate, *common, "--indices", "0", "96")
    assert result.returncode == 1 and "out of range" in error_line(result)
    result = run_cli(evaluate, *common, "--images", tmp_path / "scan.jpeg")
    assert result.returncode == 1 and "not a readable image" in error_line(result)
    missing = run_cli(evaluate, "--checkpoint", tmp_path / "none.pth", "--out", tmp_path)
    assert missing.returncode == 1 and "not found" in error_line(missing)
    both = run_cli(evaluate, *common, "--indices", "0", "--images", tmp_path / "scan.jpeg")
    assert both.returncode == 2 and "not both" in both.stderr
    assert files_under(tmp_path) == before


def test_user_files_get_a_probability_and_the_stored_decision(trained_checkpoint, synthetic_root, tmp_path):
    from PIL import Image
    images, labels = load_split(synthetic_root, "test")
    paths = []
    for i in (0, 1, 2, 3):  # dataset films saved as files, blown up 4x as a scanner would give them
        paths.append(tmp_path / f"film{i}.png")
        Image.fromarray(images[i]).resize((112, 112), Image.Resampling.BICUBIC).save(paths[-1])
    out = tmp_path / "run"
    result = run_cli(evaluate, "--checkpoint", trained_checkpoint, "--images", *paths, "--device", "cpu", "--out", out)
    assert result.returncode == 0, result.stderr
    clf = Classifier.load(trained_checkpoint)
    rows = list(csv.DictReader(open(out / "task1_predictions_images.csv")))  # what the script wrote, unrounded
    assert [r["image"] for r in rows] == [p.name for p in paths]  # outside the working folder: the name alone
    probs = np.array([float(r["probability"]) for r in rows])
    assert all(float(r["threshold"]) == clf.threshold for r in rows)
    assert [r["prediction"] for r in rows] == ["pneumonia" if p > clf.threshold else "normal" for p in probs]
    assert [r["prediction"] for r in rows] == ["pneumonia" if y else "normal" for y in labels[:4]]  # right on these
    from pneumo.pictures import load_image_file
    films = np.stack([load_image_file(p, clf.image_size) for p in paths])
    assert probs == pytest.approx(clf.predict_proba(films), abs=1e-6)
    shown = [line.split() for line in result.stdout.splitlines() if line.strip().endswith(".png")]
    assert [s[1] for s in shown] == [r["prediction"] for r in rows]  # the screen says what the file says


def test_adapt_prior_estimates_a_folder_share_and_reweights_its_probabilities(trained_checkpoint, synthetic_root, tmp_path):
    """--adapt_prior on a folder that is mostly one class: the estimated share leans that way, each adapted P is
    the stored P re-weighted from even odds to that share (Bayes' rule), and its decision is at 0.5 of it."""
    from PIL import Image
    from scipy.special import expit, logit
    images, labels = load_split(synthetic_root, "test")
    pneumonia = np.flatnonzero(labels == 1)[:22]
    normal = np.flatnonzero(labels == 0)[:3]
    paths = []
    for i in np.concatenate([pneumonia, normal]):
        paths.append(tmp_path / f"film{i}.png")
        Image.fromarray(images[i]).resize((112, 112), Image.Resampling.BICUBIC).save(paths[-1])
    out = tmp_path / "run"
    result = run_cli(evaluate, "--checkpoint", trained_checkpoint, "--images", *paths, "--device", "cpu", "--out", out, "--adapt_prior")
    assert result.returncode == 0, result.stderr
    share = float(result.stdout.split("estimated pneumonia share of these")[1].split()[2])
    assert share > 0.6
    rows = list(csv.DictReader(open(out / "task1_predictions_images.csv")))
    probs = np.array([float(r["probability"]) for r in rows])
    adapted = np.array([float(r["probability_adapted"]) for r in rows])
    np.testing.assert_allclose(adapted, expit(logit(np.clip(probs, 1e-12, 1 - 1e-12)) + logit(share)), atol=2e-3)
    assert [r["prediction_adapted"] for r in rows] == ["pneumonia" if q > 0.5 else "normal" for q in adapted]
    few = run_cli(evaluate, "--checkpoint", trained_checkpoint, "--images", *paths[:5], "--device", "cpu", "--out", out, "--adapt_prior")
    assert few.returncode == 1 and "at least 20 films" in error_line(few)
    no_files = run_cli(evaluate, "--checkpoint", trained_checkpoint, "--device", "cpu", "--out", out, "--adapt_prior")
    assert no_files.returncode == 2 and "--adapt_prior needs --images" in no_files.stderr
