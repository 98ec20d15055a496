"""Evaluate the classifier checkpoint on a split: metrics with bootstrap intervals, figures, failure cases.

    python task1/evaluate.py                                  # test split, shipped checkpoint
    python task1/evaluate.py --split val --out /tmp/val_eval  # val, results elsewhere
    python task1/evaluate.py --indices 0 20 70                # a few test images
    python task1/evaluate.py --images ../shared/samples/normal/IM-0009-0001.jpeg   # your own files

Writes <out>/task1_metrics_<split>.json (accuracy, precision, recall, specificity, F1, ROC AUC,
PR AUC at 0.5 and at the checkpoint's val-chosen threshold, each with a 95% bootstrap interval;
Brier score and ECE; accuracy when the model may abstain on its least certain 5/10/20 %, the
risk-coverage curve; the medmnist.Evaluator cross-check), <out>/task1_predictions_<split>.csv and
the figures in <out>/figures/. The test split is for the final evaluation of a chosen model only.
"""
import time
from pathlib import Path

import numpy as np

from pneumo.archive import optional_archive
from pneumo.atomic import check_writable, write_csv_atomic, write_json_atomic
from pneumo.classifier import Classifier
from pneumo.cli import (
    INFERENCE_SIZE,
    add_shared_flags,
    check_images_or_indices,
    make_parser,
    non_negative_int,
    positive_int,
    ranged,
)
from pneumo.data import CLASS_NAMES, check_indices, load_split
from pneumo.errors import run_script
from pneumo.explain import shipped_words
from pneumo.metrics import CI_METRICS, calibration, decide, medmnist_check, risk_coverage, with_bootstrap
from pneumo.pictures import load_inputs
from pneumo.plots import plot_confusion, plot_panels, plot_reliability, plot_risk_coverage, plot_roc_pr
from pneumo.retrieval import DEFAULT_INDEX
from pneumo.runtime import UserError, print_run_header, resolve_device
from pneumo.screening import BORDERLINE, print_flags, screen_inputs, status

MIN_BATCH = 20  # --adapt_prior: fewer films say little about a share


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_shared_flags(p, "size", "checkpoint", "split", "indices", "images", "record_names", "data_root",
                     "out", "k", "seed", "device", "backend", "uri", "collection", size=INFERENCE_SIZE,
                     indices=dict(help="only these indices of the split"),
                     images=dict(help="image files (PNG/JPEG, any size): predictions only"),
                     k=dict(type=non_negative_int, default=4, help="failure cases shown per kind (most confident FP and FN; default 4; 0 = none)"),
                     seed=dict(help="bootstrap seed (default 0)"))
    p.add_argument("--index", type=Path, default=Path(DEFAULT_INDEX),
                   help=f"Task 3 index (or a run folder) whose val statistics flag out-of-distribution inputs "
                        f"(default {DEFAULT_INDEX}; skipped with a note when missing or stale)")
    p.add_argument("--n_bootstrap", type=ranged(int, 10, 100_000), default=1000, help="bootstrap resamples for the 95%% intervals (default 1000)")
    p.add_argument("--batch_size", type=positive_int, default=256, help="images per forward pass (default 256)")
    p.add_argument("--adapt_prior", action="store_true",
                   help=f"with --images (at least {MIN_BATCH} films from one place): re-estimate their pneumonia share "
                        f"without labels (EM, Saerens et al. 2002) and add P re-weighted to it, with the decision at 0.5 "
                        f"of that P; the films the screen withholds are left out of the estimate")
    args = p.parse_args(argv)
    check_images_or_indices(p, args)
    if args.adapt_prior and not args.images:
        p.error("--adapt_prior needs --images: it re-estimates the pneumonia share of a folder of films")
    return args


