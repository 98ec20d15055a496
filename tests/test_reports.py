"""The numbers quoted in reports/*.md are the ones the commands wrote: regenerate, and this says where."""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REPORTS = REPO / "reports"


def load(name):
    path = REPO / name if "/" in name else REPORTS / name
    if not path.exists():
        pytest.skip(f"{name} not generated in this checkout")
    return json.loads(path.read_text())


def assert_cited(text, values, fmt=".4f"):
    missing = [f"{label}={value:{fmt}}" for label, value in values.items() if f"{value:{fmt}}" not in text]
    assert not missing, f"report does not quote {missing}; update it from the results files"


def test_classification_report_quotes_the_metrics_files():
    text = (REPORTS / "task1_classification_report.md").read_text()
    metrics = load("task1_metrics_test.json")
    values = {}
    for key in ("at_0.5", "at_threshold"):
        for name in ("accuracy", "precision", "recall", "specificity", "f1", "auc", "pr_auc"):
            values[f"{key}.{name}"] = metrics[key][name]
            values[f"{key}.{name}.low"], values[f"{key}.{name}.high"] = metrics[key]["ci95"][name]
    assert_cited(text, values, ".3f")
    assert_cited(text, {"brier": metrics["calibration"]["brier"], "ece": metrics["calibration"]["ece"],
                        "medmnist.auc": metrics["medmnist_evaluator"]["auc"],
                        "medmnist.acc": metrics["medmnist_evaluator"]["accuracy"],
                        "threshold": metrics["at_threshold"]["threshold"]})
    seeds = load("experiments/results/seeds/task1_seeds.json")
    for key in ("at_0.5", "at_threshold"):
        for name in ("auc", "accuracy"):
            assert_cited(text, {f"seeds.{key}.{name}.mean": seeds["summary"][key][name]["mean"],
                                f"seeds.{key}.{name}.std": seeds["summary"][key][name]["std"]})
    faith = load("task1_gradcam_faithfulness_test.json")
    faith_val = load("task1_gradcam_faithfulness_val.json")
    assert_cited(text, {f"test.{k}": v["deletion_auc"] for k, v in faith["maps"].items()}, ".3f")
    assert_cited(text, {f"val.{k}": v["deletion_auc"] for k, v in faith_val["maps"].items()}, ".3f")
    history = json.loads((REPORTS.parent / "models" / "task1_model_history.json").read_text())
    assert f"epoch {history['best_epoch']}" in text


def test_retrieval_report_quotes_the_evaluation_and_examples():
    text = (REPORTS / "task3_retrieval.md").read_text()
    evaluation = load("task3_retrieval_eval.json")
    for group, row in evaluation["metrics"].items():
        assert_cited(text, {f"{group}.{k}": v for k, v in row.items() if k != "n"}, ".3f")
    queries = load("task3_query_results.json")
    for q in queries["queries"]:
        assert_cited(text, {f"{q['query']}.#{h['rank']}": h["distance"] for h in q["neighbours"]}, ".3f")


def test_retrieval_report_quotes_the_scale_benchmark():
    text = (REPORTS / "task3_retrieval.md").read_text()
    bench = load("benchmark_task3.json")
    rows = bench["rows"]
    assert_cited(text, {f"flat.{r['n']}.p50": r["p50_ms"] for r in rows if r["index"] == "flat"}, ".3f")
    met = [r for r in rows if r["index"] in bench["target_met_by"] and r["n"] >= bench["target"]["n"]]
    assert ("1M target is met" in text) == bool(met) and ("1M target is not met" in text) == (not met)
    for r in met:  # each index said to meet the target is quoted with its recall and speed-ups
        assert_cited(text, {f"{r['index']}.recall": r["recall@10"]}, ".3f")
        assert_cited(text, {f"{r['index']}.x_batched": r["speedup_batched"],
                            f"{r['index']}.x_single": r["speedup_single"]}, ".1f")
