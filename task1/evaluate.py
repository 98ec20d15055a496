"""Evaluate the classifier checkpoint on a split: metrics with bootstrap intervals, figures, failure cases.

    python task1/evaluate.py                                  # test split, shipped checkpoint
    python task1/evaluate.py --split val --out /tmp/val_eval  # val, results elsewhere
    python task1/evaluate.py --indices 0 20 70                # a few test images
    python task1/evaluate.py --images ../shared/samples/normal/IM-0009-0001.jpeg   # your own files

Writes <out>/task1_metrics_<split>.json (accuracy, precision, recall, specificity, F1, ROC AUC,
PR AUC at 0.5 and at the checkpoint's val-chosen threshold, each with a 95% bootstrap interval;
Brier score and ECE; the medmnist.Evaluator cross-check), <out>/task1_predictions_<split>.csv and
the figures in <out>/figures/. The test split is for the final evaluation of a chosen model only.
"""
import argparse
import csv
import time
from pathlib import Path

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, precision_recall_curve, roc_curve

from pneumo.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from pneumo.data import CLASS_NAMES, SPLITS, check_indices, default_data_root, load_image_file, load_split
from pneumo.explain import DEFAULT_LAYER, gradcam_maps, plot_panels
from pneumo.inference import predict_proba
from pneumo.metrics import binary_metrics, rank_metrics_rows
from pneumo.runtime import (exit_on_user_error, print_run_header, resolve_device,
                            write_json_atomic)

