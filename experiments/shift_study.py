"""Issue 32: which recipe and which decision rule hold on films unlike val? Chosen on val alone, by the plan
in experiments/plans/issue32.md (committed before any test output existed); test is read once, for every
recipe, with --read_test.

    python experiments/shift_study.py --outputs experiments/results/shift                # choose on val
    python experiments/shift_study.py --outputs experiments/results/shift --read_test    # then the lever table

Reads shift_val.npz (and, with --read_test, shift_test.npz and shift_retrieval.json) written by
experiments/shift_outputs.py. Each rule (pneumo.calibration.RULES) is fitted on four of five stratified
folds of val films (with their corrupted copies for the *_shifted rules) and scored on the fifth: balanced
accuracy on the clean held-out films and its mean over the 65 corrupted versions of them, the score being
the average of the two. Writes <out>/shift_study.json and .md.
"""
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.model_selection import RepeatedStratifiedKFold

from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.calibration import RULES, calibrate, fit_decision_rule
from pneumo.cli import make_parser, positive_int
from pneumo.errors import run_script
from pneumo.metrics import binary_metrics, calibration, mean_sd
from pneumo.runtime import UserError, print_run_header

BASELINE = "e15"


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--outputs", type=Path, required=True, help="folder written by experiments/shift_outputs.py")
    p.add_argument("--out", type=Path, help="folder for shift_study.json/.md (default: --outputs)")
    p.add_argument("--repeats", type=positive_int, default=4, help="repetitions of the 5-fold split of val (default 4)")
    p.add_argument("--read_test", action="store_true", help="score every recipe on test with its rule fitted on all of val")
    args = p.parse_args(argv)
    args.out = args.out or args.outputs
    return args


def balanced_accuracy(labels, probs, threshold) -> float:
    """The mean of sensitivity and specificity under pneumo.metrics.decide's rule (P strictly above t)."""
    predicted = np.asarray(probs) > threshold
    return float((predicted[labels == 1].mean() + (~predicted[labels == 0]).mean()) / 2)


def recipes_of(npz) -> dict:
    """{recipe: [checkpoint stems by seed]} from keys like 'e15_medmnistc_seed0/z'."""
    stems = sorted({k.split("/")[0] for k in npz.files if "/" in k})
    recipes = defaultdict(list)
    for stem in stems:
        recipes[stem.rsplit("_seed", 1)[0]].append(stem)
    return dict(recipes)


def held_out_scores(z, shifted, labels, repeats) -> dict:
    """Per rule: mean held-out (clean balanced accuracy, mean corrupted balanced accuracy, score, clean ECE)."""
    folds = RepeatedStratifiedKFold(n_splits=5, n_repeats=repeats, random_state=0)
    flat = shifted.reshape(-1, len(labels))
    out = {rule: defaultdict(list) for rule in RULES}
    for fit, held in folds.split(z, labels):
        for rule in RULES:
            cal, t = fit_decision_rule(z[fit], labels[fit], rule, flat[:, fit])
            clean = balanced_accuracy(labels[held], calibrate(z[held], cal), t)
            corrupted = float(np.mean([balanced_accuracy(labels[held], calibrate(row[held], cal), t) for row in flat]))
            out[rule]["clean"].append(clean)
            out[rule]["corrupted"].append(corrupted)
            out[rule]["score"].append((clean + corrupted) / 2)
            out[rule]["ece"].append(calibration(labels[held], calibrate(z[held], cal))["ece"])
    return {rule: {k: float(np.mean(v)) for k, v in scores.items()} for rule, scores in out.items()}


def choose(val) -> dict:
    """The plan's choice: the (recipe, rule) with the best mean score over seeds; a recipe other than the
    baseline only if it beats the baseline's best by more than the larger seed sd and keeps clean val AUC
    within the larger sd of the baseline's."""
    best = {}
    for recipe, rows in val.items():
        rule = max(RULES, key=lambda r: np.mean([row["rules"][r]["score"] for row in rows]))
        scores = [row["rules"][rule]["score"] for row in rows]
        best[recipe] = {"rule": rule, "score": mean_sd(scores), "clean_auc": mean_sd([row["clean_auc"] for row in rows])}
    base = best[BASELINE]
    chosen = BASELINE
    for recipe, b in sorted(best.items(), key=lambda kv: -kv[1]["score"]["mean"]):
        if recipe == BASELINE:
            break
        margin = max(b["score"]["std"], base["score"]["std"])
        auc_margin = max(b["clean_auc"]["std"], base["clean_auc"]["std"])
        if (b["score"]["mean"] - base["score"]["mean"] > margin
                and b["clean_auc"]["mean"] >= base["clean_auc"]["mean"] - auc_margin):
            chosen = recipe
            break
    return {"recipe": chosen, "rule": best[chosen]["rule"], "per_recipe": best}


