"""The Markdown reports are rendered from the results files by scripts/render_reports.py: the published
ones must be exactly what the renderer writes from the published files, and the renderer must take
its numbers from those files."""
import json
import shutil
from pathlib import Path

import pytest

from pneumo.reporting import render_texts
from pneumo.runtime import UserError

REPO = Path(__file__).resolve().parent.parent
REPORTS, MODELS = REPO / "reports", REPO / "models"


def test_published_reports_are_what_the_renderer_writes_from_the_published_files():
    for name, text in render_texts(REPORTS, MODELS, REPORTS).items():
        assert (REPORTS / name).read_text() == text, (
            f"reports/{name} differs from its rendering: run `python scripts/render_reports.py` "
            f"(or `bash scripts/publish_run.sh runs/NAME`) and commit the result")


@pytest.fixture
def results_copy(tmp_path):
    """The published results files, copied where a test may change them."""
    for path in list(REPORTS.glob("*.json")):
        shutil.copy(path, tmp_path)
    for name in ("task1_model_history.json", "task3_index.json"):
        shutil.copy(MODELS / name, tmp_path)
    return tmp_path


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_every_quoted_metric_follows_its_file(results_copy):
    def change(m):
        m["at_0.5"]["accuracy"], m["at_0.5"]["ci95"]["accuracy"] = 0.6134, [0.5871, 0.6372]
        m["at_0.5"]["fp"], m["calibration"]["ece"] = 77, 0.2468
    edit_json(results_copy / "task1_metrics_test.json", change)
    edit_json(results_copy / "task3_retrieval_eval.json", lambda e: e["metrics"]["normal"].update({"precision@1": 0.3125}))
    edit_json(results_copy / "task1_gradcam_faithfulness_test.json",
              lambda f: f["maps"]["layer4"].update(deletion_auc=0.9381))
    texts = render_texts(results_copy)
    report = " ".join(texts["task1_classification_report.md"].split())  # line breaks as spaces
    assert "| accuracy | 0.613 [0.587, 0.637] |" in report
    assert "77 of 234 normal films" in report and "error 0.2468" in report and "stage 4 **0.938**" in report
    assert "| normal | 0.312 |" in texts["task3_retrieval.md"]


def test_a_run_of_another_recipe_is_not_called_a_seed_of_the_shipped_one(results_copy):
    """A run of the main command (5 epochs) renders its own report: its own training time, and the seed study
    named as the shipped recipe's, not as this checkpoint's."""
    shipped = " ".join(render_texts(results_copy)["task1_classification_report.md"].split())
    assert "This checkpoint is seed 0 of the shipped recipe" in shipped and "other two seeds took" in shipped

    def five_epochs(h):
        h["args"]["epochs"] = 5
        h["epochs"] = h["epochs"][:5]
    edit_json(results_copy / "task1_model_history.json", five_epochs)
    report = " ".join(render_texts(results_copy)["task1_classification_report.md"].split())
    assert "This checkpoint was trained for 5 epochs; the seed study below is of the shipped 15-epoch recipe." in report
    assert "This checkpoint is seed" not in report
    assert "other two seeds took" not in report and "`--epochs 15`, bf16 on cuda" in report


def test_verdicts_follow_the_numbers(results_copy):
    edit_json(results_copy / "task1_gradcam_faithfulness_test.json",
              lambda f: f["maps"]["layer4"].update(deletion_auc=0.95, deletion_auc_ci95=[0.94, 0.96]))
    report = " ".join(render_texts(results_copy)["task1_classification_report.md"].split())
    assert "matter no more to the model than random ones" in report

    def unmet(b):
        b["target_met_by"] = []
    edit_json(results_copy / "benchmark_task3.json", unmet)
    assert "**is not met**" in render_texts(results_copy)["task3_retrieval.md"]

    def large_unmet(large):
        large["goal_met_at"] = large["goal_met_at_nprobe"] = []
        for row in large["rows"]:
            row["recall@10"] = 0.5
    edit_json(results_copy / "benchmark_task3_large.json", large_unmet)
    text = render_texts(results_copy)["task3_retrieval.md"]
    assert "**not met**" in text and "recall@10 0.500" in text and "met at " not in text


def test_a_missing_results_file_is_named_with_its_fix(results_copy):
    (results_copy / "task1_metrics_test.json").unlink()
    with pytest.raises(UserError, match="task1_metrics_test.json is missing: run the command"):
        render_texts(results_copy)


def test_robustness_and_shift_numbers_follow_their_files(results_copy):
    """Issue 32's section: the shipped checkpoint's MedMNIST-C numbers come from task1_robustness_test.json."""
    def change(r):
        r["clean"]["accuracy"] = 0.6543
        r["corruptions"]["pixelate"]["severities"][0]["accuracy"] = 0.4321
        r["mean_over_corruptions"]["worst_accuracy_severity3"] = [0.1234, "shot_noise"]
    edit_json(results_copy / "task1_robustness_test.json", change)
    report = " ".join(render_texts(results_copy)["task1_classification_report.md"].split())
    assert "accuracy 0.6543 at the stored threshold" in report
    assert "| pixelate |" in report and "| 0.432 / " in report
    assert "is shot_noise (0.123)" in report