def main(args):
    check_writable(args.out)
    run = print_run_header("evaluate", args)
    clf = Classifier.load(args.checkpoint, resolve_device(args.device))
    clf.check_size(args.size)
    if args.images:
        return predict_files(args, clf)

    images, labels = load_split(args.data_root, args.split, clf.image_size)
    indices = np.arange(len(labels)) if args.indices is None else np.asarray(check_indices(args.indices, len(labels), args.split))
    images, labels = images[indices], labels[indices]
    tag = args.split if args.indices is None else f"{args.split}_subset"

    start = time.perf_counter()
    probs = clf.predict_proba(images, args.batch_size, desc="predict")
    seconds = time.perf_counter() - start
    results = {
        **run, "checkpoint": clf.meta["path"], "checkpoint_sha256": clf.sha256, "split": args.split,
        "n": int(len(labels)), "positives": int(labels.sum()), "inference_seconds": round(seconds, 3),
        "calibration": calibration(labels, probs),
        "risk_coverage": risk_coverage(labels, probs, clf.threshold, borderline=BORDERLINE),
    }
    results["at_0.5"], results["at_threshold"] = with_bootstrap(labels, probs, (0.5, clf.threshold),
                                                                args.n_bootstrap, args.seed)
    if args.indices is None:
        results["medmnist_evaluator"] = medmnist_check(args.data_root, args.split, clf.image_size, probs)

    write_csv_atomic(args.out / f"task1_predictions_{tag}.csv",
                     ["index", "label", "probability", "prediction", "prediction_at_0.5"],
                     [[int(i), int(y), f"{p:.6f}", int(d), int(d05)]
                      for i, y, p, d, d05 in zip(indices, labels, probs, clf.decide(probs), decide(probs, 0.5))])
    figures = args.out / "figures"
    results["figures"] = [str(plot_confusion(labels, probs, clf.threshold, figures / f"task1_confusion_matrix_{tag}.png", tag)),
                          str(plot_risk_coverage(labels, probs, clf.threshold, results["risk_coverage"],
                                                 figures / f"task1_risk_coverage_{tag}.png", tag))]
    if len(np.unique(labels)) == 2:
        results["figures"] += [
            str(plot_roc_pr(labels, probs, results, figures / f"task1_roc_pr_{tag}.png", tag)),
            str(plot_reliability(labels, probs, results["calibration"], figures / f"task1_reliability_{tag}.png", tag))]
    else:  # no ROC, PR curve or AUC without both classes; the confusion matrices still say what happened
        results["note"] = (f"the images evaluated are all {CLASS_NAMES[labels[0]]}: AUC, PR AUC and the ROC, PR and "
                           f"reliability figures need both classes and are left out")
        print(f"note: {results['note']}")
    failures = failure_cases(indices, labels, probs, clf.decide(probs), args.k)
    results["failure_cases"] = failures
    if failures["false_positives"] or failures["false_negatives"]:
        results["figures"].append(str(plot_failures(clf, images, labels, probs, failures, tag,
                                                    figures / f"task1_failure_cases_{tag}.png")))
    write_json_atomic(args.out / f"task1_metrics_{tag}.json", results)
    print_summary(results, args.out / f"task1_metrics_{tag}.json")
    return results


def failure_cases(indices, labels, probs, decisions, k):
    """The k most confident mistakes of each kind at the stored threshold."""
    fp = np.flatnonzero((decisions == 1) & (labels == 0))
    fn = np.flatnonzero((decisions == 0) & (labels == 1))
    fp = fp[np.argsort(-probs[fp])][:k]
    fn = fn[np.argsort(probs[fn])][:k]
    return {"false_positives": [{"index": int(indices[i]), "position": int(i), "probability": float(probs[i])} for i in fp],
            "false_negatives": [{"index": int(indices[i]), "position": int(i), "probability": float(probs[i])} for i in fn]}


