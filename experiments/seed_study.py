"""Test metrics of several val-selected checkpoints (one per seed): mean, spread and each run.

    python task1/train.py --seed 1 --out models/seeds/seed1.pth
    python task1/train.py --seed 2 --out models/seeds/seed2.pth
    python experiments/seed_study.py --checkpoints models/task1_model.pth models/seeds/seed1.pth models/seeds/seed2.pth

Each checkpoint was chosen on val by train.py; here each sees the test split once. Writes
<out>/task1_seeds.json and <out>/task1_seeds.md; AUC and ACC are cross-checked with medmnist.Evaluator.
"""

from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.classifier import Classifier
from pneumo.cli import add_shared_flags, make_parser
from pneumo.errors import run_script
from pneumo.metrics import binary_metrics, mean_sd, medmnist_check
from pneumo.runtime import DEFAULT_RUN, UserError, print_run_header, resolve_device
from pneumo.training import recipe_of

SHOWN = ("auc", "accuracy", "precision", "recall", "specificity", "f1")


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--checkpoints", nargs="+", required=True, help="one checkpoint per seed")
    add_shared_flags(p, "split", "data_root", "out", "device",
                     split=dict(choices=["val", "test"], help="split to score (default test)"),
                     out=dict(default=DEFAULT_RUN / "seeds", help=f"folder for task1_seeds.json/.md (default "
                              f"{DEFAULT_RUN / 'seeds'}; the published study is experiments/results/seeds)"))
    return p.parse_args(argv)


def main(args):
    check_writable(args.out)
    run = print_run_header("seed_study", args)
    device = resolve_device(args.device)
    runs = []
    for path in args.checkpoints:
        clf = Classifier.load(path, device)
        labels, probs = clf.predict_split(args.data_root, args.split)
        meta = clf.meta
        runs.append({"checkpoint": str(path), "sha256": clf.sha256, "seed": meta["train_args"].get("seed"),
                     "recipe": recipe_of(meta["train_args"]),
                     "best_epoch": meta["epoch"], "val_auc": meta["val_metrics"]["at_0.5"]["auc"],
                     "at_0.5": binary_metrics(labels, probs, 0.5),
                     "at_threshold": binary_metrics(labels, probs, clf.threshold),
                     "medmnist_evaluator": medmnist_check(args.data_root, args.split, clf.image_size, probs)})
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"checkpoints share seeds {seeds}; give one checkpoint per seed")
    summary = {key: {m: mean_sd([r[key][m] for r in runs]) for m in SHOWN} for key in ("at_0.5", "at_threshold")}
    result = {**run, "split": args.split, "runs": runs, "summary": summary}
    write_json_atomic(args.out / "task1_seeds.json", result)
    write_text_atomic(args.out / "task1_seeds.md", markdown(result))
    print(markdown(result))
    return result


def markdown(result):
    n = len(result["runs"])
    lines = [f"# Task 1: {result['split']} metrics over {n} seed{'s' if n > 1 else ''}", "",
             "Written by `python experiments/seed_study.py --checkpoints " + " ".join(result["args"]["checkpoints"]) + "`.",
             "Each checkpoint is the epoch with the best val AUC of one `train.py` run; the threshold column uses that",
             "run's Youden threshold chosen on val. Training recipe (the checkpoints' `train_args`, seed aside):", ""]
    recipes = []
    for run in result["runs"]:
        if run["recipe"] not in recipes:
            recipes.append(run["recipe"])
    lines += [", ".join(f"`--{k} {v}`" for k, v in sorted(r.items())) for r in recipes]
    if len(recipes) > 1:
        lines.append("(the runs differ in recipe: see `runs[].recipe` in the JSON)")
    lines.append("")
    for key, name in (("at_0.5", "threshold 0.5"), ("at_threshold", "val-chosen threshold")):
        lines += [f"## {name}", "", "| seed | " + " | ".join(SHOWN) + " |", "|---" * (len(SHOWN) + 1) + "|"]
        for r in result["runs"]:
            lines.append(f"| {r['seed']} | " + " | ".join(f"{r[key][m]:.4f}" for m in SHOWN) + " |")
        s = result["summary"][key]
        lines += ["| **mean ± sd** | " + " | ".join(f"**{s[m]['mean']:.4f} ± {s[m]['std']:.4f}**" for m in SHOWN) + " |", ""]
    lines.append("medmnist.Evaluator (AUC, ACC at 0.5): " + ", ".join(
        f"seed {r['seed']}: {r['medmnist_evaluator']['auc']:.4f} / {r['medmnist_evaluator']['accuracy']:.4f}"
        for r in result["runs"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_script("seed_study", main, parse_args)
