"""Which rule should choose the decision threshold on val? Each candidate is judged on held-out val folds.

    python experiments/threshold_rules.py --checkpoints models/seeds/e15_seed{0,1,2}.pth
    python experiments/threshold_rules.py --checkpoints ... --read_test bagged_youden   # once, for the adopted rule

Val is split into stratified folds (5 folds, 20 repetitions): each rule chooses a threshold on four
folds and is scored on the fifth, so a rule that chases a few val films shows it there. Balanced
accuracy is the criterion because test's class mix (62.5 % pneumonia) differs from val's (74 %).
Test is read only with --read_test, for one rule, with that rule's threshold chosen on the whole of val.
Writes <out>/threshold_rules.json and .md.
"""
import numpy as np
import sklearn.metrics as skm
from sklearn.model_selection import RepeatedStratifiedKFold

from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.classifier import Classifier
from pneumo.cli import add_shared_flags, make_parser, positive_int, ranged
from pneumo.errors import run_script
from pneumo.metrics import binary_metrics, mean_sd, youden_threshold
from pneumo.runtime import DEFAULT_RUN, print_run_header, resolve_device


def bagged_youden(labels, probs, n_resamples=200, seed=0):
    """The median of Youden thresholds over stratified bootstrap resamples: J's argmax on one split
    jumps with a handful of films; its median over resamples does not."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    picks = [np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]) for _ in range(n_resamples)]
    return float(np.median([youden_threshold(labels[i], probs[i]) for i in picks]))


def equal_error(labels, probs):
    """The threshold where sensitivity equals specificity (nearest ROC point), halfway between scores."""
    fpr, tpr, thresholds = skm.roc_curve(labels, probs, drop_intermediate=False)
    best = int(np.argmin(np.abs(fpr - (1 - tpr))))
    lower = thresholds[best + 1] if best + 1 < len(thresholds) else 0.0
    return float(min(thresholds[best], 1.0) + lower) / 2


RULES = {"youden": youden_threshold, "bagged_youden": bagged_youden, "equal_error": equal_error,
         "fixed_0.5": lambda labels, probs: 0.5}
HELD_OUT = ("balanced_accuracy", "accuracy", "recall", "specificity")


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--checkpoints", nargs="+", required=True, help="one checkpoint per seed")
    p.add_argument("--folds", type=ranged(int, 2, 50), default=5, help="val folds, 2 to 50 (default 5)")
    p.add_argument("--repeats", type=positive_int, default=20, help="repetitions of the fold split (default 20)")
    p.add_argument("--read_test", choices=sorted(RULES), help="score test once with this rule's val threshold")
    add_shared_flags(p, "data_root", "out", "device",
                     out=dict(default=DEFAULT_RUN / "threshold_rules",
                              help=f"folder for threshold_rules.json/.md (default {DEFAULT_RUN / 'threshold_rules'}; "
                                   f"the published study is experiments/results/threshold_rules)"))
    return p.parse_args(argv)


def held_out(labels, probs, folds, repeats):
    """Per rule, the held-out metrics of each of folds x repeats splits (threshold chosen on the rest)."""
    scores = {name: {m: [] for m in HELD_OUT + ("threshold",)} for name in RULES}
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=0)
    for choose, score in splitter.split(probs, labels):
        for name, rule in RULES.items():
            t = rule(labels[choose], probs[choose])
            m = binary_metrics(labels[score], probs[score], t)
            m["balanced_accuracy"] = (m["recall"] + m["specificity"]) / 2
            for key in HELD_OUT:
                scores[name][key].append(m[key])
            scores[name]["threshold"].append(t)
    return {name: {k: float(np.mean(v)) for k, v in s.items()} | {"per_split_balanced_accuracy": s["balanced_accuracy"]}
            for name, s in scores.items()}


def main(args):
    check_writable(args.out)
    run = print_run_header("threshold_rules", args)
    device = resolve_device(args.device)
    runs = []
    for path in args.checkpoints:
        clf = Classifier.load(path, device)
        labels, probs = clf.predict_split(args.data_root, "val")
        entry = {"checkpoint": str(path), "sha256": clf.sha256, "seed": clf.meta["train_args"].get("seed"),
                 "val_thresholds": {name: rule(labels, probs) for name, rule in RULES.items()},
                 "held_out": held_out(labels, probs, args.folds, args.repeats)}
        if args.read_test:
            test_labels, test_probs = clf.predict_split(args.data_root, "test")
            entry["test"] = binary_metrics(test_labels, test_probs, entry["val_thresholds"][args.read_test])
        runs.append(entry)
        print(f"seed {entry['seed']}: " + "  ".join(f"{n} {entry['held_out'][n]['balanced_accuracy']:.4f}" for n in RULES))
    summary = {name: {m: mean_sd([r["held_out"][name][m] for r in runs]) for m in HELD_OUT + ("threshold",)}
               for name in RULES}
    result = {**run, "rules": list(RULES), "runs": runs, "summary": summary, "adopted": adopted(runs)}
    if args.read_test:
        result["test"] = {"rule": args.read_test,
                          "summary": {m: mean_sd([r["test"][m] for r in runs])
                                      for m in ("auc", "accuracy", "recall", "specificity")}}
    write_json_atomic(args.out / "threshold_rules.json", result)
    write_text_atomic(args.out / "threshold_rules.md", markdown(result))
    print(markdown(result))
    return result


def adopted(runs):
    """The plan: Youden stays unless a rule beats its held-out balanced accuracy for every seed; of
    those that do, the one with the highest mean."""
    better = [n for n in RULES if n != "youden" and all(
        r["held_out"][n]["balanced_accuracy"] > r["held_out"]["youden"]["balanced_accuracy"] for r in runs)]
    if not better:
        return "youden"
    return max(better, key=lambda n: np.mean([r["held_out"][n]["balanced_accuracy"] for r in runs]))


def markdown(result):
    a = result["args"]
    lines = ["# Task 1: threshold rules judged on held-out val folds", "",
             "Written by `python experiments/threshold_rules.py --checkpoints " + " ".join(a["checkpoints"]) +
             (f" --read_test {a['read_test']}" if a.get("read_test") else "") + "`.",
             f"Each rule chooses a threshold on {a['folds'] - 1} of {a['folds']} stratified val folds and is scored on "
             f"the fifth ({a['folds'] * a['repeats']} splits per checkpoint); mean over the splits, then mean ± sd "
             "over the checkpoints.", "",
             "| rule | held-out balanced accuracy | accuracy | sensitivity | specificity | threshold chosen |",
             "|---|---|---|---|---|---|"]
    for name in result["rules"]:
        s = result["summary"][name]
        lines.append(f"| {name} | " + " | ".join(f"{s[m]['mean']:.4f} ± {s[m]['std']:.4f}"
                                                  for m in HELD_OUT + ("threshold",)) + " |")
    lines += ["", "Per checkpoint, held-out balanced accuracy: " + "; ".join(
        f"seed {r['seed']}: " + ", ".join(f"{n} {r['held_out'][n]['balanced_accuracy']:.4f}" for n in result["rules"])
        for r in result["runs"]), "",
        f"Adopted by the plan (Youden unless a rule beats it for every checkpoint): **{result['adopted']}**."]
    if "test" in result:
        t = result["test"]
        lines += ["", f"Test, read once with {t['rule']}'s val thresholds (" + ", ".join(
            f"{r['val_thresholds'][t['rule']]:.3f}" for r in result["runs"]) + "): " + ", ".join(
            f"{m} {s['mean']:.4f} ± {s['std']:.4f}" for m, s in t["summary"].items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_script("threshold_rules", main, parse_args)
