import json

import numpy as np
import pytest

from experiments import tta_study
from pneumo.classifier import Classifier
from pneumo.data import load_split
from pneumo.metrics import binary_metrics


def test_tta_study_views_and_one_view_rows(trained_checkpoint, synthetic_root, tmp_path):
    images, labels = load_split(synthetic_root, "test")
    assert np.array_equal(tta_study.view(images, *tta_study.VIEWS["plain"]), images)
    shifted = tta_study.view(images, *tta_study.VIEWS["right 2 px"])
    assert np.array_equal(shifted[:, :, 2:], images[:, :, :-2]) and not shifted[:, :, :2].any()
    tta_study.main(tta_study.parse_args(["--checkpoints", str(trained_checkpoint), "--data_root", str(synthetic_root),
                                         "--out", str(tmp_path), "--device", "cpu"]))
    rows = json.loads((tmp_path / "tta.json").read_text())["rows"]
    assert len(rows) == 2 * len(tta_study.SETS)
    plain = binary_metrics(labels, Classifier.load(trained_checkpoint).predict_proba(images))
    one = next(r for r in rows if r["split"] == "test" and r["views"] == "one view")
    assert one["auc"] == pytest.approx(plain["auc"]) and one["accuracy"] == pytest.approx(plain["accuracy"])
    assert "| test | 9 views |" in (tmp_path / "tta.md").read_text()