def test_scores(z, shifted, labels, cal, t, retrieval) -> dict:
    """Clean and MedMNIST-C metrics of one checkpoint at its rule."""
    from sklearn.metrics import roc_auc_score
    probs = calibrate(z, cal)
    clean = binary_metrics(labels, probs, t)
    def three(p):
        return roc_auc_score(labels, p), binary_metrics(labels, p, t)["accuracy"], balanced_accuracy(labels, p, t)
    per = np.array([[three(calibrate(s, cal)) for s in sev] for sev in shifted])
    return {"auc": clean["auc"], "accuracy": clean["accuracy"], "balanced_accuracy": (clean["recall"] + clean["specificity"]) / 2,
            "ece": calibration(labels, probs)["ece"], "threshold": t,
            "corrupted_auc": float(per[..., 0].mean()), "corrupted_accuracy": float(per[..., 1].mean()),
            "corrupted_balanced_accuracy": float(per[..., 2].mean()),
            "worst_accuracy_severity3": float(per[:, 2, 1].min()),
            "p_at_5": retrieval["p_at_5"], "p_at_5_normal": retrieval["p_at_5_normal"]}


def main(args):
    check_writable(args.out)
    run = print_run_header("shift_study", args)
    val = np.load(args.outputs / "shift_val.npz")
    labels = val["labels"].astype(int)
    recipes = recipes_of(val)
    if BASELINE not in recipes:
        raise UserError(f"{args.outputs}/shift_val.npz has no {BASELINE} recipe to compare with (has {', '.join(recipes)})")
    from sklearn.metrics import roc_auc_score
    per_seed = {recipe: [{"checkpoint": stem, "clean_auc": float(roc_auc_score(labels, val[f"{stem}/z"])),
                          "corrupted_auc": float(np.mean([roc_auc_score(labels, s) for s in val[f"{stem}/corrupted_z"].reshape(-1, len(labels))])),
                          "rules": held_out_scores(val[f"{stem}/z"], val[f"{stem}/corrupted_z"], labels, args.repeats)}
                         for stem in stems] for recipe, stems in recipes.items()}
    result = {"run": run, "val": per_seed, "choice": choose(per_seed)}
    print(f"chosen on val: recipe {result['choice']['recipe']}, rule {result['choice']['rule']}")
    if args.read_test:
        import json
        test = np.load(args.outputs / "shift_test.npz")
        retrieval = json.loads((args.outputs / "shift_retrieval.json").read_text())["checkpoints"]
        rule = result["choice"]["rule"]
        result["test"] = {}
        for recipe, stems in recipes.items():
            rows = []
            for stem in stems:
                cal, t = fit_decision_rule(val[f"{stem}/z"], labels, rule, val[f"{stem}/corrupted_z"])
                rows.append({"checkpoint": stem, "calibration": cal,
                             **test_scores(test[f"{stem}/z"], test[f"{stem}/corrupted_z"], test["labels"].astype(int), cal, t, retrieval[stem])})
            result["test"][recipe] = {"rule": rule, "seeds": rows,
                                      "summary": {k: mean_sd([r[k] for r in rows]) for k in rows[0] if k not in ("checkpoint", "calibration")}}
    write_json_atomic(args.out / "shift_study.json", result)
    write_text_atomic(args.out / "shift_study.md", render(result))
    print(f"wrote {args.out}/shift_study.json, shift_study.md")


def render(result) -> str:
    lines = ["# Issue 32: recipes and decision rules under shift", "",
             "Written by `experiments/shift_study.py` (plan: `experiments/plans/issue32.md`).", "",
             "## Val, held-out folds (mean over seeds)", "",
             "| recipe | clean val AUC | corrupted val AUC | " + " | ".join(f"{r} score" for r in RULES) + " |",
             "|---|---|---|" + "---|" * len(RULES)]
    for recipe, rows in result["val"].items():
        cells = [f"{np.mean([r['clean_auc'] for r in rows]):.4f}", f"{np.mean([r['corrupted_auc'] for r in rows]):.4f}"]
        cells += [f"{np.mean([r['rules'][rule]['score'] for r in rows]):.4f}" for rule in RULES]
        lines.append(f"| {recipe} | " + " | ".join(cells) + " |")
    choice = result["choice"]
    lines += ["", f"Chosen on val: **{choice['recipe']}** with rule **{choice['rule']}**.", ""]
    if "test" in result:
        keys = ("auc", "accuracy", "ece", "threshold", "corrupted_auc", "corrupted_accuracy", "worst_accuracy_severity3", "p_at_5", "p_at_5_normal")
        lines += ["## Test, read once (mean ± sd over three seeds, each at the chosen rule fitted on its val)", "",
                  "| recipe | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for recipe, entry in result["test"].items():
            s = entry["summary"]
            lines.append(f"| {recipe} | " + " | ".join(f"{s[k]['mean']:.4f} ± {s[k]['std']:.4f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_script("shift_study", main, parse_args)