CI_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "auc", "pr_auc")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help=f"model to evaluate (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--split", default="test", choices=SPLITS, help="dataset split (default test)")
    p.add_argument("--indices", type=int, nargs="+", help="only these indices of the split")
    p.add_argument("--images", type=Path, nargs="+", help="image files (PNG/JPEG, any size): predictions only")
    p.add_argument("--data_root", default=default_data_root(), help="folder with pneumoniamnist.npz (default $PNEUMONIA_DATA_ROOT or ./data)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="folder for metrics, predictions and figures/ (default reports)")
    p.add_argument("--k", type=int, default=4, help="failure cases shown per kind (most confident FP and FN; default 4)")
    p.add_argument("--n_bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--batch_size", type=int, default=256, help="images per forward pass (default 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    args = p.parse_args(argv)
    if args.images and args.indices:
        p.error("give --indices (dataset images) or --images (files), not both")
    if args.k < 0 or args.n_bootstrap < 10:
        p.error("--k must be >= 0 and --n_bootstrap >= 10")
    return args


def main(args):
    run = print_run_header("evaluate", args)
    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, device)
    norm, threshold = meta["normalization"], meta["threshold"]
    if args.images:
        return predict_files(args, model, meta, device)

    images, labels = load_split(args.data_root, args.split, meta["image_size"])
    indices = select_indices(args.indices, len(labels), args.split)
    images, labels = images[indices], labels[indices]
    tag = args.split if args.indices is None else f"{args.split}_subset"

    start = time.perf_counter()
    probs = predict_proba(model, images, norm, device, args.batch_size, desc="predict")
    seconds = time.perf_counter() - start
    results = {
        **run, "checkpoint": meta["path"], "checkpoint_sha256": meta["sha256"], "split": args.split,
        "n": int(len(labels)), "positives": int(labels.sum()), "inference_seconds": round(seconds, 3),
        "calibration": calibration(labels, probs),
    }
    results["at_0.5"], results["at_threshold"] = with_bootstrap(labels, probs, (0.5, threshold), args.n_bootstrap, args.seed)
    if args.indices is None:
        results["medmnist_evaluator"] = medmnist_check(args.data_root, args.split, meta["image_size"], probs)

    args.out.mkdir(parents=True, exist_ok=True)
    write_predictions(args.out / f"task1_predictions_{tag}.csv", indices, labels, probs, threshold)
    figures = args.out / "figures"
    results["figures"] = [str(p) for p in (
        plot_confusion(labels, probs, threshold, figures / f"task1_confusion_matrix_{tag}.png"),
        plot_roc_pr(labels, probs, results, figures / f"task1_roc_pr_{tag}.png"),
        plot_reliability(labels, probs, results["calibration"], figures / f"task1_reliability_{tag}.png"),
    )]
    failures = failure_cases(indices, labels, probs, threshold, args.k)
    results["failure_cases"] = failures
    if failures["false_positives"] or failures["false_negatives"]:
        results["figures"].append(str(plot_failures(model, images, indices, labels, probs, failures, meta, device,
                                                    figures / f"task1_failure_cases_{tag}.png")))
    write_json_atomic(args.out / f"task1_metrics_{tag}.json", results)
    print_summary(results, args.out / f"task1_metrics_{tag}.json")
    return results


def select_indices(requested, n, split):
    if requested is None:
        return np.arange(n)
    return np.asarray(check_indices(requested, n, split))


def with_bootstrap(labels, probs, thresholds, n_boot, seed):
    """Point estimates at each threshold plus 95% percentile intervals from resampling images with
    replacement (the same resamples for every threshold), vectorised over resamples."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(labels), (n_boot, len(labels)))
    y, p = labels[idx], probs[idx]
    y, p = y[y.min(axis=1) != y.max(axis=1)], p[y.min(axis=1) != y.max(axis=1)]  # AUC needs both classes
    ranked = dict(zip(("auc", "pr_auc"), rank_metrics_rows(y, p)))
    results = []
    for threshold in thresholds:
        pred, pos = p > threshold, y == 1
        tp, fp = (pred & pos).sum(1), (pred & ~pos).sum(1)
        fn, tn = (~pred & pos).sum(1), (~pred & ~pos).sum(1)
        samples = {"accuracy": (tp + tn) / y.shape[1], "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
                   "specificity": _ratio(tn, tn + fp), "f1": _ratio(2 * tp, 2 * tp + fp + fn), **ranked}
        point = binary_metrics(labels, probs, threshold)
        point["ci95"] = {k: [float(np.percentile(samples[k], 2.5)), float(np.percentile(samples[k], 97.5))]
                         for k in CI_METRICS}
        results.append(point)
    return results


def _ratio(num, den):
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def calibration(labels, probs, n_bins=10):
    """Brier score and expected calibration error of P(pneumonia) over equal-width bins."""
    bins = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    ece = sum(abs(labels[bins == b].mean() - probs[bins == b].mean()) * (bins == b).mean()
              for b in range(n_bins) if (bins == b).any())
    return {"brier": float(brier_score_loss(labels, probs)), "ece": float(ece), "ece_bins": n_bins}


def medmnist_check(data_root, split, size, probs):
    """AUC and ACC as medmnist.Evaluator computes them from the same probabilities."""
    import medmnist
    from pneumo.data import ensure_data_file
    root = ensure_data_file(data_root, size).parent
    scores = np.stack([1 - probs, probs], axis=1)
    auc, acc = medmnist.Evaluator("pneumoniamnist", split, size=size, root=str(root)).evaluate(scores)
    return {"auc": float(auc), "accuracy": float(acc)}


def write_predictions(path, indices, labels, probs, threshold):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "label", "probability", "prediction", "prediction_at_0.5"])
        for i, y, p in zip(indices, labels, probs):
            writer.writerow([int(i), int(y), f"{p:.6f}", int(p > threshold), int(p > 0.5)])
    tmp.replace(path)


def failure_cases(indices, labels, probs, threshold, k):
    """The k most confident mistakes of each kind at the stored threshold."""
    preds = probs > threshold
    fp = np.flatnonzero(preds & (labels == 0))
    fn = np.flatnonzero(~preds & (labels == 1))
    fp = fp[np.argsort(-probs[fp])][:k]
    fn = fn[np.argsort(probs[fn])][:k]
    return {"false_positives": [{"index": int(indices[i]), "position": int(i), "probability": float(probs[i])} for i in fp],
            "false_negatives": [{"index": int(indices[i]), "position": int(i), "probability": float(probs[i])} for i in fn]}


def predict_files(args, model, meta, device):
    images = np.stack([load_image_file(p, meta["image_size"]) for p in args.images])
    probs = predict_proba(model, images, meta["normalization"], device)
    rows = [{"image": str(p), "probability": float(q), "prediction": CLASS_NAMES[int(q > meta["threshold"])]}
            for p, q in zip(args.images, probs)]
    print(f"{'P(pneumonia)':>12}  {'prediction':<10}  image   (threshold {meta['threshold']:.3f})")
    for r in rows:
        print(f"{r['probability']:12.4f}  {r['prediction']:<10}  {r['image']}")
    return {"predictions": rows}


def print_summary(results, path):
    for key, name in (("at_0.5", "0.5"), ("at_threshold", f"{results['at_threshold']['threshold']:.3f} (val)")):
        m = results[key]
        print(f"{results['split']} n={results['n']} threshold {name}: " + "  ".join(
            f"{k} {m[k]:.4f} [{m['ci95'][k][0]:.3f}, {m['ci95'][k][1]:.3f}]" for k in CI_METRICS))
    c = results["calibration"]
    print(f"calibration: brier {c['brier']:.4f}  ece {c['ece']:.4f}")
    if "medmnist_evaluator" in results:
        e = results["medmnist_evaluator"]
        print(f"medmnist.Evaluator: auc {e['auc']:.4f}  acc {e['accuracy']:.4f}")
    print(f"wrote {path}")


def _figure(ncols=1, width=4.6):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 4.2), squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_confusion(labels, probs, threshold, path):
    from sklearn.metrics import ConfusionMatrixDisplay
    plt, fig, axes = _figure(2)
    for ax, thr, name in ((axes[0], 0.5, "threshold 0.5"), (axes[1], threshold, f"val threshold {threshold:.3f}")):
        ConfusionMatrixDisplay.from_predictions(labels, (probs > thr).astype(int), display_labels=CLASS_NAMES,
                                                cmap="Blues", colorbar=False, ax=ax)
        ax.set_title(name)
    return _save(plt, fig, path)


def plot_roc_pr(labels, probs, results, path):
    plt, fig, axes = _figure(2)
    fpr, tpr, _ = roc_curve(labels, probs)
    m = results["at_0.5"]
    axes[0].plot(fpr, tpr, label=f"AUC {m['auc']:.3f} [{m['ci95']['auc'][0]:.3f}, {m['ci95']['auc'][1]:.3f}]")
    axes[0].plot([0, 1], [0, 1], ls=":", color="grey")
    for key, marker in (("at_0.5", "o"), ("at_threshold", "s")):
        r = results[key]
        axes[0].plot(1 - r["specificity"], r["recall"], marker, label=f"threshold {r['threshold']:.3f}")
    axes[0].set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    precision, recall, _ = precision_recall_curve(labels, probs)
    axes[1].plot(recall, precision, label=f"PR AUC {m['pr_auc']:.3f}")
    axes[1].axhline(labels.mean(), ls=":", color="grey", label=f"prevalence {labels.mean():.3f}")
    axes[1].set(xlabel="recall", ylabel="precision", title="precision-recall")
    for ax in axes:
        ax.legend(fontsize=8, loc="lower right" if ax is axes[0] else "lower left")
    return _save(plt, fig, path)


def plot_reliability(labels, probs, calib, path):
    plt, fig, axes = _figure(1)
    frac, mean_pred = calibration_curve(labels, probs, n_bins=calib["ece_bins"], strategy="uniform")
    axes[0].plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    axes[0].plot(mean_pred, frac, "o-", label=f"model (ECE {calib['ece']:.3f}, Brier {calib['brier']:.3f})")
    axes[0].set(xlabel="mean predicted P(pneumonia)", ylabel="observed pneumonia fraction", title="reliability")
    axes[0].legend(fontsize=8)
    return _save(plt, fig, path)


def plot_failures(model, images, indices, labels, probs, failures, meta, device, path):
    cases = [("FP", c) for c in failures["false_positives"]] + [("FN", c) for c in failures["false_negatives"]]
    positions = [c["position"] for _, c in cases]
    decisions = (probs[positions] > meta["threshold"]).astype(int)
    maps, targets = gradcam_maps(model, images[positions], meta["normalization"], device, target_classes=decisions)
    panels = [{"image": images[pos], "cam": cam, "color": "darkred",
               "title": f"{kind} #{c['index']}  label {CLASS_NAMES[labels[pos]]}\n"
                        f"P(pneumonia) {probs[pos]:.3f}  CAM for {CLASS_NAMES[t]}"}
              for (kind, c), pos, cam, t in zip(cases, positions, maps, targets)]
    cols = max(len(failures["false_positives"]), len(failures["false_negatives"]))
    n_fp = len(failures["false_positives"])
    rows = [row + [None] * (cols - len(row)) for row in (panels[:n_fp], panels[n_fp:]) if row]
    return plot_panels([p for row in rows for p in row], path, cols=cols,
                       title=f"most confident failures (threshold {meta['threshold']:.3f}); Grad-CAM {DEFAULT_LAYER}")


if __name__ == "__main__":
    with exit_on_user_error():
        main(parse_args())
