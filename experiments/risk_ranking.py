"""Which margin should rank the model's decisions from most to least certain? Judged on val by AURC.

    python experiments/risk_ranking.py --checkpoints models/seeds/e15_seed{0,1,2}.pth

For each checkpoint, val at its own (val-chosen) threshold: the area under the risk-coverage curve
(mean error rate over all coverages; lower is better) when decisions are ranked by each margin of
pneumo.metrics.MARGINS. Writes <out>/risk_ranking.json and .md. Test is not read here.
"""
from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.classifier import Classifier
from pneumo.cli import add_shared_flags, make_parser
from pneumo.errors import run_script
from pneumo.metrics import MARGINS, mean_sd, risk_coverage
from pneumo.runtime import DEFAULT_RUN, print_run_header, resolve_device


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--checkpoints", nargs="+", required=True, help="one checkpoint per seed")
    add_shared_flags(p, "data_root", "out", "device",
                     out=dict(default=DEFAULT_RUN / "risk_ranking",
                              help=f"folder for risk_ranking.json/.md (default {DEFAULT_RUN / 'risk_ranking'})"))
    return p.parse_args(argv)


def main(args):
    check_writable(args.out)
    run = print_run_header("risk_ranking", args)
    device = resolve_device(args.device)
    runs = []
    for path in args.checkpoints:
        clf = Classifier.load(path, device)
        labels, probs = clf.predict_split(args.data_root, "val")
        runs.append({"checkpoint": str(path), "seed": clf.meta["train_args"].get("seed"), "threshold": clf.threshold,
                     "val_aurc": {name: risk_coverage(labels, probs, clf.threshold, ranking=name)["aurc"] for name in MARGINS}})
    result = {**run, "runs": runs, "adopted": adopted(runs),
              "summary": {name: mean_sd([r["val_aurc"][name] for r in runs]) for name in MARGINS}}
    write_json_atomic(args.out / "risk_ranking.json", result)
    write_text_atomic(args.out / "risk_ranking.md", markdown(result))
    print(markdown(result))
    return result


def adopted(runs):
    """The plan: the log-odds margin replaces |P - t| only if its val AURC is lower for every checkpoint."""
    return "log_odds" if all(r["val_aurc"]["log_odds"] < r["val_aurc"]["probability"] for r in runs) else "probability"


def markdown(result):
    lines = ["# Task 1: which margin ranks the decisions (val, AURC, lower is better)", "",
             "Written by `python experiments/risk_ranking.py --checkpoints " + " ".join(result["args"]["checkpoints"]) + "`.", "",
             "| seed | threshold | " + " | ".join(MARGINS[n][0] for n in MARGINS) + " |", "|---|---|" + "---|" * len(MARGINS)]
    for r in result["runs"]:
        lines.append(f"| {r['seed']} | {r['threshold']:.3f} | " + " | ".join(f"{r['val_aurc'][n]:.4f}" for n in MARGINS) + " |")
    lines += ["| **mean ± sd** | | " + " | ".join(f"**{result['summary'][n]['mean']:.4f} ± {result['summary'][n]['std']:.4f}**"
                                              for n in MARGINS) + " |", "",
              f"Adopted by the plan (log odds only if lower for every checkpoint): **{result['adopted']}**."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_script("risk_ranking", main, parse_args)