def predict_files(args, clf):
    images, labels, names, _ = load_inputs(args.images, None, args.data_root, args.split, clf.image_size,
                                           args.record_names)
    probs = clf.predict_proba(images)
    flags = screen_inputs(clf, images, args.images, optional_archive(args, clf))
    rows = [{"image": name, "label": label, "probability": float(q), "prediction": clf.label(q),
             "status": status(q, clf.threshold, f), "flags": f}
            for name, label, q, f in zip(names, labels, probs, flags)]
    if args.adapt_prior:
        adapt_rows(rows)
    print(f"{'P(pneumonia)':>12}  {'prediction':<10}  {'status':<10}  image   (threshold {clf.threshold:.3f}; "
          f"withheld = input flagged, borderline = within {BORDERLINE} of the threshold)")
    for r in rows:
        print(f"{r['probability']:12.4f}  {r['prediction']:<10}  {r['status'].upper() if r['status'] != 'read' else 'read':<10}  {r['image']}")
    print_flags(names, flags)
    extra = ["probability_adapted", "prediction_adapted"] if args.adapt_prior else []
    path = write_csv_atomic(args.out / "task1_predictions_images.csv",
                            ["image", "probability", "prediction", "status", "threshold", "flags", *extra],
                            [[r["image"], repr(r["probability"]), r["prediction"], r["status"], repr(clf.threshold),
                              "; ".join(r["flags"]), *(str(r[k]) for k in extra)]
                             for r in rows])
    print(f"wrote {path}")
    return {"predictions": rows}


def adapt_rows(rows) -> float:
    """--adapt_prior: the batch's pneumonia share by EM over the films not withheld, and each film's P at that share."""
    from pneumo.calibration import adapt_to_prior, shift_prior
    kept = [r for r in rows if r["status"] != "withheld"]
    if len(kept) < MIN_BATCH:
        raise UserError(f"--adapt_prior needs at least {MIN_BATCH} films that are read (not withheld); "
                        f"{len(kept)} of {len(rows)} are: give more films from the same place, or leave --adapt_prior out")
    share, _ = adapt_to_prior([r["probability"] for r in kept], prior=0.5)
    adapted = shift_prior([r["probability"] for r in rows], 0.5, share)
    for r, q in zip(rows, adapted):
        r["probability_adapted"] = float(q)
        r["prediction_adapted"] = CLASS_NAMES[int(q > 0.5)]
    print(f"--adapt_prior: estimated pneumonia share of these {len(kept)} films {share:.3f} (P is calibrated at 0.5); "
          f"P adapted to it and its decision at 0.5 are in the CSV")
    return share


def print_summary(results, path):
    for key, name in (("at_0.5", "0.5"), ("at_threshold", f"{results['at_threshold']['threshold']:.3f} (val)")):
        m = results[key]
        print(f"{results['split']} n={results['n']} threshold {name}: " + "  ".join(
            f"{k} {m[k]:.4f} [{m['ci95'][k][0]:.3f}, {m['ci95'][k][1]:.3f}]" for k in CI_METRICS))
    c = results["calibration"]
    print(f"calibration: brier {c['brier']:.4f}  ece {c['ece']:.4f}")
    print("abstaining on the least certain: " + "  ".join(
        f"{p['operating_point']} acc {p['accuracy']:.4f}" for p in results["risk_coverage"]["points"]))
    if "medmnist_evaluator" in results:
        e = results["medmnist_evaluator"]
        print(f"medmnist.Evaluator: auc {e['auc']:.4f}  acc {e['accuracy']:.4f}")
    print(f"wrote {path}")


def plot_failures(clf, images, labels, probs, failures, split, path):
    """The shipped map of the decided class on each failure: FPs on the first row, FNs on the second."""
    cases = [("FP", c) for c in failures["false_positives"]] + [("FN", c) for c in failures["false_negatives"]]
    positions = [c["position"] for _, c in cases]
    maps, targets = clf.gradcam(images[positions], target_classes=clf.decide(probs[positions]))
    panels = [{"image": images[pos], "cam": cam, "color": "darkred",
               "title": f"{kind} #{c['index']}  label {CLASS_NAMES[labels[pos]]}\n"
                        f"P(pneumonia) {probs[pos]:.3f}  map for {CLASS_NAMES[t]}"}
              for (kind, c), pos, cam, t in zip(cases, positions, maps, targets)]
    cols = max(len(failures["false_positives"]), len(failures["false_negatives"]))
    n_fp = len(failures["false_positives"])
    rows = [row + [None] * (cols - len(row)) for row in (panels[:n_fp], panels[n_fp:]) if row]
    return plot_panels([p for row in rows for p in row], path, cols=cols,
                       title=f"most confident failures, {split} split (threshold {clf.threshold:.3f}); "
                             f"{shipped_words()} of the decided class")


if __name__ == "__main__":
    run_script("evaluate", main, parse_args)
